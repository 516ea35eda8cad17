"""A callback that watches a validation metric nothing logs would only fail after the first epoch
(ModelCheckpoint) or never act (EarlyStopping): name it before training starts."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer

from lightning_llm.errors import UserError

# Prefixes of the metrics evaluations log; other metrics (train/*) also come from callbacks we do not know.
EVALUATION_PREFIXES = ("val/", "test/")


def validation_metrics(trainer: Trainer, module: LightningModule) -> list[str] | None:
    """What a validation logs: the module's `evaluation_metrics("val")` and every callback's
    `logged_metrics(module, "val")`; None when the module does not list its own."""
    listed = getattr(module, "evaluation_metrics", None)
    if not callable(listed):
        return None
    names = list(listed("val"))
    for callback in trainer.callbacks:
        logged = getattr(callback, "logged_metrics", None)
        if callable(logged):
            names += logged(module, "val")
    return names


def check_monitored_metrics(trainer: Trainer, module: LightningModule) -> None:
    """Every callback's `monitor` of an evaluation metric names one that validation logs."""
    logged = validation_metrics(trainer, module)
    if logged is None:
        return
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if not isinstance(monitor, str) or not monitor.startswith(EVALUATION_PREFIXES) or monitor in logged:
            continue
        raise UserError(
            f"{type(callback).__name__} monitors {monitor}, which this {type(module).__name__} never logs "
            f"(it logs {', '.join(logged)}); set that callback's init_args.monitor (and mode) to one of them"
        )
