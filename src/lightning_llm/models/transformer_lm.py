"""A language model built from `torch.nn.TransformerEncoder` layers with a causal mask (the seed design)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lightning_llm.models.sampling import GenerateMixin


class TransformerLM(GenerateMixin, nn.Module):
    """Decoder-only LM from stock `nn.TransformerEncoderLayer`s: the causal mask makes the encoder a decoder.

    Args:
        vocab_size: Number of token ids; linked from the data module's tokenizer by the CLI.
        d_model: Width of the embeddings and of every layer.
        nhead: Attention heads per layer.
        d_hid: Width of the feed-forward layer.
        nlayers: Number of layers.
        dropout: Dropout inside the layers and on the embeddings.
        block_size: Longest context in tokens (learned position embeddings); linked from the data module.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        nhead: int = 4,
        d_hid: int = 512,
        nlayers: int = 4,
        dropout: float = 0.0,
        block_size: int = 256,
    ) -> None:
        super().__init__()
        for name, value in {
            "vocab_size": vocab_size,
            "d_model": d_model,
            "nhead": nhead,
            "d_hid": d_hid,
        }.items():
            if value < 1:
                raise ValueError(f"TransformerLM {name} is {value}: it must be at least 1")
        if nlayers < 1 or block_size < 1:
            raise ValueError("TransformerLM nlayers and block_size must be at least 1")
        if d_model % nhead:
            raise ValueError(f"TransformerLM d_model ({d_model}) must be a multiple of nhead ({nhead})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TransformerLM dropout is {dropout}: it must be in [0, 1)")
        self.block_size = block_size
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pos_embedding = nn.Embedding(block_size, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, d_hid, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, nlayers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.decoder = nn.Linear(d_model, vocab_size)
        nn.init.normal_(self.embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embedding.weight, std=0.02)
        nn.init.normal_(self.decoder.weight, std=0.02 / math.sqrt(2 * nlayers))
        nn.init.zeros_(self.decoder.bias)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.layers

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.pos_embedding.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        layer = self.encoder.layers[0]
        t = seq_len or self.block_size
        return 6 * self.num_params() + 12 * len(self.encoder.layers) * layer.self_attn.embed_dim * t

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        if self.block_size < T:
            raise ValueError(f"sequence of length {T} is longer than block_size {self.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.dropout(self.embedding(idx) + self.pos_embedding(pos))  # (B, T, C)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device, dtype=x.dtype)  # (T, T)
        x = self.encoder(x, mask=mask, is_causal=True)  # (B, T, C)
        logits = self.decoder(x)  # (B, T, vocab)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss
