"""The harness of the bench scripts: their command line and data, the machine in words, one measurement per
child process with its peak RSS, and the results as a markdown table plus `bench/results/<name>.json`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TINY_SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SST2 = ROOT.parent / "shared" / "data" / "sst2"
# (row key, column header, format spec); a missing value prints as "-".
Column = tuple[str, str, str]


def script_parser(
    doc: str | None, *, data: Path | None = None, data_help: str = "the corpus", full: str | None = None
) -> argparse.ArgumentParser:
    """A bench script's command line: its docstring as the description, layout kept; `--data` (default
    `data`) and `--full` (help `full`) where given."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if data is not None:
        parser.add_argument("--data", default=str(data), help=f"{data_help} (default: %(default)s)")
    if full is not None:
        parser.add_argument("--full", action="store_true", help=full)
    return parser


def require_corpus(path: str) -> None:
    """Exit with a one-line error unless `path` is a text file to train on."""
    if not Path(path).is_file():
        sys.exit(f"error: corpus {path} not found; pass --data PATH to a text file")


def machine() -> dict[str, Any]:
    """The CPU, its cores, torch's thread count and the load average, for reading the figures later."""
    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        model = names[0] if names else model
    meminfo = Path("/proc/meminfo")
    memory_gib = (
        round(int(meminfo.read_text().split("MemTotal:")[1].split()[0]) / 2**20)
        if meminfo.is_file()
        else None
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def threads_env(threads: int | None) -> dict[str, str] | None:
    """The environment for a child limited to `threads` OpenMP threads (None: torch's default)."""
    return None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}


def run_child(
    argv: Sequence[str], env: dict[str, str] | None = None, *, peak_rss: bool = True
) -> dict[str, Any]:
    """Run `python <argv>` and return the JSON object on its last stdout line, or `{"error": <its last stderr
    line>}`; with `peak_rss`, plus `peak_rss_mb`: the child's own peak resident memory (from wait4, so
    earlier children do not count)."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.PIPE, stderr=errors, text=True, env=env
        )
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            lines = errors.read().strip().splitlines() or [f"exit status {process.returncode}"]
            return {"error": lines[-1][:300]}
    result = json.loads(output.strip().splitlines()[-1])
    if peak_rss:
        # ru_maxrss is in KiB on Linux.
        result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def run_timed(command: Sequence[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run `command` from the repository with stdout and stderr to `log`: its wall seconds from launch to exit,
    its exit status and the last line it printed."""
    with log.open("w") as out:
        start = time.perf_counter()
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
        seconds = time.perf_counter() - start
    lines = log.read_text().strip().splitlines() or [f"exit status {status}"]
    return seconds, status, lines[-1][:300]


def scalar_events(logs: Path, tag: str) -> list[tuple[int, float, float]]:
    """(step, wall-clock time, value) of every `tag` event in the TensorBoard files under `logs`, by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for events in logs.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values += [(event.step, event.wall_time, event.value) for event in accumulator.Scalars(tag)]
    return sorted(values)


def table_columns(*cells: str) -> list[Column]:
    """Table columns written as their header and cell, `"examples/s: {examples_per_s:.1f}"`: the header,
    then the row key and its format spec as a format field."""
    parsed = []
    for cell in cells:
        [(header, key, spec, _)] = string.Formatter().parse(cell)
        parsed.append((key, header.removesuffix(": "), spec))
    return parsed


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Rows as a markdown table; a row with an `error` prints it in place of the numbers."""
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        if "error" in row:
            first = str(row.get(columns[0][0], ""))
            lines.append(f"| {first} | failed: {row['error']} |" + " |" * (len(columns) - 2))
            continue
        cells = []
        for key, _, spec in columns:
            value = row.get(key)
            cells.append("-" if value is None else format(value, spec))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(name: str, document: dict[str, Any], announce: bool = True) -> Path:
    """Write `document` to `bench/results/<name>.json`; with `announce`, print where."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    if announce:
        print(f"\nwrote {out.relative_to(ROOT)}")
    return out


def report(
    name: str, full: bool, rows: Sequence[dict[str, Any]], columns: Sequence[Column], **facts: Any
) -> Path:
    """Print the table; write `bench/results/<name>.json` with the mode, the machine, `facts` and the rows. A
    row that failed then fails the script (exit 1): a peer that cannot run is not a comparison."""
    print(markdown_table(rows, columns))
    # A machine description taken before the runs (its load average) wins over one taken now.
    document = {"mode": "full" if full else "quick", "machine": facts.pop("machine", None) or machine()}
    document.update(facts, rows=list(rows))
    written = write_results(name, document)
    fail_on_errors(rows, columns[0][0])
    return written


def fail_on_errors(rows: Sequence[dict[str, Any]], name_key: str) -> None:
    """Exit 1 naming the rows that failed, if any (after their table and results are written)."""
    failed = [f"{row.get(name_key)}: {row['error']}" for row in rows if "error" in row]
    if failed:
        sys.exit(f"error: {len(failed)} run(s) failed: " + "; ".join(failed))


def paired_ratio(
    baseline: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]], key: str
) -> dict | None:
    """other / baseline of `key` for each round (the two ran back to back), and the median of those ratios.

    Pairing runs that ran next to each other cancels most of a shared machine's slow spells, which move
    one run's figure by up to 10% on 2 cores; comparing the best run of each would not.
    """
    ratios = [
        b[key] / a[key]
        for a, b in zip(baseline, other, strict=False)
        if "error" not in a and "error" not in b
    ]
    return {"per_round": ratios, "median": statistics.median(ratios)} if ratios else None
