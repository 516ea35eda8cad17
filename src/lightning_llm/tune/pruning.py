"""Report each validation of a trial to its study, by global step, and stop the run when the pruner says so.

By step rather than epoch: a pretraining run is one long epoch, and its validations come every N steps.
"""

from __future__ import annotations

import math

from lightning.pytorch import Callback, LightningModule, Trainer


class ReportToTrial(Callback):
    """Sends `metric` after every validation to the optuna `trial` and keeps the best value seen (what the
    run's ModelCheckpoint keeps); when the trial should be pruned, the trainer stops at that step."""

    def __init__(self, trial, metric: str, direction: str) -> None:
        self.trial = trial
        self.metric = metric
        self.minimize = direction == "minimize"
        self.best: float | None = None
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        if not math.isfinite(value):
            return  # StopOnNonFiniteLoss ends such a run with its own message
        if self.best is None or (value < self.best if self.minimize else value > self.best):
            self.best = value
        self.trial.report(value, step=trainer.global_step)
        if self.trial.should_prune():
            self.pruned_at = trainer.global_step
            trainer.should_stop = True
