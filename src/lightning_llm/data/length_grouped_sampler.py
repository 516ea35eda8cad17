"""A shuffling sampler that puts texts of similar length into the same batch, so padding shrinks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Yield indices so that each run of `batch_size` indices holds texts of similar length.

    Each epoch: shuffle all indices, cut them into chunks of `batch_size * chunk_batches`, sort each chunk
    by length, cut the chunks into batches and shuffle the batch order. Batches stay random across epochs
    (the order depends on `seed` and the epoch given to `set_epoch`, which Lightning calls) and
    reproducible for the same seed.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int = 0, chunk_batches: int = 50
    ) -> None:
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError("batch_size and chunk_batches must be positive")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.seed = seed
        self.chunk_batches = chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order `__iter__` yields next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        batches: list[torch.Tensor] = []
        for chunk in order.split(self.batch_size * self.chunk_batches):
            # Stable sort keeps the random order among equal lengths.
            by_length = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            batches.extend(by_length.split(self.batch_size))
        if not batches:
            return
        # Chunks hold whole batches, so only the very last batch can be short; it must stay last, because the
        # DataLoader cuts this index stream into consecutive runs of batch_size.
        last = batches.pop() if len(batches[-1]) < self.batch_size else None
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[position].tolist()
        if last is not None:
            yield from last.tolist()
