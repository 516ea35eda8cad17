"""Run the notebooks headless, each in its own folder, with a kernel of this Python (`make notebooks`).

    python scripts/run_notebooks.py                      # all of notebooks/, full mode
    python scripts/run_notebooks.py --mode small         # the quick check the tests run
    python scripts/run_notebooks.py notebooks/02-finetune-bert.ipynb --save-executed logs/notebooks
    python scripts/run_notebooks.py --clear-outputs      # strip outputs before committing a notebook

A notebook reads NOTEBOOK_MODE (small or full) in its first cell, writes its runs and caches under
NOTEBOOK_WORK_DIR (default: the repository, so runs land in logs/ beside the CLI's), and reads data from
NOTEBOOK_DATA_DIR (default: ../shared/data when present, else data/). The first failing
cell stops its notebook; the exit status is 1 when any notebook failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
KERNEL_NAME = "lightning-llm-this-python"


def notebook_paths(names: list[str]) -> list[Path]:
    """The notebooks named on the command line, or every notebook in notebooks/."""
    paths = [Path(name).resolve() for name in names] or sorted(NOTEBOOKS.glob("*.ipynb"))
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(f"error: no such notebook: {', '.join(missing)}")
    if not paths:
        raise SystemExit(f"error: no notebooks in {NOTEBOOKS}")
    return paths


def run_notebook(
    path: Path,
    mode: str,
    work_dir: Path | None = None,
    save_to: Path | None = None,
    timeout: int = 3600,
    threads: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> None:
    """Execute every cell of `path` in its folder; raises nbclient's CellExecutionError at the first failure.

    `threads` sets the kernel's OMP_NUM_THREADS: on a CPU shared with other jobs, 1 thread avoids threads
    spinning while they wait for each other (about 3x faster on a busy 2-core machine). `extra_env` adds
    variables, e.g. NOTEBOOK_DATA_DIR to point the notebooks at another data folder.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    env = {**os.environ, "NOTEBOOK_MODE": mode}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend keeps the figures in the executed copies
    if work_dir is not None:
        env["NOTEBOOK_WORK_DIR"] = str(Path(work_dir).resolve())
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra_env or {})
    with tempfile.TemporaryDirectory() as kernels:
        # A kernel spec of this very interpreter: a `python3` kernel found elsewhere may be another Python.
        spec_dir = Path(kernels) / KERNEL_NAME
        spec_dir.mkdir()
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec = {"argv": argv, "display_name": "lightning-llm", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        manager = KernelManager(
            kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels])
        )
        client = NotebookClient(
            notebook, km=manager, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}
        )
        try:
            client.execute(env=env)
        finally:
            if save_to is not None:
                save_to.mkdir(parents=True, exist_ok=True)
                nbformat.write(notebook, save_to / path.name)


def clear_outputs(path: Path) -> bool:
    """Remove outputs and execution counts in place; True when the file changed."""
    before = path.read_text(encoding="utf-8")
    notebook = nbformat.reads(before, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    after = nbformat.writes(notebook) + "\n"  # as nbformat.write ends a file
    if after != before:
        path.write_text(after, encoding="utf-8")
    return after != before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all of notebooks/)")
    parser.add_argument("--mode", choices=("small", "full"), default="full", help="NOTEBOOK_MODE")
    parser.add_argument("--work-dir", type=Path, help="NOTEBOOK_WORK_DIR: where runs and caches go")
    parser.add_argument("--save-executed", type=Path, help="folder for executed copies (with outputs)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the kernels (1 on a busy machine)")
    parser.add_argument("--clear-outputs", action="store_true", help="strip outputs in place, run nothing")
    args = parser.parse_args(argv)
    paths = notebook_paths(args.notebooks)
    if args.clear_outputs:
        for path in paths:
            print(f"{'cleared' if clear_outputs(path) else 'already clean'}: {path}")
        return 0
    from nbclient.exceptions import CellExecutionError

    failed = []
    for path in paths:
        print(f"running {path.name} ({args.mode} mode) ...", flush=True)
        try:
            run_notebook(path, args.mode, args.work_dir, args.save_executed, args.timeout, args.threads)
        except CellExecutionError as error:
            print(f"FAILED {path.name}:\n{error}", file=sys.stderr)
            failed.append(path.name)
    if failed:
        print(f"error: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(paths)} notebook(s) ran")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
