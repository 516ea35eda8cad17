"""The training steps whose values Lightning writes to the loggers: modules log their loss only then, and
callbacks their rates, so a step that writes nothing pays nothing for it."""

from __future__ import annotations

import lightning.pytorch as pl


def logs_this_step(trainer: pl.Trainer) -> bool:
    """Whether the training batch now running is one whose `on_step` values Lightning writes to the loggers,
    or the run's last batch (of the last epoch, or at `max_steps`).

    A module that logs its training loss only then saves the ~3 ms each `self.log` call costs (4% of a step
    of the 4 x 128 GPT recipe). The progress bar and `trainer.callback_metrics["train/loss"]` then hold the
    loss of the latest such step, and the last one of a run is always there.
    """
    step = trainer.global_step + 1
    max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1  # -1: no epoch limit
    last = trainer.is_last_batch and 0 <= max_epochs <= trainer.current_epoch + 1
    return is_logging_step(trainer, step) or trainer.should_stop or last or step >= trainer.max_steps > 0


def is_logging_step(trainer: pl.Trainer, step: int) -> bool:
    # The steps at which Lightning writes `on_step` values to the loggers.
    return trainer.log_every_n_steps > 0 and step > 0 and step % trainer.log_every_n_steps == 0
