"""Validation and test metrics of a classifier (accuracy, F1, precision, recall; MSE and correlations for
regression) and the confusion-matrix figure in TensorBoard. The module's evaluation steps return their
predictions and labels; this callback keeps the running counts and logs them once per evaluation."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef


class ClassificationMetrics(pl.Callback):
    """Logs `val/<metric>` and `test/<metric>` from the `predictions` and `labels` the module's
    `validation_step` / `test_step` return, and `val/confusion_matrix` (a figure) for classes.

    Args:
        confusion_matrix: Draw the validation confusion matrix as a TensorBoard figure after each validation.
    """

    def __init__(self, confusion_matrix: bool = True) -> None:
        self.confusion_matrix = confusion_matrix
        self._metrics: dict[str, MetricCollection] = {}
        self._confusion: MulticlassConfusionMatrix | None = None

    def logged_metrics(self, pl_module: pl.LightningModule, split: str) -> list[str]:
        """The metrics this callback logs for `pl_module` in an evaluation of `split` (val, test)."""
        return [f"{split}/{name}" for name in metric_names(pl_module.num_labels)]

    # --- validation ---
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("val", pl_module)
        if self.confusion_matrix and not pl_module.regression:
            self._confusion = MulticlassConfusionMatrix(pl_module.num_labels).to(pl_module.device)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *_: Any
    ) -> None:
        self._update("val", outputs)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log("val", pl_module)
        if self._confusion is None:
            return
        matrix = self._confusion.compute().cpu()
        self._confusion = None
        if trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            add_figure = getattr(logger.experiment, "add_figure", None)
            if callable(add_figure):
                figure = confusion_figure(matrix, pl_module.label_names)
                add_figure("val/confusion_matrix", figure, trainer.global_step)

    # --- test ---
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("test", pl_module)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *_: Any
    ) -> None:
        self._update("test", outputs)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log("test", pl_module)

    # --- shared ---
    def _start(self, split: str, pl_module: pl.LightningModule) -> None:
        self._metrics[split] = metrics_for(pl_module.num_labels).to(pl_module.device)

    def _update(self, split: str, outputs: Any) -> None:
        if not isinstance(outputs, dict) or "predictions" not in outputs:
            raise TypeError(
                "ClassificationMetrics needs the module's validation_step/test_step to return "
                "{'predictions': ..., 'labels': ...}"
            )
        self._metrics[split].update(outputs["predictions"], outputs["labels"])
        if split == "val" and self._confusion is not None:
            self._confusion.update(outputs["predictions"], outputs["labels"])

    def _log(self, split: str, pl_module: pl.LightningModule) -> None:
        metrics = self._metrics.pop(split)
        # compute() gathers the counts of every process itself, so no further sync is needed
        values = {f"{split}/{name}": value for name, value in metrics.compute().items()}
        pl_module.log_dict(values, prog_bar=split == "val", sync_dist=False)


def metric_names(num_labels: int) -> list[str]:
    """What `val/<name>` and `test/<name>` this callback logs for a task with `num_labels` outputs."""
    return list(metrics_for(num_labels).keys())


def metrics_for(num_labels: int) -> MetricCollection:
    """The metrics of a task with `num_labels` outputs (1: regression)."""
    if num_labels == 1:
        return MetricCollection(
            {"mse": MeanSquaredError(), "pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()}
        )
    if num_labels == 2:
        return MetricCollection(
            {
                "acc": BinaryAccuracy(),
                "f1": BinaryF1Score(),
                "precision": BinaryPrecision(),
                "recall": BinaryRecall(),
            }
        )
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_labels, average="micro"),
            "f1": MulticlassF1Score(num_labels, average="macro"),
            "precision": MulticlassPrecision(num_labels, average="macro"),
            "recall": MulticlassRecall(num_labels, average="macro"),
        }
    )


def confusion_figure(matrix: torch.Tensor, label_names: list[str]) -> Any:
    """A matplotlib figure of the confusion matrix (rows: true class, columns: predicted), counts written in."""
    from matplotlib.figure import Figure

    size = max(3.0, 0.6 * len(label_names) + 2.0)
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    axes.imshow(matrix.numpy(), cmap="Blues")
    axes.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    axes.set_yticks(range(len(label_names)), label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.max().item() / 2
    for true, row in enumerate(matrix.tolist()):
        for predicted, count in enumerate(row):
            color = "white" if count > threshold else "black"
            axes.text(predicted, true, str(count), ha="center", va="center", color=color)
    figure.tight_layout()
    return figure
