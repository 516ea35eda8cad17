"""LightningModule for fine-tuning a classifier: what *training* one means (loss, optimizer groups, schedule,
freezing and unfreezing, LoRA, logs). The network comes in as `backbone`, a module from `models/`:

- `lightning_llm.models.hf_encoder.HFEncoderClassifier`: a pretrained BERT-family encoder with a new head;
- `lightning_llm.models.gpt_classifier.GPTClassifier`: the GPT you pretrained with `lightning-llm fit`.

Both give logits for right-padded token ids, freeze the same way (`freeze(mode, frozen_layers)`), name their
new head (`head_parameters()`) and own their tokenizer, which the data module receives.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR

from lightning_llm.errors import UserError
from lightning_llm.lit.hparams import built_by_cli
from lightning_llm.lit.optim import adamw_groups, check_adamw_settings
from lightning_llm.lit.scale_out import ScaleOutHooks
from lightning_llm.lit.schedules import warmup_linear
from lightning_llm.logging_steps import logs_this_step
from lightning_llm.models.lora import LoRA, adapter_parameters, add_lora, merged_copy, set_merged

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Batch entries that identify rows; predictions carry them through so a writer can print them.
ROW_KEYS = ("row", "id", "text")


DEFAULT_BACKBONE_LR_RATIO = 0.1


class SequenceClassifier(ScaleOutHooks, LightningModule):
    """Fine-tunes `backbone`; cross-entropy for 2+ classes, MSE when the backbone has one output (regression).

    Args:
        backbone: The network (`class_path` / `init_args` in YAML): `HFEncoderClassifier` or `GPTClassifier`.
        label_names: Class names in class-id order, kept in the checkpoint so predictions print names (the
            CLI copies them from the data).
        learning_rate: Peak AdamW learning rate, reached after warmup and decayed linearly to 0.
        weight_decay: AdamW weight decay (never on biases and LayerNorm weights).
        warmup_ratio: Fraction of all optimizer steps spent warming the learning rate up from 0.
        freeze: Parameters that stay fixed: `none`; the whole `backbone` (only the head trains); or
            `lower_layers`: the embeddings and the first `frozen_layers` blocks.
        frozen_layers: With `freeze: lower_layers`, how many blocks above the embeddings stay frozen (0 freezes
            the embeddings only).
        unfreeze_at_epoch: With `freeze` set, the epoch (0-based) at which the frozen parameters start
            training, at `learning_rate * backbone_lr_ratio` (like Lightning's `BackboneFinetuning`).
        backbone_lr_ratio: With `unfreeze_at_epoch`, the unfrozen parameters' learning rate relative to
            `learning_rate` (0.1 when not given).
        lora: Train LoRA adapters (and the head) instead of the backbone's weights, e.g. `{r: 8, alpha: 16}`;
            null trains the weights themselves.
        compile: Compile each block with `torch.compile` when training starts (in place, so checkpoints keep
            plain parameter names). Pays off on GPUs; on CPUs compiling takes minutes.
        activation_checkpointing: Recompute each block's activations in the backward pass (less memory for long
            texts or big batches, about a third more compute).
    """

    def __init__(
        self,
        backbone: nn.Module,
        label_names: list[str] | None = None,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.06,
        freeze: Literal["none", "backbone", "lower_layers"] = "none",
        frozen_layers: int = 0,
        unfreeze_at_epoch: int | None = None,
        backbone_lr_ratio: float | None = None,
        lora: LoRA | None = None,
        compile: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        num_labels = backbone.num_labels
        if label_names is not None and len(label_names) != num_labels:
            raise UserError(f"label_names {label_names} must have one name per output ({num_labels}).")
        if frozen_layers and freeze != "lower_layers":
            raise UserError(
                "model.frozen_layers counts the layers `freeze: lower_layers` keeps; set that freeze mode."
            )
        if freeze == "none" and unfreeze_at_epoch is not None:
            raise UserError("unfreeze_at_epoch needs something frozen; set freeze: backbone or lower_layers.")
        if lora is not None and freeze != "none":
            raise UserError(
                "model.lora already keeps every backbone weight frozen (only adapters and head train); "
                "leave model.freeze at none"
            )
        check_adamw_settings(learning_rate, weight_decay)
        if backbone_lr_ratio is not None and unfreeze_at_epoch is None:
            raise UserError(
                "model.backbone_lr_ratio sets the rate of parameters unfrozen at model.unfreeze_at_epoch; "
                "set that epoch too, or drop backbone_lr_ratio"
            )
        if backbone_lr_ratio is not None and not 0.0 < backbone_lr_ratio < math.inf:
            raise UserError(f"model.backbone_lr_ratio is {backbone_lr_ratio}: it must be a positive number")
        if frozen_layers < 0 or (unfreeze_at_epoch is not None and unfreeze_at_epoch < 0):
            raise UserError("model.frozen_layers and model.unfreeze_at_epoch must be 0 or more")
        if not 0.0 <= warmup_ratio < 1.0:
            raise UserError(f"warmup_ratio must be in [0, 1) (got {warmup_ratio}).")
        # Outside the CLI the injected backbone cannot be described by its config, so it is left out of hparams.
        self.save_hyperparameters(ignore=[] if built_by_cli() else ["backbone"])
        if dataclasses.is_dataclass(self.hparams.get("lora")):  # plain values, so the checkpoint loads safely
            self.hparams["lora"] = dataclasses.asdict(self.hparams["lora"])
        self.backbone = backbone
        self.num_labels = num_labels
        self.label_names = list(label_names or [str(index) for index in range(num_labels)])
        self.regression = num_labels == 1
        self.new_weights = list(backbone.new_weights)
        if lora is not None:
            add_lora(backbone, lora, backbone.lora_targets, backbone.head_parameters())
        self.frozen = backbone.freeze(freeze, frozen_layers) if lora is None else []
        self.unfrozen = False
        # one text of up to 128 tokens: the model summary then counts its FLOPs instead of printing 0
        length = min(128, backbone.tokenizer.max_length)
        self.example_input_array = {"input_ids": torch.ones(1, length, dtype=torch.long)}

    @property
    def network(self) -> nn.Module:
        return self.backbone

    @network.setter
    def network(self, network: nn.Module) -> None:  # an inference copy: merged, quantized
        self.backbone = network

    @property
    def tokenizer(self) -> Any:
        """The backbone's tokenizer, which the data module encodes with."""
        return self.backbone.tokenizer

    # Model.

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (batch, num_labels) for token ids (batch, time) padded on the right."""
        return self.backbone(input_ids, attention_mask, token_type_ids)

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(**{key: batch[key] for key in MODEL_INPUTS if key in batch})

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Losses in float32: under bf16 autocast the logits are bfloat16.
        if self.regression:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def _predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1).float() if self.regression else logits.argmax(dim=-1)

    # Steps. Evaluation steps return predictions and labels for the metrics callback.

    def training_step(self, batch: dict[str, Any], batch_index: int) -> torch.Tensor:
        loss = self._loss(self._logits(batch), batch["labels"])
        if self._trainer is None or logs_this_step(self._trainer):  # see logs_this_step
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_index: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_index: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, Any], split: str) -> dict[str, torch.Tensor]:
        logits = self._logits(batch)
        labels = batch["labels"]
        loss = self._loss(logits, labels)
        # sync_dist: the mean over every process's rows (Lightning weights each rank's mean by its row count)
        self.log(f"{split}/loss", loss, prog_bar=split == "val", batch_size=len(labels), sync_dist=True)
        return {"predictions": self._predictions(logits), "labels": labels}

    def evaluation_metrics(self, split: str) -> list[str]:
        """The metrics an evaluation logs itself; accuracy and the rest come from the ClassificationMetrics
        callback, which the CLI adds."""
        return [f"{split}/loss"]

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

    # What `train/<unit>_per_sec` counts (the CLI's TrainingLogs callback reads these two).
    throughput_unit = "examples"

    def units_in(self, batch: dict[str, Any]) -> int:
        return len(batch["labels"])

    # Optimisation (the scale-out hooks come from ScaleOutHooks).

    def configure_optimizers(self) -> dict[str, Any]:
        frozen_ids = {id(p) for p in self.frozen}
        trainable = [p for p in self.parameters() if p.requires_grad and id(p) not in frozen_ids]
        groups = adamw_groups(trainable, self.hparams.weight_decay, lr=self.hparams.learning_rate)
        if self.unfrozen:  # resumed from a checkpoint saved after the unfreeze epoch
            groups += adamw_groups(self.frozen, self.hparams.weight_decay, lr=self._backbone_lr)
        optimizer = torch.optim.AdamW(
            groups,
            lr=self.hparams.learning_rate,
            # One fused kernel for all parameters: about 3x faster than the per-tensor loop on a CPU.
            fused=self.device.type in ("cpu", "cuda"),
        )
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup_steps = int(self.hparams.warmup_ratio * total_steps)
        schedule = functools.partial(warmup_linear, warmup_steps=warmup_steps, total_steps=total_steps)
        scheduler = LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def setup(self, stage: str) -> None:
        if self.hparams.unfreeze_at_epoch is not None and self.trainer.world_size > 1:
            # DDP and FSDP fix at wrapping time which parameters they synchronise and shard
            raise UserError(
                f"model.unfreeze_at_epoch works in one process; this run has {self.trainer.world_size}. "
                "Drop unfreeze_at_epoch (freeze stays fixed), or train on one device"
            )

    def on_train_epoch_start(self) -> None:
        epoch = self.hparams.unfreeze_at_epoch
        if epoch is None or self.unfrozen or self.current_epoch < epoch:
            return
        optimizer = self.optimizers(use_pl_optimizer=False)
        scheduler = self.lr_schedulers()
        self._unfreeze()
        for group in adamw_groups(self.frozen, self.hparams.weight_decay, lr=self._backbone_lr):
            # The new groups follow the same warmup/decay curve from where it stands now.
            group["initial_lr"] = group["lr"]
            group["lr"] = group["lr"] * scheduler.lr_lambdas[0](scheduler.last_epoch)
            optimizer.add_param_group(group)
            scheduler.base_lrs.append(group["initial_lr"])
            scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])

    # LoRA: training works on unmerged adapters; prediction folds them into the weights (the same logits).

    def on_train_start(self) -> None:
        set_merged(self.backbone, False)
        self._report_new_weights()

    def on_predict_start(self) -> None:
        set_merged(self.backbone, True)
        self._report_new_weights()

    def on_predict_end(self) -> None:
        set_merged(self.backbone, False)

    def merged_backbone(self) -> nn.Module:
        """The backbone with LoRA folded in and no peft layers left (a copy), or the backbone itself."""
        return merged_copy(self.backbone) if adapter_parameters(self.backbone) else self.backbone

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a Hugging Face folder loadable by `transformers.pipeline("text-classification", ...)`."""
        backbone = self.merged_backbone()
        if not callable(getattr(backbone, "save_pretrained", None)):
            raise UserError(
                f"a {type(backbone).__name__} backbone has no save_pretrained of its own; `lightning-llm export` "
                "writes a GPTClassifier in the GPT-2 format (models/gpt2_format.py)"
            )
        backbone.save_pretrained(folder, self.label_names)

    # The new head (and anything the pretrained folder lacked) is reported once a run starts, unless a
    # checkpoint restored it.

    def on_validation_start(self) -> None:
        self._report_new_weights()

    def on_test_start(self) -> None:
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The backbone is rebuilt from its pretrained source on loading; its tokenizer must still be this one.
        description = getattr(self.backbone.tokenizer, "description", None)
        if description is not None:
            checkpoint["backbone_tokenizer"] = description

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        fine_tuned_with = checkpoint.get("backbone_tokenizer")
        if fine_tuned_with is not None and fine_tuned_with != getattr(
            self.backbone.tokenizer, "description", None
        ):
            raise UserError(
                "this checkpoint was fine-tuned with another tokenizer than the pretrained backbone it names has "
                "now (was that checkpoint retrained?); point model.init_args.backbone.init_args.checkpoint at "
                "the checkpoint it was fine-tuned from"
            )
        self.new_weights = []  # the checkpoint holds every weight, the fine-tuned head included
        # A run saved after unfreezing has the backbone's parameter groups in its optimizer state; they
        # must exist before that state is loaded (Lightning calls this before configure_optimizers).
        states = checkpoint.get("optimizer_states") or []
        if self.frozen and states and len(states[0]["param_groups"]) > 2:
            self._unfreeze()

    @property
    def _backbone_lr(self) -> float:
        ratio = self.hparams.backbone_lr_ratio
        return self.hparams.learning_rate * (DEFAULT_BACKBONE_LR_RATIO if ratio is None else ratio)

    def _unfreeze(self) -> None:
        for parameter in self.frozen:
            parameter.requires_grad_(True)
        self.unfrozen = True
