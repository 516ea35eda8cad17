"""Autoregressive sampling shared by every language model here: temperature, top-k and nucleus (top-p), with
or without a KV cache."""

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


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token ids (B, 1) from the last position's logits (B, V); temperature 0 means greedy."""
    if temperature <= 0:
        return logits.argmax(-1, keepdim=True)  # (B, 1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)


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
    """Sample from model(idx) -> (logits, _) one token at a time, running the whole context (its last
    block_size tokens) every step; temperature 0 means greedy."""
    check_sampling_options(max_new_tokens, temperature, top_k, top_p)
    was_training = model.training
    model.eval()
    for _ in range(max_new_tokens):
        context = idx[:, -block_size:]  # (B, <=block_size)
        logits, _ = model(context)
        next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
    model.train(was_training)
    return idx


class KVCache:
    """The keys and values of one attention layer for the tokens seen so far, in room for `block_size` tokens.

    The buffers are allocated by the first `append`, with its batch size, dtype and device, and written in place:
    a decoding step copies one token's keys and values instead of growing a tensor.
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.length = 0  # tokens cached; the next one takes position `length`
        self.k: torch.Tensor | None = None  # (B, nh, block_size, hs)
        self.v: torch.Tensor | None = None  # (B, nh, block_size, hs)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the cached tokens; return every key and value (B, nh, length, hs)."""
        end = self.length + k.size(2)
        if end > self.block_size:
            raise ValueError(
                f"the KV cache holds {self.block_size} tokens: {self.length} cached and {k.size(2)} new do not fit; "
                "clear() it first"
            )
        if self.k is None:
            B, nh, _, hs = k.shape
            self.k = k.new_empty(B, nh, self.block_size, hs)
            self.v = v.new_empty(B, nh, self.block_size, hs)
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, nh, length, hs), views of the buffers

    def clear(self) -> None:
        """Forget every token; the buffers stay for the next ones."""
        self.length = 0


@torch.no_grad()
def generate_with_cache(
    model: nn.Module,
    idx: torch.Tensor,
    kv_caches: list[KVCache],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample like `generate`, but run each token once: model(idx, kv_caches=kv_caches) -> (logits, _) reads the
    cached tokens, appends idx's to the caches (empty ones, one per attention layer) and returns the logits of
    the last position.

    The prompt's last block_size tokens (the caches' `block_size`) fill the caches in one pass; then
    each step feeds only the token just sampled. Positions are learned and end at block_size - 1, and a cached
    key carries its position, so a full cache cannot slide by one token. When it is full, the caches are
    cleared and refilled with the last block_size // 2 tokens (one pass, positions from 0 again), and decoding
    goes on. Until the sequence outgrows block_size the tokens are those of `generate`; after that the context
    is between block_size // 2 and block_size tokens, where `generate` always sees block_size, so samples differ.
    """
    check_sampling_options(max_new_tokens, temperature, top_k, top_p)
    if max_new_tokens == 0:
        return idx
    block_size = kv_caches[0].block_size
    keep = max(1, block_size // 2)  # refilling half the window costs one pass per block_size // 2 tokens
    was_training = model.training
    model.eval()
    logits, _ = model(idx[:, -block_size:], kv_caches=kv_caches)  # (B, 1, V): the prefill
    for step in range(max_new_tokens):
        next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
        if step == max_new_tokens - 1:
            break  # the last token's logits would go unread
        if kv_caches[0].length == block_size:  # no position left for next_id: refill with the last half
            for cache in kv_caches:
                cache.clear()
            logits, _ = model(idx[:, -keep:], kv_caches=kv_caches)
        else:
            logits, _ = model(next_id, kv_caches=kv_caches)
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
