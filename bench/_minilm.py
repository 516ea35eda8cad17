"""The MiniLM-on-SST-2 pieces the classifier benches share: the project's module, data module and Trainer
built from configs/minilm-sst2.yaml exactly as `lightning-llm fit` builds them, batch counting, and one
dev-accuracy function applied to every trained model alike."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from harness import ROOT, SST2
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer

CONFIG = ROOT / "configs" / "minilm-sst2.yaml"


class BatchStats:
    """Examples, real tokens and pad tokens of the timed batches, and the time they took."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.examples = self.tokens = self.pad_tokens = 0
        self.started: float | None = None
        self.finished = 0.0
        # CPU seconds of this process too: on a shared machine they vary less than the wall clock.
        self.cpu_started = self.cpu_finished = 0.0

    def batch_start(self, step: int, attention_mask: torch.Tensor) -> None:
        if step < self.warmup_steps:
            return
        if self.started is None:
            self.started, self.cpu_started = time.perf_counter(), time.process_time()
        real = int(attention_mask.sum())
        self.examples += attention_mask.shape[0]
        self.tokens += real
        self.pad_tokens += attention_mask.numel() - real

    def batch_end(self, step: int) -> None:
        if step >= self.warmup_steps:
            self.finished, self.cpu_finished = time.perf_counter(), time.process_time()

    def summary(self) -> dict[str, Any]:
        seconds = self.finished - (self.started or self.finished)
        cpu_seconds = self.cpu_finished - self.cpu_started
        return {
            "examples": self.examples,
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
            "examples_per_s": self.examples / seconds if seconds else None,
            "examples_per_cpu_s": self.examples / cpu_seconds if cpu_seconds else None,
            # Short runs see a few batches only: tokens/s does not depend on which lengths they drew.
            "tokens_per_s": self.tokens / seconds if seconds else None,
            "pad_fraction": self.pad_tokens / max(1, self.tokens + self.pad_tokens),
        }


class LightningBatchStats(Callback):
    """Feeds `BatchStats` from inside the Lightning fit loop (steps counted by the optimizer step)."""

    def __init__(self, stats: BatchStats) -> None:
        self.stats = stats

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.stats.batch_start(trainer.global_step, batch["attention_mask"])

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        # global_step has already counted this batch's optimizer step.
        self.stats.batch_end(trainer.global_step - 1)


# The peers these benches time (the HF Trainer, a plain loop) train AutoModelForSequenceClassification as it
# loads: dropout 0.1 in the encoder. The project's side trains the same network.
PEER_RECIPE = ["--model.init_args.backbone.init_args.encoder_dropout", "0.1"]


def build_fit(overrides: Sequence[str], callbacks: Sequence[Callback], log_dir: str) -> Any:
    """The LightningCLI of `lightning-llm fit --config configs/minilm-sst2.yaml <PEER_RECIPE> <overrides>`,
    not yet run: its `.model`, `.datamodule` and `.trainer` (with `callbacks` added) are what a user's run
    gets."""
    from lightning_llm.cli import build_cli

    args = [
        "--config",
        str(CONFIG),
        "--data.data_dir",
        str(SST2),
        "--trainer.logger.init_args.save_dir",
        log_dir,
        *PEER_RECIPE,
    ]
    return build_cli([*args, *overrides], run=False, callbacks=callbacks)


@torch.inference_mode()
def dev_accuracy(model: torch.nn.Module, datamodule: LightningDataModule) -> float:
    """Accuracy of a Hugging Face sequence classifier on the data module's validation batches."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in datamodule.val_dataloader():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        total += len(batch["labels"])
    model.train(was_training)
    return correct / total


def pretokenised_sst2() -> tuple[Any, str]:
    """The data module of configs/minilm-sst2.yaml set up for fit with the backbone's tokenizer, and the
    pretrained folder: the project's reader and tokeniser give the ids a `datasets.map(tokenizer)` would, so
    the HF peers train on the same pre-tokenised texts."""
    import yaml

    from lightning_llm.data.classification import TextClassificationDataModule
    from lightning_llm.models.hf_encoder import HFTextEncoder
    from lightning_llm.pretrained import resolve_pretrained

    config = yaml.safe_load(CONFIG.read_text())
    pretrained = config["model"]["init_args"]["backbone"]["init_args"]["pretrained"]
    datamodule = TextClassificationDataModule(**{**config["data"]["init_args"], "data_dir": str(SST2)})
    datamodule.tokenizer = HFTextEncoder(pretrained)
    datamodule.setup("fit")
    return datamodule, resolve_pretrained(pretrained)
