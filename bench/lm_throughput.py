"""LM training throughput: a plain PyTorch loop against the project's Trainer path, and its precision / compile variants.

Each variant runs in its own process (so peak RSS is its own) on the nanoGPT CPU recipe shape from
configs/gpt-shakespeare-char.yaml, and the table prints tokens/s, model FLOP utilisation against the
measured peak of this CPU's matmul, peak RSS, and the ratio to the plain loop.

    python bench/lm_throughput.py           # quick: all five once, fp32 150 steps (15 untimed)
    python bench/lm_throughput.py --full    # 400 steps (20 untimed), 3 alternating rounds of all five

bf16 variants run a twentieth of the steps (at least 8, 3 untimed): without native bf16 matmuls (AVX2 CPUs)
one of their steps takes a second. The Lightning overhead is b / a: the Trainer path's tokens/s over the
plain loop's (target >= 0.97). Separate processes minutes apart differ by up to 10-20% on a shared 2-core
machine, so the verdict comes from bench/lm_overhead.py: both paths in one process, alternating blocks of
steps (quick: 10 Trainer blocks of 20 steps, --full: 24 of 25); the process pairs are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch
from harness import (
    ROOT,
    TINY_SHAKESPEARE,
    fail_on_errors,
    paired_ratio,
    require_corpus,
    run_child,
    script_parser,
    write_results,
)

VARIANTS = {
    "a_plain_loop": {},
    "b_trainer": {"precision": "32-true"},
    "c_trainer_bf16": {"precision": "bf16-mixed"},
    "d_trainer_compile": {"precision": "32-true", "compile": True},
    "e_trainer_bf16_compile": {"precision": "bf16-mixed", "compile": True},
}
SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12}


def peak_matmul_flops() -> float:
    """FLOP/s of a large fp32 matmul on this machine: the denominator of MFU on a CPU.

    The best of several timings after a warm-up, so a busy moment does not understate the peak.
    """
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best


OVERHEAD_PAIR = ("a_plain_loop", "b_trainer")
TARGET = 0.97  # the bar for b / a


def interleaved_overhead(data: str, full: bool) -> dict:
    """bench/lm_overhead.py's result: b / a from alternating blocks of steps in one process."""
    blocks, block_steps = (24, 25) if full else (10, 20)
    argv = [str(ROOT / "bench" / "lm_overhead.py"), "--data", data]
    return run_child([*argv, "--blocks", str(blocks), "--block_steps", str(block_steps)], peak_rss=False)


def steps_for(name: str, steps: int, warmup: int) -> tuple[int, int]:
    """(steps, untimed steps) of one variant: bf16 ones a twentieth as many, as each of their steps is slow."""
    if VARIANTS[name].get("precision") == "bf16-mixed":
        return max(steps // 20, 8), 3
    return steps, warmup


def run_variant(name: str, data: str, steps: int, warmup: int, shape: dict) -> dict:
    """Train `steps` steps and time the ones after `warmup` (compilation and caches excluded)."""
    import lightning.pytorch as pl

    from lightning_llm.callbacks.training_logs import TrainingLogs
    from lightning_llm.data.language_modeling import LanguageModelingDataModule
    from lightning_llm.lit.language_model import LanguageModel
    from lightning_llm.models import GPT

    torch.manual_seed(0)
    options = VARIANTS[name]
    dm = LanguageModelingDataModule(
        path=data, block_size=shape["block_size"], batch_size=shape["batch_size"], val_windows=12
    )
    model = GPT(
        dm.vocab_size, shape["block_size"], shape["n_layer"], shape["n_head"], shape["n_embd"], bias=False
    )
    tokens_per_step = shape["block_size"] * shape["batch_size"]
    if name == "a_plain_loop":
        sys.path.insert(0, str(ROOT / "bench"))
        from plain_loop import train_steps

        seconds = train_steps(model, dm, steps, warmup)
    else:
        timer = _StepTimer(warmup)
        extra = {"compile": True} if options.get("compile") else {}
        module = LanguageModel(
            model, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, betas=(0.9, 0.99), **extra
        )
        trainer = pl.Trainer(
            max_steps=steps,
            precision=options["precision"],
            gradient_clip_val=1.0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=[timer, TrainingLogs()],  # what every CLI run logs
            accelerator="cpu",
            devices=1,
        )
        trainer.fit(module, datamodule=dm)
        seconds = timer.seconds
    timed_steps = steps - warmup
    return {
        "variant": name,
        "steps": steps,
        "untimed_steps": warmup,
        "tokens_per_s": tokens_per_step * timed_steps / seconds,
        "ms_per_step": 1000 * seconds / timed_steps,
        "flops_per_token": model.flops_per_token(shape["block_size"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


class _StepTimer:
    """Lightning callback timing training steps after the first `warmup` ones."""

    def __new__(cls, warmup: int):
        import lightning.pytorch as pl

        class StepTimer(pl.Callback):
            def __init__(self) -> None:
                self.warmup, self.seconds, self._start = warmup, 0.0, None

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == self.warmup:
                    self._start = time.perf_counter()

            def on_train_end(self, trainer, pl_module):
                self.seconds = time.perf_counter() - self._start

        return StepTimer()


def main() -> None:
    parser = script_parser(__doc__, data=TINY_SHAKESPEARE, full="400 steps, 3 alternating rounds of all five")
    parser.add_argument("--steps", type=int, help="fp32 training steps per run (default 150, --full 400)")
    parser.add_argument("--warmup", type=int, help="untimed first steps of an fp32 run (15, --full 20)")
    parser.add_argument(
        "--rounds", type=int, help="rounds of a and b, alternating (default 1, --full 3 of all)"
    )
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), help="default: all five")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    steps = args.steps or (400 if args.full else 150)
    args.warmup = args.warmup if args.warmup is not None else (20 if args.full else 15)
    rounds = args.rounds or (3 if args.full else 1)
    variants = args.variants or list(VARIANTS)
    if args.one:
        variant_steps, warmup = steps_for(args.one, steps, args.warmup)
        print(json.dumps(run_variant(args.one, args.data, variant_steps, warmup, SHAPE)))
        return
    require_corpus(args.data)
    peak = peak_matmul_flops()
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for round_index in range(rounds):
        # alternate the order, so a slow spell of a shared machine does not fall on one variant only;
        # with more than one quick round, the later ones repeat only the pair the overhead ratio compares
        chosen = variants if args.full or round_index == 0 else [v for v in variants if v in OVERHEAD_PAIR]
        order = chosen if round_index % 2 == 0 else chosen[::-1]
        for name in order:
            argv = [__file__, "--one", name, "--data", args.data, "--steps", str(steps)]
            # the child reports its own peak RSS with its figures
            result = run_child([*argv, "--warmup", str(args.warmup)], peak_rss=False)
            runs[name].append({"variant": name, **result})
            print(f"  {runs[name][-1]}", file=sys.stderr, flush=True)
    rows = []
    for results in runs.values():
        good = [r for r in results if "error" not in r]
        rows.append(max(good, key=lambda r: r["tokens_per_s"]) if good else results[-1])
    plain = next(
        (r["tokens_per_s"] for r in rows if r["variant"] == "a_plain_loop" and "error" not in r), None
    )
    print(
        f"LM training, {SHAPE}, {torch.get_num_threads()} threads, {steps} fp32 steps ({args.warmup} untimed), "
        f"{steps_for('c_trainer_bf16', steps, args.warmup)[0]} bf16 steps (3 untimed), "
        f"tokens/s the best of {rounds} rounds (a, b) or of the runs made; peak fp32 matmul {peak / 1e9:.0f} GFLOP/s; load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| variant | tokens/s | ms/step | MFU | peak RSS MB | vs plain loop (best runs) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['variant']} | failed: {row['error']} | | | | |")
            continue
        row["mfu"] = row["tokens_per_s"] * row["flops_per_token"] / peak
        row["ratio_to_plain"] = row["tokens_per_s"] / plain if plain else None
        ratio = f"{row['ratio_to_plain']:.3f}x" if plain else "-"
        print(
            f"| {row['variant']} | {row['tokens_per_s']:.0f} | {row['ms_per_step']:.1f} | {row['mfu']:.1%} | "
            f"{row['peak_rss_mb']:.0f} | {ratio} |"
        )
    overhead = paired_ratio(*(runs.get(name, []) for name in OVERHEAD_PAIR), "tokens_per_s")
    both = all(name in variants for name in OVERHEAD_PAIR)
    interleaved = interleaved_overhead(args.data, args.full) if both else {"error": "a or b not run"}
    if "error" in interleaved:
        print(f"\nLightning overhead, interleaved in one process: failed: {interleaved['error']}")
    else:
        verdict = "meets" if interleaved["median"] >= TARGET else "misses"
        print(
            f"\nLightning overhead: b / a = {interleaved['median']:.3f} ({verdict} the {TARGET} target), the median "
            f"over {interleaved['blocks']} {interleaved['block_steps']}-step blocks of `fit` (as configured, with its "
            f"logger and callbacks), each against the plain-loop blocks run just before and after it in the same "
            f"process: "
            f"{interleaved['trainer_ms_per_step']:.1f} vs {interleaved['plain_ms_per_step']:.1f} ms per step"
        )
    if overhead is not None:
        each = ", ".join(f"{ratio:.3f}" for ratio in overhead["per_round"])
        print(f"Separate processes, back to back: b / a = {overhead['median']:.3f} (pairs {each})")
    record = {
        "full": args.full,
        "steps": steps,
        "rounds": rounds,
        "peak_flops": peak,
        "rows": rows,
        "runs": runs,
        "overhead": overhead,
        "interleaved_overhead": interleaved,
    }
    write_results("lm_throughput", record)
    fail_on_errors(rows, "variant")


if __name__ == "__main__":
    main()
