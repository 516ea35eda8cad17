"""A crafted sharded checkpoint folder runs no code: not through `consolidate`, not through a direct DCP load.

torch.distributed.checkpoint unpickles `.metadata` with plain pickle and non-tensor items with
`weights_only=False`; each payload here would create a marker file if any of that still happened.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from cli_runner import changed_files, error_line, run_cli, snapshot
from lightning.fabric.strategies.fsdp import _distributed_checkpoint_load
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata

from lightning_llm.errors import UserError
from lightning_llm.parallel.sharded_checkpoints import (
    MetadataUnpickler,
    check_sharded_folder,
    install_safe_sharded_reads,
    load_sharded_checkpoint,
)

WEIGHTS = torch.arange(6.0).view(2, 3)
# DCP warns that it assumes one process when no process group is set up: here that is the point.
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class CreatesMarker:
    """Unpickling this creates `marker`: what a real payload would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_sharded_folder(folder: Path, extra: dict | None = None, meta: object = None) -> Path:
    """A real DCP folder (one process, no process group) plus Lightning's meta.pt: what consolidate reads."""
    state = {
        "state_dict": {"w": WEIGHTS, "b": torch.ones(3, dtype=torch.bfloat16)},
        "optimizer_0": {
            "state": {"w": {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2, 3)}},
            "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": ["w"], "foreach": None}],
        },
        **({"extra": extra} if extra else {}),
    }
    dcp.save(state, checkpoint_id=folder, no_dist=True)
    torch.save(
        {"global_step": 3, "hyper_parameters": {"lr": 0.1}} if meta is None else meta, folder / "meta.pt"
    )
    return folder


def plant_in_metadata(folder: Path, marker: Path) -> Path:
    """The folder's own `.metadata` with a payload tucked inside it, as an attacker would ship it."""
    with (folder / ".metadata").open("rb") as stream:
        metadata = pickle.load(stream)  # our own genuine file, just written
    metadata.planner_data = {"state_dict.w": CreatesMarker(marker)}
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    return folder


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-ran"


@pytest.fixture
def genuine(tmp_path) -> Path:
    return write_sharded_folder(tmp_path / "last.ckpt")


@pytest.fixture
def crafted_metadata(tmp_path, marker) -> Path:
    return plant_in_metadata(write_sharded_folder(tmp_path / "crafted.ckpt"), marker)


@pytest.fixture
def crafted_item(tmp_path, marker) -> Path:
    """A non-tensor item (DCP's BYTE_IO) whose pickle creates the marker."""
    return write_sharded_folder(tmp_path / "item.ckpt", extra={"note": CreatesMarker(marker)})


def consolidate_error(folder: Path, cwd: Path) -> str:
    """`lightning-llm consolidate <folder>` must fail with one line and change no file."""
    before = snapshot(cwd)
    line = error_line(run_cli(["consolidate", str(folder)], cwd=cwd))
    assert changed_files(before, cwd) == []
    assert not (cwd / f"{folder.stem}.consolidated.ckpt").exists()
    return line


def test_the_payloads_run_code_under_plain_dcp(crafted_metadata, crafted_item, marker):
    """Without our reads, DCP runs both payloads: the refusals below are not vacuous."""
    script = (
        "import sys, torch, torch.distributed.checkpoint as dcp\n"
        "state = {'state_dict': {'w': torch.zeros(2, 3)}, 'extra': {'note': 0}}\n"
        "try: dcp.load(state, checkpoint_id=sys.argv[1])\n"
        "except BaseException: pass\n"
    )
    for folder in (crafted_metadata, crafted_item):
        subprocess.run(
            [sys.executable, "-c", script, str(folder)], check=True, capture_output=True, timeout=120
        )
        assert marker.exists(), f"the payload in {folder.name} did not run under plain DCP"
        marker.unlink()


def test_genuine_folder_consolidates_through_the_cli(genuine, tmp_path):
    done = run_cli(["consolidate", str(genuine)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = torch.load(tmp_path / "last.consolidated.ckpt", weights_only=True)
    torch.testing.assert_close(merged["state_dict"]["w"], WEIGHTS)
    assert merged["global_step"] == 3 and merged["optimizer_states"][0]["param_groups"][0]["lr"] == 0.1


def test_consolidate_refuses_crafted_metadata_and_runs_nothing(crafted_metadata, marker, tmp_path):
    line = consolidate_error(crafted_metadata, tmp_path)
    assert "crafted.ckpt/.metadata holds a pickled pathlib.Path.touch" in line
    assert "which a checkpoint never contains; refusing to load it (it could run code)" in line
    assert not marker.exists()


def test_consolidate_refuses_a_code_item_and_runs_nothing(crafted_item, marker, tmp_path):
    line = consolidate_error(crafted_item, tmp_path)
    assert "(item 'extra.note') holds a pickled" in line and "refusing to load it" in line
    assert not marker.exists()


def test_consolidate_refuses_code_in_meta_pt_even_when_torch_is_told_to_unpickle(
    tmp_path, marker, monkeypatch
):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes torch.load's default a full unpickle; ours is explicit."""
    folder = write_sharded_folder(tmp_path / "meta.ckpt", meta={"global_step": CreatesMarker(marker)})
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert "meta.ckpt/meta.pt holds a pickled" in consolidate_error(folder, tmp_path)
    assert not marker.exists()


def test_consolidate_names_a_folder_without_metadata(genuine, tmp_path):
    (genuine / ".metadata").unlink()
    line = consolidate_error(genuine, tmp_path)
    assert "is not a sharded checkpoint folder: it has no .metadata" in line
    assert "holds .metadata, meta.pt and one or more *.distcp shards" in line


def test_consolidate_names_a_truncated_metadata(genuine, tmp_path):
    metadata = genuine / ".metadata"
    metadata.write_bytes(metadata.read_bytes()[: metadata.stat().st_size // 2])
    assert f"{metadata} is truncated or corrupt" in consolidate_error(genuine, tmp_path)


def test_direct_dcp_load_refuses_crafted_metadata(crafted_metadata, marker):
    """Lightning's FSDP2 load (ModelParallelStrategy -> `_distributed_checkpoint_load`), after our install."""
    install_safe_sharded_reads()
    with pytest.raises(CheckpointException, match=r"holds a pickled pathlib\.Path\.touch"):
        _distributed_checkpoint_load({"state_dict": {"w": torch.zeros(2, 3)}}, crafted_metadata)
    assert not marker.exists()


def test_direct_dcp_load_refuses_a_code_item(crafted_item, marker):
    install_safe_sharded_reads()
    state = {"state_dict": {"w": torch.zeros(2, 3)}, "extra": {"note": 0}}
    with pytest.raises(CheckpointException, match=r"item 'extra.note' holds a pickled"):
        _distributed_checkpoint_load(state, crafted_item)
    assert not marker.exists()


def test_direct_dcp_load_of_a_genuine_folder_still_works(genuine):
    install_safe_sharded_reads()
    install_safe_sharded_reads()  # idempotent
    state = {"state_dict": {"w": torch.zeros(2, 3)}, "optimizer_0": {"param_groups": [{"lr": 0.0}]}}
    _distributed_checkpoint_load(state, genuine)
    torch.testing.assert_close(state["state_dict"]["w"], WEIGHTS)
    assert state["optimizer_0"]["param_groups"][0]["lr"] == 0.1


def test_allowlist_reads_a_genuine_metadata_exactly_as_pickle_does(genuine):
    install_safe_sharded_reads()
    with (genuine / ".metadata").open("rb") as stream:
        expected = pickle.load(stream)
    with (genuine / ".metadata").open("rb") as stream:
        restricted = MetadataUnpickler(stream, ".metadata").load()
    assert isinstance(restricted, Metadata) and restricted == expected
    assert FileSystemReader(genuine).read_metadata().state_dict_metadata == expected.state_dict_metadata


# GLOBAL Metadata (the class itself), state (None, {"tampered": 1}), BUILD: pickle sets a class attribute.
TAMPERS_WITH_A_CLASS = b"ctorch.distributed.checkpoint.metadata\nMetadata\nN}Vtampered\nI1\ns\x86b."


def test_allowlist_refuses_a_pickle_that_changes_an_allowed_class(genuine):
    (genuine / ".metadata").write_bytes(TAMPERS_WITH_A_CLASS)
    with pytest.raises(
        UserError, match=r"sets attributes of torch\.distributed\.checkpoint\.metadata\.Metadata"
    ):
        check_sharded_folder(genuine)
    assert not hasattr(Metadata, "tampered")


def test_load_sharded_checkpoint_merges_shards_and_meta_pt(genuine):
    checkpoint = load_sharded_checkpoint(genuine)
    torch.testing.assert_close(checkpoint["state_dict"]["w"], WEIGHTS)
    [param_group] = checkpoint["optimizer_0"]["param_groups"]
    assert checkpoint["global_step"] == 3 and param_group["betas"] == (0.9, 0.99)


def edit_metadata(folder: Path, edit) -> None:
    with (folder / ".metadata").open("rb") as stream:
        metadata = pickle.load(stream)  # our own genuine file
    (folder / ".metadata").write_bytes(pickle.dumps(edit(metadata)))


def point_shards_outside(metadata: Metadata) -> Metadata:
    for info in metadata.storage_data.values():
        info.relative_path = "../../etc/passwd"
    return metadata


# damage -> (how to do it to a genuine folder, or which path to check instead; what the error must say)
BAD_FOLDERS = {
    "missing folder": (lambda f: f.with_name("gone"), "does not exist"),
    "a file": (lambda f: f / "meta.pt", "is a file, not a sharded checkpoint folder"),
    "no meta.pt": (lambda f: (f / "meta.pt").unlink(), "it has no meta.pt"),
    "corrupt meta.pt": (
        lambda f: (f / "meta.pt").write_bytes(b"PK\x03\x04 no zip"),
        "is truncated or corrupt",
    ),
    "meta.pt of a list": (lambda f: torch.save([1, 2], f / "meta.pt"), "not a dict"),
    "metadata of a dict": (lambda f: edit_metadata(f, lambda m: {"a": 1}), "not DCP metadata"),
    "missing shard": (
        lambda f: (f / "__0_0.distcp").unlink(),
        "lists the shard __0_0.distcp, which is missing",
    ),
    "truncated shard": (lambda f: (f / "__0_0.distcp").write_bytes(b"x"), "__0_0.distcp is truncated"),
    "shard outside": (lambda f: edit_metadata(f, point_shards_outside), "names a shard outside its folder"),
}


@pytest.mark.parametrize("damage", BAD_FOLDERS, ids=str)
def test_check_sharded_folder_says_what_is_wrong_in_one_sentence(damage, genuine):
    spoil, expected = BAD_FOLDERS[damage]
    target = spoil(genuine)
    with pytest.raises(UserError) as raised:
        check_sharded_folder(target if isinstance(target, Path) else genuine)  # most damage the folder itself
    assert expected in str(raised.value) and "\n" not in str(raised.value)
