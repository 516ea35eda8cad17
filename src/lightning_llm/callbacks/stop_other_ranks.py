"""When rank 0 fails, the processes it started stop too, instead of waiting for it in a collective."""

from __future__ import annotations

import signal

import lightning.pytorch as pl
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher


class StopOtherRanks(pl.Callback):
    """On any exception in rank 0, kill the other processes of a run Lightning launched (it does so only for
    Ctrl-C). A copy of rank 0's error is not printed again by them (see `errors.exit_on_user_error`), and an
    error of rank 0 alone no longer leaves them waiting for the collective timeout."""

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        launcher = trainer.strategy.launcher
        if trainer.is_global_zero and isinstance(launcher, _SubprocessScriptLauncher) and launcher.procs:
            launcher.kill(signal.SIGKILL)
