"""A shuffling sampler that puts texts of similar length into the same batch, so padding shrinks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Yield indices so that each run of `batch_size` indices holds texts of similar length.

    Each epoch: shuffle all indices, cut them into chunks of `batch_size * chunk_batches`, sort each chunk
    by length, cut the chunks into batches and shuffle the batch order. With `chunk_batches=1` this is a
    plain shuffle. The order is a pure function of `seed` and the epoch given to `set_epoch` (which
    Lightning calls): random across epochs and reproducible for the same seed. `start_batch`, asked at
    the start of each pass, says how many batches of the epoch are already done: a run resumed mid-epoch
    continues with exactly the batches the uninterrupted run would have seen.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        chunk_batches: int = 50,
        start_batch: Callable[[], int] | None = None,
    ) -> None:
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError("batch_size and chunk_batches must be positive")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.seed = seed
        self.chunk_batches = chunk_batches
        self.start_batch = start_batch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order `__iter__` yields next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        # Asked lazily, at the first index: Lightning builds the loader before it restores a checkpoint.
        done = self.start_batch() if self.start_batch is not None else 0
        yield from self._order(self.epoch)[done * self.batch_size :]

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        shuffled = torch.randperm(len(self.lengths), generator=generator)
        batches: list[torch.Tensor] = []
        for chunk in shuffled.split(self.batch_size * self.chunk_batches):
            # Stable sort keeps the random order among equal lengths.
            by_length = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            batches.extend(by_length.split(self.batch_size))
        if not batches:
            return []
        # Chunks hold whole batches, so only the very last batch can be short; it must stay last, because the
        # DataLoader cuts this index stream into consecutive runs of batch_size.
        last = batches.pop() if len(batches[-1]) < self.batch_size else None
        positions = torch.randperm(len(batches), generator=generator).tolist()
        order = [index for position in positions for index in batches[position].tolist()]
        return order + (last.tolist() if last is not None else [])
