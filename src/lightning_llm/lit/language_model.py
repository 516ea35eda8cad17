"""LightningModule for pretraining: what *training* a language model means (loss, optimizer, schedule, logs)."""

from __future__ import annotations

import functools
import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn as nn

from lightning_llm.errors import UserError
from lightning_llm.lit.hparams import built_by_cli
from lightning_llm.lit.optim import adamw_groups, check_adamw_settings
from lightning_llm.lit.scale_out import ScaleOutHooks
from lightning_llm.lit.schedules import warmup_cosine
from lightning_llm.logging_steps import logs_this_step
from lightning_llm.models.sampling import filter_logits
from lightning_llm.tokenizers import Tokenizer, tokenizer_from_json


class LanguageModel(ScaleOutHooks, pl.LightningModule):
    """Trains any `model(idx, targets) -> (logits, loss)` next-token predictor (GPT, TransformerLM, ...).

    Args:
        model: The network, given in YAML by `class_path` and `init_args` (dependency injection).
        learning_rate: Peak learning rate, reached after the warmup.
        min_lr: Learning rate at the end of the cosine decay.
        warmup_steps: Optimizer steps of linear warmup.
        decay_steps: Optimizer step at which the cosine reaches min_lr; defaults to the run's total steps.
        weight_decay: AdamW decay on matrices and embeddings (tensors with dim >= 2); never on biases or norms.
        betas: AdamW betas.
        eps: AdamW epsilon.
        compile: Compile each block of the model with `torch.compile` in `configure_model`, in place, so it
            composes with DDP and FSDP and checkpoints keep plain parameter names (loadable uncompiled).
        activation_checkpointing: Recompute each block's activations in the backward pass (less memory,
            about a third more compute). Under Lightning's FSDPStrategy prefer its
            `activation_checkpointing_policy`.
    """

    def __init__(
        self,
        model: nn.Module,
        learning_rate: float = 6e-4,
        min_lr: float = 6e-5,
        warmup_steps: int = 100,
        decay_steps: int | None = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        compile: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        check_adamw_settings(learning_rate, weight_decay, betas, eps, min_lr, warmup_steps)
        if decay_steps is not None and decay_steps < 1:
            raise UserError(
                f"model.decay_steps is {decay_steps}: it must be at least 1 (or null: the run's length)"
            )
        # Outside the CLI the injected module cannot be described by its config, so it is left out of hparams.
        self.save_hyperparameters(ignore=[] if built_by_cli() else ["model"])
        self.model = model
        # one full window: the model summary then counts the FLOPs of a forward pass instead of printing 0
        block_size = getattr(getattr(model, "config", model), "block_size", None)
        self.example_input_array = torch.zeros(1, block_size, dtype=torch.long) if block_size else None
        self._eval_loss_sum = torch.zeros(2)  # (sum of token losses, token count) over an evaluation
        self.tokenizer: Tokenizer | None = None

    @property
    def network(self) -> nn.Module:
        return self.model

    @network.setter
    def network(self, network: nn.Module) -> None:  # an inference copy: quantized
        self.model = network

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    # --- the tokenizer travels with the checkpoint, so generation needs no data module ---
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "tokenizer", None) is not None:
            self.tokenizer = datamodule.tokenizer

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is not None:
            checkpoint["tokenizer"] = self.tokenizer.to_json()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "tokenizer" in checkpoint:
            self.tokenizer = tokenizer_from_json(checkpoint["tokenizer"])
            # the CLI links the model's vocabulary to the tokenizer's: any other size came from elsewhere
            vocab = getattr(getattr(self.model, "config", self.model), "vocab_size", None)
            if vocab is not None and vocab != self.tokenizer.vocab_size:
                raise UserError(
                    f"the checkpoint's tokenizer has {self.tokenizer.vocab_size} tokens but its model "
                    f"{vocab}: they were not trained together; use a checkpoint written by `lightning-llm fit`"
                )

    # --- training ---
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # (B, T), (B, T)
        _, loss = self.model(x, y)
        if self._trainer is None or logs_this_step(self._trainer):  # self.log costs 4% of a small step
            self.log("train/loss", loss, prog_bar=True)
        return loss

    # What `train/<unit>_per_sec` counts (the CLI's TrainingLogs callback reads these two).
    throughput_unit = "tokens"

    def units_in(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return batch[0].numel()  # (B, T) input ids

    # --- evaluation: the token-weighted mean loss over all ranks, and its perplexity ---
    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        _, loss = self.model(x, y)
        self._eval_loss_sum += torch.stack(
            [loss.detach().float() * y.numel(), torch.tensor(float(y.numel()))]
        ).cpu()

    def _log_evaluation(self, split: str) -> None:
        totals = self.trainer.strategy.reduce(self._eval_loss_sum.to(self.device), reduce_op="sum")
        self._eval_loss_sum = torch.zeros(2)
        loss = totals[0] / totals[1].clamp(min=1)
        self.log_dict(
            {f"{split}/loss": loss, f"{split}/ppl": torch.exp(loss)}, prog_bar=split == "val", sync_dist=False
        )

    def evaluation_metrics(self, split: str) -> list[str]:
        """The metrics an evaluation logs."""
        return [f"{split}/loss", f"{split}/ppl"]

    def on_validation_epoch_start(self) -> None:
        self._eval_loss_sum = torch.zeros(2)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._eval_loss_sum = torch.zeros(2)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = adamw_groups(params, hp.weight_decay)
        device_type = next(self.model.parameters()).device.type
        fused = device_type in ("cuda", "cpu") and all(p.is_floating_point() for p in params)
        optimizer = torch.optim.AdamW(
            groups, lr=hp.learning_rate, betas=tuple(hp.betas), eps=hp.eps, fused=fused
        )
        decay_steps = hp.decay_steps or self.trainer.estimated_stepping_batches
        if not math.isfinite(decay_steps):
            raise UserError("set trainer.max_steps or model.decay_steps: the cosine schedule needs a length")
        schedule = functools.partial(
            warmup_cosine,
            warmup_steps=hp.warmup_steps,
            decay_steps=int(decay_steps),
            min_ratio=hp.min_lr / hp.learning_rate,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- inference ---
    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> str:
        """Continue `prompt` with sampled text (prompt included).

        A prompt ending in whitespace has that last token sampled again among the tokens that start with
        it (token healing): BPE cuts "def " into "def" + " ", a pair that training text holds only before
        another space (code is cut "def" + " name"), so the sample would go on with a second space. The
        healed token takes the last one's place: the text still gains `max_new_tokens` tokens. Prompts that
        end in anything else (a word, a special token) and character tokenizers are left as they are.
        """
        if self.tokenizer is None:
            raise UserError(
                "this model has no tokenizer: load it from a checkpoint written by `lightning-llm fit`"
            )
        ids = self.tokenizer.encode(prompt) if prompt else self.tokenizer.encode("\n")
        idx = torch.as_tensor(ids, dtype=torch.long, device=self.device)[None]  # (1, T)
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        if prompt and max_new_tokens > 0:
            idx = _heal_last_token(self.model, self.tokenizer, idx, temperature, top_k, top_p, generator)
        out = self.model.generate(idx, max_new_tokens, temperature, top_k, top_p, generator)
        return self.tokenizer.decode(out[0].tolist())


@torch.no_grad()
def _heal_last_token(
    model: nn.Module,
    tokenizer: Tokenizer,
    idx: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """idx (1, T) with its last token sampled again among the tokens whose text starts with that token's."""
    last = tokenizer.decode([int(idx[0, -1])])
    if idx.size(1) < 2 or not last or last.strip():  # only a trailing run of whitespace is healed
        return idx
    texts = _token_texts(tokenizer)
    extending = [i for i, text in enumerate(texts) if text.startswith(last)]
    if len(extending) < 2:  # only the token itself: nothing to heal
        return idx
    was_training = model.training
    model.eval()
    logits, _ = model(idx[:, :-1][:, -model.block_size :])
    model.train(was_training)
    allowed = torch.full_like(logits[:, -1], float("-inf"))
    allowed[:, extending] = 0.0
    logits = logits[:, -1].float() + allowed  # (1, V)
    if temperature <= 0:
        healed = logits.argmax(-1, keepdim=True)
    else:
        probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
        healed = torch.multinomial(probs, 1, generator=generator)
    return torch.cat([idx[:, :-1], healed], dim=1)


@functools.lru_cache(maxsize=4)
def _token_texts(tokenizer: Tokenizer) -> list[str]:
    """Each token id's text, computed once per tokenizer (GPT-2's 50k tokens take a fraction of a second)."""
    return [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
