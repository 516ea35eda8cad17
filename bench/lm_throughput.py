"""LM training throughput: a plain PyTorch loop against the project's Trainer path, and its precision / compile variants.

Each variant runs in its own process (so peak RSS is its own) on the nanoGPT CPU recipe shape from
configs/gpt-shakespeare-char.yaml, and the table prints tokens/s, model FLOP utilisation against the
measured peak of this CPU's matmul, peak RSS, and the ratio to the plain loop.

    python bench/lm_throughput.py --steps 60            # quick
    python bench/lm_throughput.py --steps 300 --full    # the README's figures
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
VARIANTS = {
    "a_plain_loop": {},
    "b_trainer": {"precision": "32-true"},
    "c_trainer_bf16": {"precision": "bf16-mixed"},
    "d_trainer_compile": {"precision": "32-true", "compile": True},
    "e_trainer_bf16_compile": {"precision": "bf16-mixed", "compile": True},
}
SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12}


def peak_matmul_flops() -> float:
    """FLOP/s of a large fp32 matmul on this machine: the denominator of MFU on a CPU."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 1024**3 / (time.perf_counter() - start)


def run_variant(name: str, data: str, steps: int, warmup: int, shape: dict) -> dict:
    """Train `steps` steps and time the ones after `warmup` (compilation and caches excluded)."""
    import lightning.pytorch as pl

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
            callbacks=[timer],
            accelerator="cpu",
            devices=1,
        )
        trainer.fit(module, datamodule=dm)
        seconds = timer.seconds
    timed_steps = steps - warmup
    return {
        "variant": name,
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant in this process
    parser.add_argument("--full", action="store_true", help="write bench/results/lm_throughput-full.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_variant(args.one, args.data, args.steps, args.warmup, SHAPE)))
        return
    if not Path(args.data).is_file():
        sys.exit(f"error: corpus {args.data} not found; pass --data PATH to a text file")
    peak = peak_matmul_flops()
    rows = []
    for name in args.variants:
        cmd = [sys.executable, __file__, "--one", name, "--data", args.data, "--steps", str(args.steps)]
        cmd += ["--warmup", str(args.warmup)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"variant": name, "error": done.stderr.strip().splitlines()[-1][:200]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    plain = next(
        (r["tokens_per_s"] for r in rows if r["variant"] == "a_plain_loop" and "error" not in r), None
    )
    print(
        f"\nLM training, {SHAPE} on {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads,"
    )
    print(f"{args.steps} steps ({args.warmup} untimed), peak fp32 matmul {peak / 1e9:.0f} GFLOP/s\n")
    print(f"{'variant':26} {'tokens/s':>10} {'ms/step':>8} {'MFU':>6} {'RSS MB':>7} {'vs plain':>8}")
    for row in rows:
        if "error" in row:
            print(f"{row['variant']:26} failed: {row['error']}")
            continue
        row["mfu"] = row["tokens_per_s"] * row["flops_per_token"] / peak
        row["ratio_to_plain"] = row["tokens_per_s"] / plain if plain else None
        ratio = f"{row['ratio_to_plain']:.3f}x" if plain else "-"
        print(
            f"{row['variant']:26} {row['tokens_per_s']:10.0f} {row['ms_per_step']:8.1f} {row['mfu']:6.1%} "
            f"{row['peak_rss_mb']:7.0f} {ratio:>8}"
        )
    out = ROOT / "bench" / "results" / f"lm_throughput{'-full' if args.full else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "peak_flops": peak, "rows": rows}, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
