"""Run the real `lightning-llm` command in a subprocess and check how it fails: the hostile-input tables use it.

A bad input must end with exit status 2, exactly one `error:` line naming the thing and the fix, no
traceback, and no file that existed before changed or removed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# A budget no bad input may exceed: a hang shows up as a failed test, not a stuck suite.
TIMEOUT_S = 180


def run_cli(args: Sequence[str], cwd: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """`python -m lightning_llm <args>` in `cwd`, on the CPU, one thread, output captured as text."""
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
    }
    return subprocess.run(
        [sys.executable, "-m", "lightning_llm", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a failed run; fails the test unless the run failed the promised way."""
    output = f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-6000:]}"
    assert "Traceback" not in result.stderr, output
    assert result.returncode == 2, f"exit status {result.returncode}\n{output}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"{len(errors)} error lines\n{output}"
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a digest of its content, to show that a failed run changed nothing."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digests[str(path.relative_to(folder))] = hashlib.blake2b(path.read_bytes()).hexdigest()
    return digests


def changed_files(before: dict[str, str], folder: Path) -> list[str]:
    """Files of `before` that are now missing or different (new files are allowed: logs of the failed run)."""
    after = snapshot(folder)
    return [name for name, digest in before.items() if after.get(name) != digest]
