"""Training and validation windows streamed from a prepared folder (litdata), for LanguageModelingDataModule.

Training: litdata's StreamingDataset of windows of block_size + 1 tokens, shuffled from the seed, split across
ranks, nodes and loader workers by litdata; its loader's position goes into the checkpoint, so a resumed run
continues at the same batch. (Validation reads the folder's val.bin like the memmap cache: FixedWindows.)
"""

from __future__ import annotations

import numpy as np
import torch


def windows_to_xy(windows: list) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn: windows of block_size + 1 ids -> x, y (B, block_size), the second shifted by one."""
    rows = torch.stack([torch.as_tensor(np.asarray(window, dtype=np.int64)) for window in windows])
    return rows[:, :-1], rows[:, 1:]


def training_loader(
    train: str, block_size: int, batch_size: int, seed: int, num_workers: int, chunk_cache: str | None = None
):
    """The streaming loader of the training chunks at `train` (a folder, or s3:// cached in `chunk_cache`);
    built inside the run (litdata reads the ranks when built)."""
    from litdata import StreamingDataLoader, StreamingDataset, TokensLoader

    dataset = StreamingDataset(
        train,
        cache_dir=chunk_cache,
        item_loader=TokensLoader(block_size=block_size + 1),
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    return StreamingDataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=windows_to_xy
    )
