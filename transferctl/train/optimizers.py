"""Optimizers and per-phase learning-rate schedules from the `train` section."""

from __future__ import annotations

from typing import Any

from transferctl import runtime
from transferctl.config.schema import Train


def learning_rate(train: Train, base: float, steps: int) -> Any:
    """`constant`, or a decay over the phase's `steps`: cosine to 0, exponential to base/100."""
    schedules = runtime.keras().optimizers.schedules
    steps = max(steps, 1)
    if train.lr_schedule == "cosine":
        return schedules.CosineDecay(base, decay_steps=steps)
    if train.lr_schedule == "exponential":
        return schedules.ExponentialDecay(base, decay_steps=steps, decay_rate=0.01)
    return base


def make_optimizer(train: Train, base_learning_rate: float, steps: int) -> Any:
    optimizers = runtime.keras().optimizers
    rate = learning_rate(train, base_learning_rate, steps)
    if train.optimizer == "adam":
        return optimizers.Adam(rate)
    if train.optimizer == "adamw":
        decay = 0.004 if train.weight_decay is None else train.weight_decay
        return optimizers.AdamW(rate, weight_decay=decay)
    if train.optimizer == "sgd":
        return optimizers.SGD(
            rate, momentum=train.momentum, nesterov=True, weight_decay=train.weight_decay
        )
    return optimizers.RMSprop(rate, momentum=0.0)
