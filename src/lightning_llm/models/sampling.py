"""Autoregressive sampling shared by every language model here: temperature, top-k and nucleus (top-p)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set logits (B, V) outside the top-k and outside the smallest set with mass >= top_p to -inf."""
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)  # (B, V)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p; the most likely token always stays
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


# Beyond this a sample takes hours on a CPU: a typo (an extra zero or three), not a request.
MAX_NEW_TOKENS = 100_000


def check_sampling_options(
    max_new_tokens: int, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> None:
    """Raise a ValueError naming the first option sampling cannot use (rather than sampling something else)."""
    if not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens is {max_new_tokens}: it must be between 0 and {MAX_NEW_TOKENS:,}")
    if not 0.0 <= temperature < math.inf:
        raise ValueError(f"temperature is {temperature}: it must be 0 (greedy) or a positive number")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k is {top_k}: it must be 1 or more, or null for every token")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p is {top_p}: it must lie in (0, 1], or be null for every token")


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    block_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample from model(idx) -> (logits, _) one token at a time; temperature 0 means greedy."""
    check_sampling_options(max_new_tokens, temperature, top_k, top_p)
    was_training = model.training
    model.eval()
    for _ in range(max_new_tokens):
        context = idx[:, -block_size:]  # (B, <=block_size)
        logits, _ = model(context)
        logits = logits[:, -1, :]  # (B, V)
        if temperature <= 0:
            next_id = logits.argmax(-1, keepdim=True)  # (B, 1)
        else:
            probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
            next_id = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
    model.train(was_training)
    return idx


class GenerateMixin:
    """`generate()` for any model whose forward is `(idx) -> (logits, _)` and that has a `block_size`."""

    block_size: int

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T); the context is cropped to block_size."""
        return generate(self, idx, self.block_size, max_new_tokens, temperature, top_k, top_p, generator)
