"""The Lightning overhead of the GPT path, measured in one process: Trainer steps and plain-loop steps in
alternating blocks.

`lightning-llm fit --config configs/gpt-shakespeare-char.yaml` runs on the CPU as a user runs it (its logger,
progress bar, checkpoint and logging callbacks; validation off). A callback pauses it every `block_steps`
steps and runs as many steps of a plain PyTorch loop (bench/plain_loop.py's: the same AdamW groups,
schedule, clipping and data windows) on a twin of the same initial model. Each Trainer block is the wall
time between two pauses: every hook, log and batch fetch of its steps. Each Trainer block is compared with
the mean of the plain blocks just before and after it, a second away on either side, so a slow spell or a
steady drift of a shared machine falls on both paths alike, which separate processes cannot give.

    python bench/lm_overhead.py [--blocks 12] [--block_steps 25] [CLI arguments, e.g. --trainer.enable_progress_bar false]

The last line is JSON: each Trainer block's plain / Trainer time (the tokens/s ratio of b to a), their
median, and the steps each path trained.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from harness import ROOT, TINY_SHAKESPEARE, require_corpus, script_parser
from lightning.pytorch import Callback, LightningModule, Trainer
from plain_loop import adamw, train_step

from lightning_llm.lit.schedules import warmup_cosine

CONFIG = ROOT / "configs" / "gpt-shakespeare-char.yaml"


class PlainLoop:
    """bench/plain_loop.py's optimizer and step on its own model copy and batch iterator."""

    def __init__(
        self, model: torch.nn.Module, hparams: Any, decay_steps: int, make_batches: Callable[[], Any]
    ) -> None:
        self.model, self.hparams, self.decay_steps = model, hparams, decay_steps
        self.make_batches = make_batches  # a new iterable of (x, y) batches, one epoch
        self.batches = iter(make_batches())
        self.optimizer = adamw(
            model, hparams.learning_rate, hparams.weight_decay, tuple(hparams.betas), hparams.eps
        )
        self.step = 0

    def _next_batch(self) -> Any:
        try:
            return next(self.batches)
        except StopIteration:  # a new epoch of windows, as plain_loop.train does
            self.batches = iter(self.make_batches())
            return next(self.batches)

    def run(self, steps: int, clip: float) -> float:
        """Seconds for `steps` training steps."""
        hp = self.hparams
        start = time.perf_counter()
        for _ in range(steps):
            scale = warmup_cosine(self.step, hp.warmup_steps, self.decay_steps, hp.min_lr / hp.learning_rate)
            train_step(self.model, self.optimizer, self._next_batch(), hp.learning_rate * scale, clip)
            self.step += 1
        return time.perf_counter() - start


class Interleave(Callback):
    """After `warmup` Trainer steps (and as many plain ones), alternates plain and Trainer blocks, starting and
    ending with a plain one: `blocks` Trainer blocks between `blocks + 1` plain blocks."""

    def __init__(self, twin: torch.nn.Module, warmup: int, blocks: int, block_steps: int) -> None:
        self.twin, self.warmup, self.blocks, self.block_steps = twin, warmup, blocks, block_steps
        self.plain_s: list[float] = []
        self.trainer_s: list[float] = []
        self._mark: float | None = None
        self._loop: PlainLoop | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        decay = pl_module.hparams.decay_steps or trainer.max_steps
        self._loop = PlainLoop(self.twin, pl_module.hparams, decay, trainer.datamodule.train_dataloader)
        self._loop.run(self.warmup, trainer.gradient_clip_val)  # untimed, as the Trainer's first steps are

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        done = trainer.global_step - self.warmup  # timed Trainer steps so far
        if done < 0 or done % self.block_steps:
            return
        if self._mark is not None:
            self.trainer_s.append(time.perf_counter() - self._mark)
        if len(self.plain_s) <= self.blocks:
            self.plain_s.append(self._loop.run(self.block_steps, trainer.gradient_clip_val))
        self._mark = time.perf_counter()

    @property
    def plain_steps(self) -> int:
        return self._loop.step if self._loop else 0


def measure(
    data: str, blocks: int, block_steps: int, warmup: int, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Fit the config for `warmup + blocks * block_steps` steps, interleaved; `overrides` are CLI arguments."""
    from lightning_llm.cli import build_cli

    if min(blocks, block_steps, warmup) < 1:
        raise ValueError("blocks, block_steps and warmup must be at least 1")

    steps = warmup + blocks * block_steps
    with tempfile.TemporaryDirectory() as work:
        args = ["--config", str(CONFIG), "--data.path", data, "--data.cache_dir", f"{work}/cache"]
        args += ["--trainer.logger.init_args.save_dir", f"{work}/logs", "--trainer.max_steps", str(steps)]
        args += ["--trainer.limit_val_batches", "0", "--model.init_args.decay_steps", "2000"]
        # the twin trains on the CPU, so the Trainer does too
        args += ["--trainer.accelerator", "cpu", "--trainer.devices", "1", *overrides]
        torch.manual_seed(0)
        cli = build_cli(args, run=False)
        interleave = Interleave(copy.deepcopy(cli.model.model), warmup, blocks, block_steps)
        cli.trainer.callbacks.append(interleave)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    plain_s, trainer_s = interleave.plain_s, interleave.trainer_s
    if len(trainer_s) < blocks:
        raise RuntimeError(
            f"fit stopped after {cli.trainer.global_step} of {steps} steps (see its log above), so its blocks "
            "do not pair up with the plain loop's"
        )
    # each Trainer block against the mean of the plain blocks on either side of it
    ratios = [(plain_s[i] + plain_s[i + 1]) / 2 / trainer_s[i] for i in range(len(trainer_s))]
    tokens = block_steps * cli.datamodule.batch_size * cli.datamodule.block_size
    return {
        "blocks": len(ratios),
        "block_steps": block_steps,
        "warmup_steps": warmup,
        "plain_steps": interleave.plain_steps,
        "trainer_steps": cli.trainer.global_step,
        "plain_ms_per_step": 1000 * statistics.median(plain_s) / block_steps,
        "trainer_ms_per_step": 1000 * statistics.median(trainer_s) / block_steps,
        "plain_tokens_per_s": tokens * len(plain_s) / sum(plain_s),
        "trainer_tokens_per_s": tokens * len(trainer_s) / sum(trainer_s),
        "per_block": ratios,
        "median": statistics.median(ratios),
    }


def main() -> None:
    parser = script_parser(__doc__, data=TINY_SHAKESPEARE)
    parser.add_argument("--blocks", type=int, default=12, help="Trainer blocks (and one plain block more)")
    parser.add_argument("--block_steps", type=int, default=25, help="steps in each block")
    parser.add_argument("--warmup", type=int, default=15, help="untimed first steps of each")
    args, overrides = (
        parser.parse_known_args()
    )  # the rest go to the CLI, e.g. --trainer.enable_progress_bar false
    require_corpus(args.data)
    result = measure(args.data, args.blocks, args.block_steps, args.warmup, overrides)
    each = ", ".join(f"{ratio:.3f}" for ratio in result["per_block"])
    print(
        f"Lightning overhead, interleaved in one process: {result['blocks']} Trainer blocks of {args.block_steps} "
        f"steps between plain ones, plain {result['plain_ms_per_step']:.1f} ms/step, Trainer {result['trainer_ms_per_step']:.1f} "
        f"ms/step (medians); b / a per Trainer block: {each}",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
