"""What every run shows in TensorBoard beside its losses: learning rate, gradient norm, throughput, and the
hyperparameters next to the final metrics (the HParams tab). The CLI adds it to every run; the module names
what its throughput counts (`throughput_unit`, `units_in(batch)`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn

from lightning_llm.logging_steps import is_logging_step
from lightning_llm.parallel import gradient_norm

PlainValue = bool | int | float | str


class TrainingLogs(pl.Callback):
    """Every `trainer.log_every_n_steps` optimizer steps: `train/lr`, `train/grad_norm` (before clipping) and
    `train/<unit>_per_sec`; the run's hyperparameters for the HParams tab, which shows them next to the last
    value of each of the run's scalars (its final metrics).

    Only the run's hyperparameters are written, not an HParams "experiment" (the list of metric columns):
    TensorBoard shows the experiment of one run only, so a logdir holding GPT and classifier runs would lose
    the other kind's metrics; without one it lists every scalar of every run. For the same reason set
    `default_hp_metric: false` on the TensorBoardLogger (the shipped configs do), or Lightning writes an
    experiment whose only metric is a placeholder `hp_metric`.

    The throughput counts what the module says: its `throughput_unit` (e.g. "tokens", "examples"; the tag is
    `train/<unit>_per_sec`) and `units_in(batch)`, the number of them in one batch of one process; a module
    without them is measured in batches.
    """

    def __init__(self) -> None:
        self._counted = 0  # units trained on by this process since the last throughput log
        self._since = time.perf_counter()  # when that count started, shifted past validation pauses
        self._paused_at: float | None = None
        self._stepped = False  # whether this batch ended with an optimizer step (not so while accumulating)

    # --- HParams: the session starts with its hyperparameters, and ends (status: success) when fit ends ---
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        # `hparams`, not `hparams_initial`: the language model drops linked values its network does not take.
        params = plain_hyperparameters({**getattr(datamodule, "hparams", {}), **pl_module.hparams})
        _write_session_summary(trainer, params, start=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _write_session_summary(trainer, {}, start=False)

    # --- learning rate, gradient norm and throughput, on the steps Lightning writes logs ---
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._counted, self._since = 0, time.perf_counter()
        self.unit = getattr(pl_module, "throughput_unit", "batches")
        self.count: Callable[[Any], int] = getattr(pl_module, "units_in", lambda batch: 1)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._stepped = True
        if is_logging_step(trainer, trainer.global_step + 1):  # global_step counts this step once it is done
            pl_module.log("train/grad_norm", gradient_norm(pl_module, trainer.strategy.model))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._counted += self.count(batch)
        stepped, self._stepped = self._stepped, False
        if not (stepped and is_logging_step(trainer, trainer.global_step)):
            return
        now = time.perf_counter()
        units_per_sec = self._counted * trainer.world_size / max(now - self._since, 1e-9)
        self._counted, self._since = 0, now
        pl_module.log(f"train/{self.unit}_per_sec", units_per_sec, prog_bar=True, rank_zero_only=True)
        pl_module.log("train/lr", trainer.optimizers[0].param_groups[0]["lr"], rank_zero_only=True)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation inside fit (trainer.validate() pauses no training clock).
        self._paused_at = time.perf_counter() if trainer.state.fn == TrainerFn.FITTING else None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._paused_at is not None:  # validation time is not training time
            self._since += time.perf_counter() - self._paused_at
            self._paused_at = None


def _write_session_summary(trainer: pl.Trainer, params: dict[str, PlainValue], start: bool) -> None:
    # Not logger.log_hyperparams(params, metrics): it writes an experiment (see TrainingLogs) and logs the
    # metrics' placeholder values as scalars at step 0, a false first point on their curves.
    from torch.utils.tensorboard.summary import hparams

    if not trainer.is_global_zero:
        return
    _, session_start, session_end = hparams(params, {})
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment._get_file_writer().add_summary(session_start if start else session_end)


def plain_hyperparameters(hparams: Mapping[str, Any], prefix: str = "") -> dict[str, PlainValue]:
    """Flatten hparams into `name: bool | int | float | str`, what the HParams tab can show and filter.

    A `{class_path, init_args}` entry (a module injected by the CLI) becomes `name: <class_path>` plus
    `name.<arg>` per init arg; lists, None and other objects become their text; private keys are left out.
    """
    plain: dict[str, PlainValue] = {}
    for key, value in hparams.items():
        if str(key).startswith("_"):
            continue  # e.g. LightningCLI's `_instantiator`
        name = f"{prefix}{key}"
        value = value.as_dict() if hasattr(value, "as_dict") else value  # a jsonargparse Namespace
        if isinstance(value, Mapping) and "class_path" in value:
            plain[name] = str(value["class_path"])
            plain.update(plain_hyperparameters(value.get("init_args") or {}, prefix=f"{name}."))
        elif isinstance(value, Mapping):
            plain.update(plain_hyperparameters(value, prefix=f"{name}."))
        elif isinstance(value, bool | int | float | str):
            plain[name] = value
        else:
            plain[name] = str(value)
    return plain
