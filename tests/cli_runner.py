"""Run the real `lightning-llm` command in a subprocess and check how it fails: the hostile-input tables use it.

A bad input must end with exit status 2, exactly one `error:` line naming the thing and the fix, no
traceback, and no file that existed before changed or removed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# A budget no bad input may exceed: a hang shows up as a failed test, not a stuck suite.
TIMEOUT_S = 180


CLI_ENV = {
    "CUDA_VISIBLE_DEVICES": "",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONWARNINGS": "ignore",
}
# What `python -m lightning_llm` spends its first seconds importing: a table of cases forks from a copy.
PRELOADED = [
    "torch",
    "lightning",
    "transformers",
    "lightning_llm.cli",
    "lightning_llm.lit",
    "lightning_llm.export",
]


def run_cli(args: Sequence[str], cwd: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """`python -m lightning_llm <args>` in `cwd`, on the CPU, one thread, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_llm", *args],
        cwd=cwd,
        env={**os.environ, **CLI_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_cli_cases(
    cases: Sequence[Sequence[str]], cwd: Path, workers: int = 2, timeout: float = TIMEOUT_S
) -> list[subprocess.CompletedProcess]:
    """`run_cli` for a table of argument lists, `workers` at a time, each in its own process forked from
    a server that imported the CLI once (interpreter start-up is most of a failing case's time).

    Each case still starts from a clean interpreter state: `main()` runs in a fresh fork, with the
    environment, working folder, argv, stdin and captured stdout/stderr of `run_cli`'s subprocess.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(max_workers=workers) as pool:
        runs = [
            pool.submit(_run_forked, context, list(args), cwd, Path(scratch) / str(number), timeout)
            for number, args in enumerate(cases)
        ]
        return [run.result() for run in runs]


def _run_forked(
    context, args: list[str], cwd: Path, scratch: Path, timeout: float
) -> subprocess.CompletedProcess:
    stdout, stderr = scratch.with_suffix(".out"), scratch.with_suffix(".err")
    process = context.Process(target=_main_in_fork, args=(args, str(cwd), str(stdout), str(stderr)))
    process.start()
    process.join(timeout)
    if process.exitcode is None:  # a hang: the same failure `subprocess.run(timeout=...)` raises
        process.kill()
        process.join()
        raise subprocess.TimeoutExpired(["lightning-llm", *args], timeout)
    read = lambda path: path.read_text(errors="replace") if path.exists() else ""  # noqa: E731
    return subprocess.CompletedProcess(["lightning-llm", *args], process.exitcode, read(stdout), read(stderr))


def _main_in_fork(args: list[str], cwd: str, stdout: str, stderr: str) -> None:
    """The forked child: become `python -m lightning_llm <args>` started in `cwd`, then run it."""
    import torch  # preloaded: no import cost

    from lightning_llm import cli

    os.chdir(cwd)
    os.environ.update(CLI_ENV)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, stdout, os.O_WRONLY | os.O_CREAT),
        (2, stderr, os.O_WRONLY | os.O_CREAT),
    ):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    sys.argv = [str(Path(cli.__file__).with_name("__main__.py")), *args]
    # as under `python -m`: a DDP run restarts the same command for its other processes from this spec
    sys.modules["__main__"].__spec__ = importlib.util.find_spec("lightning_llm.__main__")
    cli.main()


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
