"""Run every benchmark, then print all their tables with the machine they ran on.

Each script follows one contract: `python bench/<name>.py [--full]` prints a markdown table and writes
`bench/results/<name>.json`. Quick mode gives each script a time budget so the whole run stays short;
a script that is missing is skipped with a note, one that fails or runs over is reported and the rest go on,
and the run then exits 1 (a peer that cannot run fails `make bench`, not just its row).
The tables and the machine description also go to `bench/results/summary.md`.

    python bench/run_all.py           # quick (`make bench`)
    python bench/run_all.py --full    # the figures in docs/benchmarks.md (`make bench-full`), tens of minutes
"""

from __future__ import annotations

import subprocess
import sys
import time

from harness import RESULTS, ROOT, machine, script_parser

# Script name -> the most seconds it may take in quick mode, a margin over what it takes on an idle
# 2-core machine; the whole quick run takes under 10 minutes there.
QUICK_BUDGET_S = {
    "lm_throughput": 210,
    "precision_crossover": 110,
    "end_to_end": 80,
    "classifier_overhead": 70,
    "finetune_padding": 170,
    "data_prep": 110,
    "kv_cache": 110,
    "int8": 150,
    "serve": 120,
    "prepare_stream": 150,
    "time_to_accuracy": 150,
}
FULL_BUDGET_S = 3600  # per script: a full run is for an idle machine and may take long


def machine_description() -> str:
    """CPU model, cores, memory, torch version and load: what the figures depend on."""
    m = machine()
    memory = f", {m['memory_gib']} GiB" if m["memory_gib"] else ""
    return (
        f"{m['cpu']}, {m['cores']} cores{memory}, {m['gpu'] or 'no GPU'}; torch {m['torch']} "
        f"({m['torch_threads']} threads), Python {m['python']}; load average {m['load_average_1m']:.1f} at the end"
    )


def run_script(name: str, full: bool, extra: list[str]) -> tuple[str, float]:
    """The script's own output (its table) or why there is none, and its wall seconds."""
    budget = FULL_BUDGET_S if full else QUICK_BUDGET_S[name]
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *(["--full"] if full else []), *extra]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=budget, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return f"_did not finish within its budget of {budget} s_", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"_failed: {last}_", seconds
    return done.stdout.strip(), seconds


def main() -> None:
    parser = script_parser(__doc__, full="every script in its full mode")
    parser.add_argument("--only", nargs="*", choices=list(QUICK_BUDGET_S), help="run only these scripts")
    parser.add_argument("--data", help="the Tiny Shakespeare text, passed to the LM scripts")
    args = parser.parse_args()

    sections = []
    started = time.perf_counter()
    for name in args.only or QUICK_BUDGET_S:
        if not (ROOT / "bench" / f"{name}.py").is_file():
            sections.append((name, "_skipped: the script is not in this checkout_", 0.0))
            print(f"{name}: skipped (not present)", file=sys.stderr, flush=True)
            continue
        takes_data = name in ("lm_throughput", "end_to_end")
        extra = ["--data", args.data] if args.data and takes_data else []
        print(f"{name}: running ({'full' if args.full else 'quick'})", file=sys.stderr, flush=True)
        output, seconds = run_script(name, args.full, extra)
        print(f"{name}: done in {seconds:.0f} s", file=sys.stderr, flush=True)
        sections.append((name, output, seconds))

    mode = "full" if args.full else "quick"
    lines = [f"# Benchmarks ({mode}, {time.perf_counter() - started:.0f} s in all)", ""]
    lines += [f"Machine: {machine_description()}", ""]
    for name, output, seconds in sections:
        lines += [f"## {name} ({seconds:.0f} s)", "", output, ""]
    summary = "\n".join(lines)
    print("\n" + summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text(summary)
    print(f"wrote {(RESULTS / 'summary.md').relative_to(ROOT)}")
    failed = [name for name, output, _ in sections if output.startswith(("_failed", "_did not finish"))]
    if failed:  # the rest ran and are in the summary; the run as a whole did not pass
        sys.exit(f"error: {', '.join(failed)} failed or ran over; see their sections above")


if __name__ == "__main__":
    main()
