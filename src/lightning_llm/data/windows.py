"""Datasets of token windows: x is `block_size` tokens, y the same window shifted by one."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info


def _windows(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather windows of block_size + 1 tokens at offsets (B,) and split them into x, y (B, block_size)."""
    rows = np.lib.stride_tricks.sliding_window_view(tokens, block_size + 1)[offsets]  # (B, block_size + 1)
    rows = torch.from_numpy(rows.astype(np.int64))
    return rows[:, :-1], rows[:, 1:]


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n_tokens: int, block_size: int) -> tuple[int, np.ndarray]:
    """The epoch's random phase and window order (cached: every batch of an epoch needs it)."""
    rng = np.random.default_rng([seed, epoch])
    phase = int(rng.integers(0, block_size))
    n_windows = (n_tokens - 1 - phase - block_size) // block_size + 1
    return phase, rng.permutation(n_windows)


class ShuffledWindowBatches(IterableDataset):
    """Batches of windows that tile the tokens, shuffled per epoch: a pure function of (seed, batch index, rank).

    Each epoch picks a random phase and a random order of the non-overlapping windows starting at
    phase + k * block_size, so every token is trained on once per epoch (random offsets with replacement
    leave about a fifth of a corpus unseen after 1.5 epochs). The batch index counts every batch of the
    run (optimizer steps x accumulation), so a run with the same seed sees the same data, a resumed run
    continues at exactly the batch it stopped at, mid-epoch included, and each rank takes its own share.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: Callable[[], int] = lambda: 0,
    ) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        # windows of block_size + 1 tokens at phase + k * block_size; the largest phase leaves the fewest
        fewest_windows = (len(tokens) - block_size - block_size) // block_size + 1
        self.batches_per_epoch = max(1, fewest_windows // (batch_size * world_size))

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _epoch_order(self, epoch: int) -> tuple[int, np.ndarray]:
        return _epoch_order(self.seed, epoch, len(self.tokens), self.block_size)

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = divmod(index, self.batches_per_epoch)
        phase, order = self._epoch_order(epoch)
        first = (position * self.world_size + self.rank) * self.batch_size
        offsets = phase + order[first : first + self.batch_size] * self.block_size  # (B,)
        return _windows(self.tokens, offsets, self.block_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        worker_id, n_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        start = self.start_batch()  # batches already trained on in this run, before this epoch or resume
        for index in range(start + worker_id, start + self.batches_per_epoch, n_workers):
            yield self.batch(index)


class FixedWindows(Dataset):
    """`count` windows evenly spaced over the tokens: the same validation set at every evaluation."""

    def __init__(self, tokens: np.ndarray, block_size: int, count: int) -> None:
        n_offsets = len(tokens) - block_size
        count = max(1, min(count, n_offsets))
        self.tokens = tokens
        self.block_size = block_size
        self.offsets = np.linspace(0, n_offsets - 1, count).astype(np.int64)  # (count,)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _windows(self.tokens, self.offsets[[index]], self.block_size)
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fetch a whole batch with one gather (DataLoader uses this when it exists)."""
        return _windows(self.tokens, self.offsets[indices], self.block_size)


def keep_batch(batch):
    """collate_fn for datasets that already return whole batches."""
    return batch
