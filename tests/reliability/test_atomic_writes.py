"""Atomic writes: a process killed while saving leaves the previous checkpoint whole and loadable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lm_helpers import lm_fit_args

from lightning_llm.atomic import atomic_open, atomic_write_text
from lightning_llm.checkpoint_files import read_checkpoint
from lightning_llm.checkpoints import AtomicCheckpointIO
from lightning_llm.cli import main

# Runs the CLI with torch.save patched so that the second write of last.ckpt stops half way and waits
# for the test to kill the process.
HANG_IN_SECOND_LAST_SAVE = """
import io, sys, time
from pathlib import Path
import torch
original_save, last_saves = torch.save, []
def save(obj, file, *args, **kwargs):
    if ".tmp-last.ckpt" in str(getattr(file, "name", file)):
        last_saves.append(1)
        if len(last_saves) == 2:
            buffer = io.BytesIO()
            original_save(obj, buffer, *args, **kwargs)
            file.write(buffer.getvalue()[: buffer.tell() // 2])
            file.flush()
            Path(sys.argv[1]).touch()
            time.sleep(600)
    return original_save(obj, file, *args, **kwargs)
torch.save = save
from lightning_llm.cli import main
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_kill_during_checkpoint_save_keeps_the_previous_checkpoint(tiny_corpus, tmp_path):
    marker = tmp_path / "half-written"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", HANG_IN_SECOND_LAST_SAVE, str(marker), *lm_fit_args(tiny_corpus, 40, "v")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while not marker.exists():
        assert process.poll() is None, f"training ended before the second save:\n{process.stdout.read()}"
        assert time.time() < deadline, "the second save of last.ckpt never started"
        time.sleep(0.1)
    process.kill()
    process.wait()

    checkpoints = Path("logs/gpt-shakespeare-char/v/checkpoints")
    leftovers = list(checkpoints.glob(".tmp-last.ckpt.*"))
    assert leftovers and leftovers[0].stat().st_size > 0  # the kill did land mid-write
    assert read_checkpoint(checkpoints / "last.ckpt")["global_step"] == 4  # the first save, whole

    main([*lm_fit_args(tiny_corpus, 12, "v"), "--ckpt_path", "last"])
    assert read_checkpoint(checkpoints / "last.ckpt")["global_step"] == 12
    assert not [p for p in Path("logs").rglob("*") if p.name.startswith(".tmp-")], "a stale temp file stayed"


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "tokenizer.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]


def test_checkpoint_io_writes_whole_files_and_removes_stale_temps(tmp_path):
    stale = tmp_path / ".tmp-last.ckpt.123.abcd"
    stale.write_bytes(b"half")
    AtomicCheckpointIO().save_checkpoint(
        {"state_dict": {"w": torch.ones(2)}, "global_step": 7}, tmp_path / "last.ckpt"
    )
    assert read_checkpoint(tmp_path / "last.ckpt")["global_step"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
