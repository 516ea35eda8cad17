"""Where bf16 and torch.compile start to pay on this CPU: ms per training step by model width.

For each width one fresh process trains the project's GPT (fused AdamW, clipping, as `LanguageModel`
does) in four ways: eager fp32, bf16 autocast (what `precision: bf16-mixed` does), `torch.compile` of
each block (what `model.compile: true` does), and both. The table gives the best step after warm-up
(the least disturbed by other jobs on a shared machine) and the winner per width.

    python bench/precision_crossover.py           # quick: 1 warm-up + 2 timed steps, no compile
    python bench/precision_crossover.py --full    # 3 warm-up + 10 timed steps, compile too

The wide models train a few windows per step (the issue's batches of 16 and 8 make one bf16 step take
minutes on a CPU without native bf16 matmuls); ms/step compares variants at the same batch. A variant
whose last warm-up step takes over 2 s (quick) or 5 s (full) is timed by that step alone (in quick mode,
one warm-up step: its one-off set-up included). Quick mode leaves compile out (tens of seconds of
compilation per variant on a CPU); `lm_throughput.py` compiles the 128-wide model in quick mode too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

import torch
from harness import run_child, script_parser, write_results

# The reference points (4 x 128, block 64, batch 12 and 6 x 384, block 256, batch 16) and two
# widths around them; heads stay 64 wide from 256 up. Fewer windows per step at the wide ones.
SHAPES = {
    128: {"n_layer": 4, "n_head": 4, "block_size": 64, "batch_size": 12},
    256: {"n_layer": 4, "n_head": 4, "block_size": 128, "batch_size": 8},
    384: {"n_layer": 6, "n_head": 6, "block_size": 256, "batch_size": 2},
    768: {"n_layer": 6, "n_head": 12, "block_size": 256, "batch_size": 1},
}
QUICK_COMPILE_WIDTHS: tuple[int, ...] = ()  # compiling costs minutes per width on a CPU: --full only
SLOW_STEP_S = {"quick": 2.0, "full": 5.0}
VARIANTS = {
    "fp32 eager": {"bf16": False, "compile": False},
    "bf16 autocast": {"bf16": True, "compile": False},
    "fp32 compile": {"bf16": False, "compile": True},
    "bf16 compile": {"bf16": True, "compile": True},
}
VOCAB = 65  # the Shakespeare char vocabulary


def time_variant(
    width: int, variant: str, warmup: int, timed: int, batch_size: int, slow_step_s: float | None = None
) -> dict[str, Any]:
    """Best and median ms of `timed` training steps after `warmup` (compilation happens in the warm-up).

    With `slow_step_s`, a last warm-up step slower than that is the measurement and no timed step follows.
    """
    from lightning_llm.models import GPT
    from lightning_llm.parallel import parallelize

    shape, options = SHAPES[width], VARIANTS[variant]
    torch.manual_seed(0)
    model = GPT(VOCAB, shape["block_size"], shape["n_layer"], shape["n_head"], width, bias=False)
    parallelize(model, None, compile=options["compile"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, VOCAB, (batch_size, shape["block_size"]))  # (B, T)
    y = torch.randint(0, VOCAB, (batch_size, shape["block_size"]))  # (B, T)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if options["bf16"] else contextlib.nullcontext()
    seconds, started = [], time.perf_counter()
    for step in range(warmup + timed):
        start = time.perf_counter()
        with autocast:
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step_s = time.perf_counter() - start
        if step >= warmup:
            seconds.append(step_s)
        elif step == warmup - 1:
            warmup_s = time.perf_counter() - started
            # The last warm-up step (compilation happens in the first): so slow that one step tells enough.
            if slow_step_s and step_s > slow_step_s:
                seconds.append(step_s)
                break
    seconds.sort()
    return {
        "best_ms": 1000 * seconds[0],
        "median_ms": 1000 * seconds[len(seconds) // 2],
        "warmup_s": warmup_s,
        "tokens_per_step": batch_size * shape["block_size"],
    }


def run_width(width: int, warmup: int, timed: int, full: bool) -> dict[str, Any]:
    """Every variant at one width, in this process; a failing variant is reported, not fatal."""
    batch_size = SHAPES[width]["batch_size"]
    results = {}
    for variant, options in VARIANTS.items():
        if options["compile"] and not full and width not in QUICK_COMPILE_WIDTHS:
            results[variant] = {"skipped": "compiled in --full only"}
            continue
        try:
            slow_step_s = SLOW_STEP_S["full" if full else "quick"]
            results[variant] = time_variant(width, variant, warmup, timed, batch_size, slow_step_s)
        except Exception as error:  # noqa: BLE001 - e.g. no C++ compiler for inductor: report and go on
            results[variant] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    return results


def main() -> None:
    parser = script_parser(__doc__, full="10 timed steps per variant instead of 3")
    parser.add_argument("--widths", type=int, nargs="*", choices=list(SHAPES), help="default: all four")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one width in this process
    parser.add_argument("--warmup", type=int, help="untimed steps per variant (default 1, --full 3)")
    parser.add_argument("--timed", type=int, help="timed steps per variant (default 2, --full 10)")
    args = parser.parse_args()
    warmup = args.warmup or (3 if args.full else 1)
    timed = args.timed or (10 if args.full else 2)
    if args.one:
        print(json.dumps(run_width(args.one, warmup, timed, args.full)))
        return

    rows = []
    for width in args.widths or list(SHAPES):
        argv = [__file__, "--one", str(width), "--warmup", str(warmup), *(["--full"] if args.full else [])]
        # one process runs all four variants: its peak RSS is no one variant's
        results = run_child([*argv, "--timed", str(timed)], peak_rss=False)
        if "error" in results:
            results = {variant: {"error": results["error"]} for variant in VARIANTS}
        good = {variant: r["best_ms"] for variant, r in results.items() if "best_ms" in r}
        winner = min(good, key=good.get) if good else None
        batch_size = SHAPES[width]["batch_size"]
        shape = {key: SHAPES[width][key] for key in ("n_layer", "n_head", "block_size")}
        rows.append(
            {"width": width, **shape, "batch_size": batch_size, "variants": results, "winner": winner}
        )
        print(f"  width {width}: {results}", file=sys.stderr, flush=True)

    print(
        f"Training step by width, best of {timed} steps after {warmup} warm-up, {torch.get_num_threads()} "
        f"threads, load average {os.getloadavg()[0]:.1f} (ms/step; bf16 and compile relative to fp32 eager)\n"
    )
    print("| width | layers x heads, block, batch | " + " | ".join(VARIANTS) + " | winner |")
    print("|---|---|" + "---|" * len(VARIANTS) + "---|")
    for row in rows:
        eager = row["variants"]["fp32 eager"].get("best_ms")
        cells = []
        for variant in VARIANTS:
            result = row["variants"][variant]
            if "error" in result:
                cells.append("failed")
            elif "skipped" in result:
                cells.append("-")
            elif variant == "fp32 eager" or eager is None:
                cells.append(f"{result['best_ms']:.0f}")
            else:
                cells.append(f"{result['best_ms']:.0f} ({eager / result['best_ms']:.2f}x)")
        shape = f"{row['n_layer']} x {row['n_head']}, {row['block_size']}, {row['batch_size']}"
        print(f"| {row['width']} | {shape} | " + " | ".join(cells) + f" | {row['winner'] or '-'} |")
    write_results("precision_crossover", {"full": args.full, "warmup": warmup, "timed": timed, "rows": rows})


if __name__ == "__main__":
    main()
