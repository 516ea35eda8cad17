"""Training health: a NaN or infinite loss ends the run at once, naming the step, before anything is saved.

The checks run before the run's checkpoint callbacks (Lightning runs those last, and the CLI puts this
callback first), so a checkpoint written at a validation or an epoch end holds finite weights with a finite
validation loss (one written every N training steps is checked for its loss only).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import torch

from lightning_llm.checkpoint_files import read_checkpoint
from lightning_llm.errors import UserError


class Diverged(UserError):
    """A run whose loss, metric or weights became NaN or infinite, at `step`."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class StopOnNonFiniteLoss(pl.Callback):
    """Raise a UserError when the training loss, a validation metric or a weight is NaN or infinite."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            self._stop(trainer, f"the training loss became {loss.item()} at step {trainer.global_step}")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # evaluating alone trains and saves nothing
            return
        for name, value in trainer.callback_metrics.items():
            if name.startswith("val") and not math.isfinite(float(value)):
                self._stop(
                    trainer,
                    f"the validation metric {name} became {float(value)} at step {trainer.global_step}",
                )
        self._check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_weights(trainer, pl_module)  # checkpoints may be written at the end of an epoch

    def _check_weights(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        broken = next((n for n, p in pl_module.named_parameters() if not bool(torch.isfinite(p).all())), None)
        if broken is not None:
            self._stop(trainer, f"the weight {broken} became NaN or infinite by step {trainer.global_step}")

    def _stop(self, trainer: pl.Trainer, what: str) -> None:
        newest = newest_checkpoint(trainer)
        clip = "" if getattr(trainer, "gradient_clip_val", None) else " or --trainer.gradient_clip_val 1.0"
        fix = f"start again with a lower model.learning_rate{clip}"
        if newest and clip:
            fix = f"resume from it with --trainer.gradient_clip_val 1.0, or {fix}"
        kept = f"the newest checkpoint of this run, {newest}" if newest else "this run wrote no checkpoint"
        raise Diverged(f"{what}; nothing was saved from then on, and {kept}: {fix}", trainer.global_step)


def newest_checkpoint(trainer: pl.Trainer) -> str:
    """The run's newest checkpoint file and the step it holds, in words; empty when it wrote none."""
    written = [
        Path(path)
        for callback in trainer.checkpoint_callbacks
        for path in (getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", ""))
        if path and Path(path).is_file()
    ]
    if not written:
        return ""
    newest = max(written, key=lambda path: path.stat().st_mtime)
    try:
        step = read_checkpoint(newest).get("global_step", "?")
    except UserError:  # unreadable: still name the file
        step = "?"
    return f"{newest} (step {step})"
