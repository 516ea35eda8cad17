"""Labelled texts as token ids, and batches of them padded on the right to their longest text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset


class TokenizedTexts(Dataset):
    """Token ids of one split, with labels (absent for unlabelled data) and, for prediction, each text's
    position in the input (`row`), its id and the text itself, so that predictions can be written in
    input order whatever order the batches come in."""

    def __init__(
        self,
        input_ids: list[list[int]],
        token_type_ids: list[list[int]] | None = None,
        labels: Sequence[int | float] | None = None,
        row_ids: list[str] | None = None,
        texts: list[str] | None = None,
    ) -> None:
        self.input_ids = input_ids
        self.token_type_ids = token_type_ids
        self.labels = labels
        self.row_ids = row_ids
        self.texts = texts

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.input_ids[index]}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[index]
        if self.labels is not None:
            item["labels"] = self.labels[index]
        if self.row_ids is not None:
            item["row"] = index
            item["id"] = self.row_ids[index]
        if self.texts is not None:
            item["text"] = self.texts[index]
        return item

    @property
    def lengths(self) -> list[int]:
        """Tokens per text, for grouping by length."""
        return [len(ids) for ids in self.input_ids]


class PadToLongest:
    """Collate items into tensors padded on the right to the longest text of the batch; rows, ids and texts
    stay lists."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)  # (B, T)
        for row, item in enumerate(items):
            input_ids[row, : len(item["input_ids"])] = torch.as_tensor(item["input_ids"])
            attention_mask[row, : len(item["input_ids"])] = 1
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in items[0]:
            token_type_ids = torch.zeros((len(items), longest), dtype=torch.long)  # (B, T)
            for row, item in enumerate(items):
                token_type_ids[row, : len(item["token_type_ids"])] = torch.as_tensor(item["token_type_ids"])
            batch["token_type_ids"] = token_type_ids
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([item["labels"] for item in items])  # (B,)
        for key in ("row", "id", "text"):
            if key in items[0]:
                batch[key] = [item[key] for item in items]
        return batch
