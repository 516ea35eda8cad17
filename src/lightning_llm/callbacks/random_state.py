"""Save each process's random number generators in the checkpoint and restore them on resume.

Lightning restores weights, optimizer, scheduler and loop positions but not the generators, so dropout
after a resume would draw other masks than the uninterrupted run. Our data loaders take their own
generators (they never draw from the global one), so restoring at the start of training is exact.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

KEY = "random_states"  # one entry per process, in rank order


def capture() -> dict[str, Any]:
    """This process's generator states as tensors and plain tuples (loadable with `weights_only=True`)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(value: Any) -> Any:
    # random.setstate wants tuples; a checkpoint round trip may hand lists back
    return tuple(_as_tuples(item) for item in value) if isinstance(value, list | tuple) else value


class RandomStateCheckpoint(pl.Callback):
    """Keeps torch, numpy and Python random states of every process in the checkpoint (`random_states`)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        states = [capture()]
        if trainer.world_size > 1:  # every process saves the checkpoint together; each keeps its own streams
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        checkpoint[KEY] = states

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        states = checkpoint.get(KEY)
        if not states:
            return
        if len(states) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint holds random states of {len(states)} processes, this run has "
                f"{trainer.world_size}: dropout will not repeat the interrupted run's masks exactly"
            )
        self._pending = states[trainer.global_rank % len(states)]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the sanity check and model set-up, which may draw numbers the interrupted run drew earlier
        if self._pending is not None:
            restore(self._pending)
            self._pending = None
