"""What a LightningModule records of how it was built, so a checkpoint can rebuild it."""

from __future__ import annotations

from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters


def built_by_cli() -> bool:
    """True inside LightningCLI's instantiation, whose hparams describe injected modules as class_path configs."""
    return _given_hyperparameters.get() is not None
