"""What a model *is*: plain PyTorch, no Lightning."""

from lightning_llm.models.gpt import GPT, GPTConfig
from lightning_llm.models.transformer_lm import TransformerLM

__all__ = ["GPT", "GPTConfig", "TransformerLM"]
