"""What both LightningModules share about AdamW: the checks of its settings (a bad value fails before training)
and its parameter groups."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from lightning_llm.errors import UserError


def check_adamw_settings(
    learning_rate: float,
    weight_decay: float,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
) -> None:
    """Raise a UserError naming the first `model.*` optimizer value AdamW or the schedule cannot use."""
    problems = {
        "learning_rate": (
            learning_rate,
            not 0.0 < learning_rate < math.inf,
            "a positive number such as 6e-4",
        ),
        "min_lr": (
            min_lr,
            not 0.0 <= min_lr <= learning_rate,
            f"between 0 and learning_rate ({learning_rate})",
        ),
        "weight_decay": (weight_decay, not 0.0 <= weight_decay < math.inf, "0 or more"),
        "betas": (
            list(betas),
            len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas),
            "two numbers in [0, 1)",
        ),
        "eps": (eps, not 0.0 < eps < math.inf, "a small positive number such as 1e-8"),
        "warmup_steps": (warmup_steps, warmup_steps < 0, "0 or more"),
    }
    for name, (value, bad, wanted) in problems.items():
        if bad:
            raise UserError(f"model.{name} is {value}: it must be {wanted}")


def adamw_groups(parameters: Iterable[nn.Parameter], weight_decay: float, **settings: Any) -> list[dict]:
    """Two AdamW parameter groups: matrices and embeddings (dim >= 2) decay; biases and norm weights (the 1-D
    parameters, which decay would only shrink) do not. `settings` (e.g. `lr`) go into both groups."""
    parameters = list(parameters)
    return [
        {"params": [p for p in parameters if p.ndim >= 2], "weight_decay": weight_decay, **settings},
        {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0, **settings},
    ]
