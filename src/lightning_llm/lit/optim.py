"""Checks of the optimizer settings both LightningModules share, so a bad value fails before training."""

from __future__ import annotations

import math
from collections.abc import Sequence

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
