"""Preemption: SIGTERM or SIGINT ends training after the current step with a resumable checkpoint."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import lightning.pytorch as pl

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop(pl.Callback):
    """On SIGTERM or SIGINT, finish the optimizer step, save `last.ckpt`, stop, and say how to resume.

    The checkpoint lands where the run's ModelCheckpoint keeps `last.ckpt` (else under the logger's
    directory), so `lightning-llm fit --config ... --ckpt_path last` picks it up.
    """

    def __init__(self) -> None:
        self.announce = True  # say how to resume; off where another command owns that (a tune trial)
        self.received: int | None = None
        self.saved_path: Path | None = None
        self._previous_handlers: dict[int, object] = {}

    def _on_signal(self, signum: int, frame) -> None:
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received, self.saved_path = None, None
        try:
            self._previous_handlers = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        except ValueError:  # not the main thread (e.g. a notebook worker): leave signals alone
            self._previous_handlers = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:  # every rank must save at the same step, whichever got the signal
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        self.saved_path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(self.saved_path)
        trainer.should_stop = True
        if trainer.is_global_zero and self.announce:
            name = signal.Signals(self.received).name if self.received else "a signal on another rank"
            print(
                f"\nStopped by {name} after step {trainer.global_step}; saved {self.saved_path}.\n"
                "Resume with the same command plus `--ckpt_path last` (or that path).",
                file=sys.stderr,
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}

    @staticmethod
    def checkpoint_path(trainer: pl.Trainer) -> Path:
        callback = trainer.checkpoint_callback
        if callback is not None and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        root = trainer.log_dir or trainer.default_root_dir
        return Path(root) / "checkpoints" / "last.ckpt"
