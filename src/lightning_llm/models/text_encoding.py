"""How a classifier backbone turns texts into token ids: the one tokenizer the backbone owns.

The data module receives a backbone's `TextEncoder` and never loads a tokenizer of its own, so the ids it
makes are always the ones the backbone's embeddings were trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lightning_llm.errors import UserError


@dataclass(frozen=True)
class EncodedTexts:
    """Token ids per text (special tokens included), segment ids for sentence pairs when the backbone uses
    them, and how many texts lost tokens to `max_length`."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    truncated: int


class UnencodableText(UserError):
    """Text number `index` (0-based, in the order given to `encode`) cannot be encoded, for `reason`."""

    def __init__(self, index: int, text: str, reason: str) -> None:
        self.index, self.reason = index, reason
        self.opening = repr(text if len(text) <= 40 else text[:40] + "...")
        super().__init__(f"text {index} ({self.opening}) {reason}")


class TextEncoder(Protocol):
    """Tokenises texts (or sentence pairs) for one backbone; batches are padded on the right with
    `pad_token_id`, and no input is longer than `max_length` (the backbone's position limit)."""

    pad_token_id: int
    max_length: int

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> EncodedTexts: ...
