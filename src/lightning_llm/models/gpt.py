"""A GPT-2 style decoder in plain PyTorch: read it top to bottom.

Names follow GPT-2 (`wte`, `wpe`, `c_attn`, `c_proj`, `c_fc`, `ln_f`, `lm_head`) so pretrained
weights map one to one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lightning_llm.models.sampling import GenerateMixin, KVCache, generate_with_cache


@dataclass
class GPTConfig:
    """The shape of a GPT; every field is a constructor argument of `GPT`."""

    vocab_size: int = 50304
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPT {name} is {getattr(self, name)}: it must be at least 1")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPT n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head}): choose an n_head "
                "that divides n_embd"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPT dropout is {self.dropout}: it must be in [0, 1)")
        if not self.init_std > 0.0:
            raise ValueError(f"GPT init_std is {self.init_std}: it must be a positive number such as 0.02")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values (B, nh, T, hs) of x (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        return q, k, v

    def attention_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The causal softmax weights (B, nh, T, T) that forward(x) applies: row t says where position t looks."""
        q, k, _ = self._heads(x)  # (B, nh, T, hs)
        T = x.size(1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(diagonal=1)
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Causal self-attention over x (B, T, C); with kv_cache, also over the cached tokens before x's."""
        B, T, C = x.shape
        q, k, v = self._heads(x)  # (B, nh, T, hs)
        if kv_cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )  # (B, nh, T, hs)
        else:
            y = self._attend_with_cache(q, k, v, kv_cache)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    @staticmethod
    def _attend_with_cache(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: KVCache
    ) -> torch.Tensor:
        """Attention (B, nh, T, hs) of the new tokens' q, k, v (B, nh, T, hs) over the cache and themselves."""
        past, T = kv_cache.length, q.size(2)
        k, v = kv_cache.append(k, v)  # (B, nh, past + T, hs)
        if T == 1:  # one new token may see every key: nothing to mask
            return F.scaled_dot_product_attention(q, k, v)
        if past == 0:  # the prefill: causal attention as in training
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        # a chunk after cached tokens: is_causal would align the triangle top left, so mask bottom right
        sees = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(diagonal=past)  # (T, past + T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=sees)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(GenerateMixin, nn.Module):
    """GPT-2 style language model.

    Args:
        vocab_size: Number of token ids; linked from the data module's tokenizer by the CLI.
        block_size: Longest context in tokens (learned position embeddings); linked from the data module.
        n_layer: Number of Transformer blocks.
        n_head: Attention heads per block.
        n_embd: Width of the residual stream.
        dropout: Dropout on embeddings, attention and residual branches (0 for pretraining on lots of data).
        bias: Bias in Linear and LayerNorm layers, as GPT-2 has; False is a little faster.
        init_std: Standard deviation of the initial weights (GPT-2's scheme, residual projections divided
            by sqrt(2 * n_layer)). GPT-2's 0.02 suits width 768; narrow models trained briefly learn much
            faster from a larger one (4 x 128 on Tiny Shakespeare: 0.05 gives val 1.76 vs 1.89 at 2,000 steps).
    """

    def __init__(
        self,
        vocab_size: int = 50304,
        block_size: int = 1024,
        n_layer: int = 12,
        n_head: int = 12,
        n_embd: int = 768,
        dropout: float = 0.0,
        bias: bool = True,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        config = GPTConfig(vocab_size, block_size, n_layer, n_head, n_embd, dropout, bias, init_std)
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),
                "wpe": nn.Embedding(config.block_size, config.n_embd),
                "drop": nn.Dropout(config.dropout),
                "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                "ln_f": nn.LayerNorm(config.n_embd, bias=config.bias),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix embeds and predicts
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: GPTConfig) -> GPT:
        return cls(**asdict(config))

    @property
    def blocks(self) -> nn.ModuleList:
        """The repeated layers, for sharding, compiling and activation checkpointing per block."""
        return self.transformer.h

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, init_std), zero biases, residual projections scaled by 1/sqrt(2 * n_layer)."""
        std_all = self.config.init_std
        residual_std = std_all / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith("c_proj") else std_all
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std_all)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are left out by default, as in the scaling-law papers."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, 6N + 12*L*H*Q*T (PaLM appendix B), with T the context length."""
        cfg = self.config
        t = seq_len or cfg.block_size
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * t

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_caches: list[KVCache] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) and, given targets (B, T), the mean cross-entropy (-1 targets are ignored).

        With kv_caches (generation: one per block) idx holds the tokens after the cached ones; their keys and
        values are appended to the caches and only the last position's logits (B, 1, vocab) come back.
        """
        B, T = idx.shape
        past = kv_caches[0].length if kv_caches else 0  # positions go on after the cached tokens
        if self.config.block_size < past + T:
            raise ValueError(
                f"sequence of length {past + T} is longer than block_size {self.config.block_size}"
            )
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        if kv_caches is not None:  # inference: sampling reads the last position only
            if targets is not None:
                raise ValueError("kv_caches are for generation: pass targets without them")
            for block, cache in zip(self.transformer.h, kv_caches, strict=True):
                x = block(x, cache)  # (B, T, C)
            return self.lm_head(self.transformer.ln_f(x[:, -1:])), None  # (B, 1, vocab)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        kv_cache: bool = True,
    ) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T); temperature 0 means greedy.

        With kv_cache each block keeps its keys and values: the prompt goes through once, then one token per
        step. While the sequence fits in block_size the tokens equal kv_cache=False's, which runs the whole
        context (its last block_size tokens) every step. Past block_size the cache is refilled with the last
        block_size // 2 tokens whenever it is full (see `generate_with_cache`), so samples may differ there.
        """
        if not kv_cache:
            return super().generate(idx, max_new_tokens, temperature, top_k, top_p, generator)
        caches = [KVCache(self.config.block_size) for _ in self.transformer.h]
        return generate_with_cache(self, idx, caches, max_new_tokens, temperature, top_k, top_p, generator)

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Attention probabilities of every block for token ids idx (B, T): n_layer tensors (B, nh, T, T)."""
        pos = torch.arange(idx.size(1), device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C), dropout left out
        maps = []
        for block in self.transformer.h:
            maps.append(block.attn.attention_probabilities(block.ln_1(x)))
            x = block(x)
        return maps
