"""Generated text in TensorBoard at the end of each validation, to read what the model has learned."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_llm.errors import UserError
from lightning_llm.models.sampling import check_sampling_options
from lightning_llm.parallel import every_rank_runs_the_model


class TextSamples(pl.Callback):
    """Sample from the language model after each validation and log it under `samples/text`.

    Args:
        prompt: Text to continue; empty starts from a newline.
        max_new_tokens: Length of each sample.
        temperature: Sampling temperature.
        top_k: Keep only the k most likely tokens (None keeps all).
        seed: Seed of the sampler, so samples at different steps are comparable.
    """

    def __init__(
        self,
        prompt: str = "",
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 50,
        seed: int = 0,
    ) -> None:
        check_sampling_options(max_new_tokens, temperature, top_k)
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tokenizer = getattr(pl_module, "tokenizer", None)
        if tokenizer is not None and self.prompt:
            try:  # a prompt the tokenizer cannot encode fails now, not after an hour
                tokenizer.encode(self.prompt)
            except UserError as error:
                raise UserError(
                    f"the TextSamples callback's prompt {self.prompt!r} cannot be encoded: {error}; change the "
                    "prompt under trainer.callbacks in the config"
                ) from None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or getattr(pl_module, "tokenizer", None) is None:
            return
        # Rank 0 samples; with sharded parameters every rank must join each forward pass, so all sample the
        # same text (same prompt, seed and length) and only rank 0's logger writes.
        if not trainer.is_global_zero and not every_rank_runs_the_model(trainer, pl_module.network):
            return
        text = pl_module.generate_text(
            self.prompt, self.max_new_tokens, self.temperature, self.top_k, seed=self.seed
        )
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # Markdown would eat indentation and newlines: a code block shows the text as generated.
                logger.experiment.add_text("samples/text", "```\n" + text + "\n```", trainer.global_step)
