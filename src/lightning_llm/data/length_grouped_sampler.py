"""A shuffling sampler that puts texts of similar length into the same batch, so padding shrinks, and deals
each process of a distributed run its own part of every batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler


class LengthGroupedSampler(DistributedSampler):
    """Yield indices so that each run of `batch_size` indices holds texts of similar length.

    Each epoch: shuffle all indices, cut them into chunks of `chunk_batches` global batches (`batch_size` x
    `world_size` texts), sort each chunk by length, cut the chunks into global batches and shuffle the batch
    order; process `rank` takes its `batch_size` slice of each global batch. With `chunk_batches=1` this is a
    plain shuffle. The order is a pure function of `seed` and the epoch given to `set_epoch` (which
    Lightning calls): random across epochs and reproducible for the same seed. `start_batch`, asked at
    the start of each pass, says how many batches of the epoch are already done: a run resumed mid-epoch
    continues with exactly the batches the uninterrupted run would have seen, in one process or several.

    It is a `DistributedSampler` so that Lightning uses it as it is instead of wrapping it (a wrapper deals
    indices out by position, which a mid-epoch skip would misalign). With several processes a last partial
    global batch is dropped: every process must take the same number of steps.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        chunk_batches: int = 50,
        start_batch: Callable[[], int] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError("batch_size and chunk_batches must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} processes")
        # Our own order below; the parent only makes this a DistributedSampler (no process group needed).
        super().__init__(range(len(lengths)), num_replicas=world_size, rank=rank, shuffle=False)
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
        if self.num_replicas == 1:
            return len(self.lengths)
        return len(self.lengths) // (self.batch_size * self.num_replicas) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        # Asked lazily, at the first index: Lightning builds the loader before it restores a checkpoint.
        done = self.start_batch() if self.start_batch is not None else 0
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for batch in self._global_batches(self.epoch)[done:]:
            yield from batch[mine]

    def _global_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        shuffled = torch.randperm(len(self.lengths), generator=generator)
        size = self.batch_size * self.num_replicas
        batches: list[torch.Tensor] = []
        for chunk in shuffled.split(size * self.chunk_batches):
            # Stable sort keeps the random order among equal lengths.
            by_length = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            batches.extend(by_length.split(size))
        if not batches:
            return []
        # Chunks hold whole batches, so only the very last batch can be short; it must stay last, because the
        # DataLoader cuts this index stream into consecutive runs of batch_size.
        last = batches.pop() if len(batches[-1]) < size else None
        positions = torch.randperm(len(batches), generator=generator).tolist()
        ordered = [batches[position].tolist() for position in positions]
        if last is not None and self.num_replicas == 1:
            ordered.append(last.tolist())
        return ordered
