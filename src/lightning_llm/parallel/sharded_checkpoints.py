"""Sharded checkpoint folders (FSDP, FSDP2) read without running code, and one clear error per bad folder.

`torch.distributed.checkpoint` (DCP) unpickles a folder's `.metadata` with plain `pickle.load` and each
non-tensor item (an optimizer's `param_groups`, any extra value) with `torch.load(weights_only=False)`: a
crafted folder runs whatever code it likes. `install_safe_sharded_reads()` makes both reads in this process
refuse anything a real checkpoint never holds; `check_sharded_folder()` names what is wrong with a folder
in one sentence before anything reads it; `load_sharded_checkpoint()` reads a whole folder on one CPU.

Plain Python and torch; DCP itself is imported only when a folder is read (it costs about a second).
"""

from __future__ import annotations

import functools
import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from enum import EnumMeta
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

import torch

from lightning_llm.errors import UserError

METADATA_FILE = ".metadata"  # DCP's index: which tensor chunk or item sits where in which shard
LIGHTNING_STATE_FILE = "meta.pt"  # Lightning's torch.save of everything but the weights and optimizer states
_WHAT_A_FOLDER_HOLDS = (
    "a sharded Lightning checkpoint folder holds .metadata, meta.pt and one or more *.distcp shards"
)
# How torch's weights-only loader names a refused global, and the line of its error about this file.
_TORCH_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_TORCH_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", re.DOTALL)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint asks for something no real checkpoint holds (a pickled function, a shard outside its
    folder): refused before it can act. An UnpicklingError, so DCP treats it as the failed read it is."""


def _refusal(source: str, global_name: str) -> str:
    return (
        f"{source} holds a pickled {global_name}, which a checkpoint never contains; "
        "refusing to load it (it could run code)"
    )


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object, for every global a real DCP `.metadata` pickles (found by writing them)."""
    from torch.distributed.checkpoint import filesystem, metadata

    dcp_classes = {
        metadata: (
            "Metadata",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "TensorProperties",
            "MetadataIndex",
            "StorageMeta",
            "_MEM_FORMAT_ENCODING",  # the enum TensorProperties pickles in place of a torch.memory_format
        ),
        filesystem: ("_StorageInfo", "_StoragePrefix"),
    }
    allowed: dict[tuple[str, str], Any] = {
        (module.__name__, name): getattr(module, name)
        for module, names in dcp_classes.items()
        for name in names
        if hasattr(module, name)  # older torch lacks some (StorageMeta came in 2.4)
    }
    allowed[("torch", "Size")] = torch.Size
    # torch pickles a layout as torch.serialization._get_layout("torch.strided"): the same lookup, done by
    # a function of ours (a pickle can set attributes of a function it names; torch's keeps its cache there)
    allowed[("torch.serialization", "_get_layout")] = _torch_layout
    allowed[("collections", "OrderedDict")] = OrderedDict
    # StorageMeta.checkpoint_id is the Path the folder was saved to; the pure classes only hold its text
    # (and load on any OS). Python 3.13 defines the path classes in pathlib._local.
    for module in ("pathlib", "pathlib._local"):
        for name, pure in (("PosixPath", PurePosixPath), ("WindowsPath", PureWindowsPath)):
            allowed[(module, name)] = allowed[(module, f"Pure{name}")] = pure
    return allowed


def _torch_layout(name: str) -> torch.layout:
    return _torch_layouts()[name]


@functools.cache
def _torch_layouts() -> dict[str, torch.layout]:
    return {str(value): value for value in vars(torch).values() if isinstance(value, torch.layout)}


def _allowed_global(module: str, name: str) -> Any | None:
    if module == "torch":  # torch.float32, torch.strided, torch.contiguous_format, ...
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype | torch.layout | torch.memory_format):
            return value
    return _allowed_globals().get((module, name))


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles a DCP `.metadata`: its own dataclasses, torch.Size, dtypes and layouts, and nothing else."""

    def __init__(self, stream: IO[bytes], source: str) -> None:
        super().__init__(stream)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_global(module, name)
        if allowed is None:
            raise UnsafeCheckpointError(_refusal(self.source, f"{module}.{name}"))
        return allowed

    def load(self) -> Any:
        with _shared_objects_left_alone(self.source):
            return super().load()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(
            f"{self.source} holds a persistent reference, which .metadata never does"
        )


def _shared_objects() -> list[Any]:
    """Allowed objects a load hands out as they are, not as new copies: classes, functions, enum members."""
    shared = [value for value in _allowed_globals().values() if hasattr(value, "__dict__")]
    return shared + [member for value in shared if isinstance(value, EnumMeta) for member in value]


@contextmanager
def _shared_objects_left_alone(source: str) -> Iterator[None]:
    """Pickle's BUILD sets attributes on whatever it is given, a class or enum member as well as a new
    instance: a pickle that changes one of the process's own objects is undone and refused."""
    saved = [(value, dict(vars(value))) for value in _shared_objects()]
    try:
        yield
    finally:
        changed = [(value, old) for value, old in saved if not _same_attributes(vars(value), old)]
        for value, old in changed:
            _restore_attributes(value, old)
    if changed:
        raise UnsafeCheckpointError(
            f"{source} sets attributes of {_name_of(changed[0][0])}, which a checkpoint never does; "
            "refusing to load it (it could change how code runs)"
        )


def _name_of(value: Any) -> str:
    qualname = getattr(value, "__qualname__", None)
    return f"{value.__module__}.{qualname}" if isinstance(qualname, str) else repr(value)


def _same_attributes(now: Any, before: dict[str, Any]) -> bool:
    return now.keys() == before.keys() and all(now[key] is value for key, value in before.items())


def _restore_attributes(value: Any, before: dict[str, Any]) -> None:
    for key in set(vars(value)) - set(before):
        delattr(value, key)
    for key, old in before.items():
        if vars(value).get(key) is not old:
            setattr(value, key, old)


def read_metadata(stream: IO[bytes], source: str) -> Any:
    """The `Metadata` pickled in `stream` (named `source` in errors), read without running any code."""
    from torch.distributed.checkpoint.metadata import Metadata

    metadata = MetadataUnpickler(stream, source).load()
    if not isinstance(metadata, Metadata) or not isinstance(metadata.state_dict_metadata, dict):
        raise pickle.UnpicklingError(f"it holds a {type(metadata).__name__}, not DCP metadata")
    for index, info in (metadata.storage_data or {}).items():
        if not _is_storage_entry(index, info):
            raise pickle.UnpicklingError("a shard entry is not an item name, file name, offset and length")
        if not _is_plain_file_name(info.relative_path):  # DCP joins it to the folder: no other file is read
            raise UnsafeCheckpointError(
                f"{source} names a shard outside its folder ({info.relative_path!r}); refusing to read it"
            )
    return metadata


def _is_storage_entry(index: Any, info: Any) -> bool:
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import MetadataIndex

    return (
        isinstance(index, MetadataIndex)
        and isinstance(index.fqn, str)
        and isinstance(info, _StorageInfo)
        and all(isinstance(value, int) and value >= 0 for value in (info.offset, info.length))
    )


def _is_plain_file_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and not re.search(r"[/\\\0]", name)


def _read_metadata_safely(self, *args: Any, **kwargs: Any) -> Any:
    """FileSystemReader.read_metadata (torch 2.13) with `read_metadata` in place of `pickle.load`."""
    if hasattr(self, "_get_metadata_path"):  # torch >= 2.7 also reads a rank's own `__<rank>.metadata`
        path = self._get_metadata_path(kwargs.get("rank"))
    else:
        path = self.fs.concat_path(self.path, METADATA_FILE)
    with self.fs.create_stream(path, "rb") as stream:
        metadata = read_metadata(stream, str(path))
    if hasattr(metadata, "storage_meta"):
        from torch.distributed.checkpoint.metadata import StorageMeta

        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
    return metadata


def _load_bytes_safely(self, read_item: Any, value: IO[bytes]) -> None:
    """DefaultLoadPlanner.load_bytes (torch 2.3 to 2.13) with `weights_only=True` in place of False."""
    from torch.distributed.checkpoint._traverse import set_element

    fqn = read_item.dest_index.fqn
    loaded = load_weights_only(value, f"sharded checkpoint item {fqn!r}")
    if self.flatten_state_dict:
        set_element(self.original_state_dict, self.mappings[fqn], loaded)
    else:
        self.state_dict[fqn] = loaded


def load_weights_only(file: str | Path | IO[bytes], source: str) -> Any:
    """`torch.load(weights_only=True)` on the CPU; a refused global raises UnsafeCheckpointError naming it."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _TORCH_GLOBAL.search(str(error))
        if refused is not None:
            raise UnsafeCheckpointError(_refusal(source, refused.group(1))) from None
        detail = _TORCH_DETAIL.search(str(error))  # the rest of torch's message is advice on weights_only
        raise pickle.UnpicklingError(" ".join((detail.group(1) if detail else str(error)).split())) from None


def install_safe_sharded_reads() -> None:
    """Make every DCP read in this process refuse code: `.metadata` through `MetadataUnpickler`, non-tensor
    items through `torch.load(weights_only=True)` (tensor shards already are). Idempotent."""
    try:
        from torch.distributed.checkpoint import default_planner, filesystem
    except ImportError:  # a torch built without torch.distributed reads no sharded checkpoint at all
        return
    # torch unpickles both with no option to restrict them, and Lightning calls DCP directly: patch torch.
    filesystem.FileSystemReader.read_metadata = _read_metadata_safely
    default_planner.DefaultLoadPlanner.load_bytes = _load_bytes_safely


def check_sharded_folder(folder: str | Path) -> None:
    """Raise a UserError with one sentence unless `folder` is a complete sharded checkpoint folder that holds
    only what a checkpoint holds: `.metadata`, every shard it names, each non-tensor item, and `meta.pt`."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise UserError(
            f"checkpoint folder {folder} does not exist; pass the folder `lightning-llm fit` wrote"
        )
    if not folder.is_dir():
        raise UserError(f"{folder} is a file, not a sharded checkpoint folder ({_WHAT_A_FOLDER_HOLDS})")
    metadata = _read_folder_metadata(folder)
    _check_shards_are_complete(folder, metadata)
    _check_items_load_safely(folder, metadata)
    read_lightning_state(folder)


def read_lightning_state(folder: Path) -> dict[str, Any]:
    """Lightning's `meta.pt` (step, loops, hyperparameters, ...), loaded with `weights_only=True`."""
    path = _folder_file(folder, LIGHTNING_STATE_FILE)
    with _in_one_sentence(str(path)):
        state = load_weights_only(path, str(path))
    if not isinstance(state, dict):
        raise UserError(f"{path} is corrupt (it holds a {type(state).__name__}, not a dict); use another one")
    return state


def _read_folder_metadata(folder: Path) -> Any:
    path = _folder_file(folder, METADATA_FILE)
    with _in_one_sentence(str(path)), path.open("rb") as stream:
        return read_metadata(stream, str(path))


def _folder_file(folder: Path, name: str) -> Path:
    if not (folder / name).is_file():
        raise UserError(
            f"{folder} is not a sharded checkpoint folder: it has no {name} ({_WHAT_A_FOLDER_HOLDS})"
        )
    return folder / name


@contextmanager
def _in_one_sentence(source: str) -> Iterator[None]:
    """Each way reading a checkpoint's file can fail, as a one-sentence UserError naming `source`."""
    try:
        yield
    except UnsafeCheckpointError as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"cannot read {source} ({error.strerror or error}); check its permissions") from None
    except Exception as error:  # a damaged pickle or zip fails in many ways (EOF, bad opcode, bad key...)
        raise UserError(
            f"{source} is truncated or corrupt ({_reason(error)}); use another checkpoint"
        ) from None


def _reason(error: Exception) -> str:
    first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    first_sentence = first_line.split(". ")[0][:120]  # torch follows the cause with paragraphs of advice
    return f"{type(error).__name__}: {first_sentence}" if first_sentence else type(error).__name__


def _check_shards_are_complete(folder: Path, metadata: Any) -> None:
    """Every shard `.metadata` names exists and is long enough: a half-copied folder fails here, in words."""
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        shard = folder / name
        if not shard.is_file():
            raise UserError(f"{folder} is incomplete: .metadata lists the shard {name}, which is missing")
        if shard.stat().st_size < size:
            raise UserError(f"{shard} is truncated ({shard.stat().st_size} of {size} bytes); copy it again")


def _check_items_load_safely(folder: Path, metadata: Any) -> None:
    """Load each non-tensor item as DCP will, but with `weights_only=True`: a pickled function fails here,
    in one sentence, rather than inside DCP (which wraps every error in a traceback)."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    for index, info in (metadata.storage_data or {}).items():
        if not isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            continue  # a tensor chunk: DCP loads those with weights_only=True itself
        source = f"{folder / info.relative_path} (item {index.fqn!r})"
        with _in_one_sentence(source), (folder / info.relative_path).open("rb") as shard:
            shard.seek(info.offset)
            load_weights_only(_undo_transforms(io.BytesIO(shard.read(info.length)), info), source)


def _undo_transforms(stream: IO[bytes], info: Any) -> IO[bytes]:
    """The item's bytes as written, if DCP's experimental stream extensions (zstd) transformed them."""
    descriptors = getattr(info, "transform_descriptors", None)
    if not descriptors:
        return stream
    from torch.distributed.checkpoint.filesystem import _StorageReaderTransforms

    return io.BytesIO(_StorageReaderTransforms().transform_load_stream(None, descriptors, stream).read())


def load_sharded_checkpoint(folder: str | Path) -> dict[str, Any]:
    """The whole checkpoint in a sharded folder, read in one process on the CPU with no code run; call
    `check_sharded_folder` first, for one sentence instead of a traceback when the folder is bad.

    Lightning's `_load_distributed_checkpoint` less its one unsafe step: that loads `meta.pt` with
    torch.load's default, which `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` turns into a full unpickle.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    install_safe_sharded_reads()
    folder = Path(folder).expanduser()
    checkpoint: dict[str, Any] = {}
    reader, planner = FileSystemReader(folder), _EmptyStateDictLoadPlanner()  # the planner adds every key
    _load_state_dict(checkpoint, storage_reader=reader, planner=planner, no_dist=True)
    checkpoint.update(read_lightning_state(folder))
    return checkpoint
