"""Reading a checkpoint file safely: tensors only (`weights_only=True`, no code runs), memory-mapped, with one
clear error for each way a file can be wrong. Plain torch, so models can use it without Lightning."""

from __future__ import annotations

import importlib
import inspect
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lightning_llm.errors import UserError

_CORRUPT = (zipfile.BadZipFile, EOFError, pickle.UnpicklingError)


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (memory-mapped, tensors only: no code runs), or a UserError saying what is wrong."""
    path = Path(ckpt_path).expanduser()
    require_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "weights_only" in str(error):
            raise UserError(
                f"checkpoint {path} holds Python objects besides tensors, which could run code, so it is not "
                "loaded; use a checkpoint written by `lightning-llm fit`"
            ) from None
        raise UserError(f"checkpoint {path} is truncated or corrupt; use another checkpoint") from None
    except _CORRUPT:
        raise UserError(f"checkpoint {path} is truncated or corrupt; use another checkpoint") from None
    except (OSError, RuntimeError) as error:
        # torch reports a damaged archive as a zip, mmap or stream-reader failure
        if isinstance(error, OSError) or any(w in str(error) for w in ("zip", "mmap", "PytorchStreamReader")):
            raise UserError(f"checkpoint {path} is truncated or corrupt; use another checkpoint") from None
        raise
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(
            f"checkpoint {path} is not a Lightning checkpoint (no state_dict of weights); use a .ckpt file "
            "written by `lightning-llm fit`"
        )
    return checkpoint


def require_checkpoint_file(path: Path) -> None:
    """A UserError unless `path` is a regular file: say what it is instead (missing, a folder, a device)."""
    if path.is_file():
        return
    if not path.exists():
        raise UserError(
            f"checkpoint {path} does not exist; pass the .ckpt file written by `lightning-llm fit`"
        )
    if path.is_dir():
        raise UserError(
            f"checkpoint {path} is a folder (a sharded FSDP checkpoint?); merge it into one file with "
            f"`lightning-llm consolidate {path}` and pass the .ckpt file it writes"
        )
    raise UserError(
        f"checkpoint {path} is not a regular file; pass the .ckpt file written by `lightning-llm fit`"
    )


# Classes a checkpoint may name: this package's own. Rebuilding a model imports the module of every class
# its hyperparameters name, and an import runs that module's code.
OWN_PACKAGE = __name__.split(".")[0] + "."


def model_description(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The checkpoint's hyperparameters (what rebuilds its module), once every class they name is ours."""
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not hparams:
        raise UserError(
            f"checkpoint {path} holds no hyperparameters, so its model cannot be rebuilt; use a .ckpt file "
            "written by `lightning-llm fit`"
        )
    for class_path in class_paths_in(hparams):
        if not class_path.startswith(OWN_PACKAGE):
            raise UserError(
                f"checkpoint {path} names the class {class_path!r}, which is not this project's; it is not "
                f"loaded, since importing it could run code. Use a checkpoint whose classes are {OWN_PACKAGE}*"
            )
    refuse_unknown_settings(hparams, path)
    return hparams


def refuse_unknown_settings(hparams: dict[str, Any], path: str | Path, module: bool = False) -> None:
    """Settings a class no longer takes (renamed or removed since the checkpoint was written) would reach its
    constructor as keyword arguments: one error naming them and what the class takes now. The networks'
    classes are checked; with `module`, the LightningModule's too (importing it imports Lightning)."""
    for class_path, settings in _described_classes(hparams, module):
        module_name, _, name = class_path.rpartition(".")
        try:
            accepted = inspect.signature(
                getattr(importlib.import_module(module_name), name).__init__
            ).parameters
        except (ImportError, AttributeError, ValueError):
            raise UserError(f"checkpoint {path} holds a {class_path}, which does not exist here") from None
        unknown = sorted(key for key in settings if not str(key).startswith("_") and key not in accepted)
        if unknown:
            takes = ", ".join(key for key in accepted if key not in ("self", "args", "kwargs"))
            raise UserError(
                f"checkpoint {path} holds settings {name} does not take: {', '.join(unknown)} (it takes {takes}); "
                "it was written by another version of lightning-llm or edited: retrain, or rename those keys in "
                "its hyper_parameters"
            )


def _described_classes(value: Any, module: bool = False) -> Iterator[tuple[str, dict]]:
    """(class_path, its settings) for every nested `class_path` / `init_args` pair, and with `module` for the
    module itself (`_class_path` and the top-level keys)."""
    if isinstance(value, dict):
        if module and "_class_path" in value:
            yield str(value["_class_path"]), value
        if "class_path" in value and isinstance(value.get("init_args"), dict):
            yield str(value["class_path"]), value["init_args"]
        for item in value.values():
            yield from _described_classes(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _described_classes(item)


def class_paths_in(value: Any) -> Iterator[str]:
    """Every `class_path` / `_class_path` value, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("class_path", "_class_path"):
                yield str(item)
            else:
                yield from class_paths_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from class_paths_in(item)


def require_class(hparams: dict[str, Any], wanted: str, path: str | Path, fix: str) -> None:
    """A UserError unless the checkpoint's module is `wanted` (a class name or dotted path)."""
    saved = str(hparams.get("_class_path") or "")
    if saved and saved.rsplit(".", 1)[-1] != wanted.rsplit(".", 1)[-1]:
        raise UserError(
            f"checkpoint {path} holds a {saved.rsplit('.', 1)[-1]}, not a {wanted.rsplit('.', 1)[-1]}; {fix}"
        )
