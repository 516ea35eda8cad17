"""DataLoaders that resume exactly and leave the global random generator alone."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


def loader_generator() -> torch.Generator:
    """A generator of the loader's own: iterating a DataLoader otherwise draws a seed from the global one,
    which would shift dropout masks between an interrupted run and its resumed copy."""
    return torch.Generator().manual_seed(torch.initial_seed())


class ResumableLoader(DataLoader):
    """A training DataLoader whose position needs no saving: its sampler or dataset starts from the trainer's
    progress. Having `state_dict` tells Lightning that resuming mid-epoch is exact."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("generator", loader_generator())
        super().__init__(*args, **kwargs)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass
