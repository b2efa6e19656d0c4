"""Optimizers and per-phase learning-rate schedules from the `train` section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transferctl import runtime
from transferctl.config.schema import Train
from transferctl.train import ema
from transferctl.train.layer_rates import rate_scaled


def learning_rate(train: Train, base: float, steps: int) -> Any:
    """`constant`, or a decay over the phase's `steps`: cosine to 0, exponential to base/100."""
    schedules = runtime.keras().optimizers.schedules
    steps = max(steps, 1)
    if train.lr_schedule == "cosine":
        return schedules.CosineDecay(base, decay_steps=steps)
    if train.lr_schedule == "exponential":
        return schedules.ExponentialDecay(base, decay_steps=steps, decay_rate=0.01)
    return base


def make_optimizer(
    train: Train,
    base_learning_rate: float,
    steps: int,
    rate_factors: Mapping[str, float] | None = None,
    step_offset: int = 0,
) -> Any:
    """The configured optimizer, its schedule decaying over `steps`.

    Args:
        rate_factors: a factor on the learning rate per `variable.path` (discriminative rates,
            `layer_rates.rate_factors`); others learn at 1.0. Defaults to `None` (none).
        step_offset: schedule steps that ran before this optimizer was made, in the same
            phase (gradual unfreezing). Defaults to `0`.

    Returns:
        A plain Keras optimizer (averaging the weights with `train.ema`: `train/ema.py`), or,
        with factors or an offset that matters, the same class with
        `layer_rates.RateScaled` mixed in.
    """
    optimizers = runtime.keras().optimizers
    rate = learning_rate(train, base_learning_rate, steps)
    options: dict[str, Any] = {}
    if train.optimizer == "adam":
        base: type = optimizers.Adam
    elif train.optimizer == "adamw":
        base = optimizers.AdamW
        options["weight_decay"] = 0.004 if train.weight_decay is None else train.weight_decay
    elif train.optimizer == "sgd":
        base = optimizers.SGD
        options.update(momentum=train.momentum, nesterov=True, weight_decay=train.weight_decay)
    else:
        base = optimizers.RMSprop
        options["momentum"] = 0.0
    options.update(ema.optimizer_options(train.ema))
    offset = step_offset if train.lr_schedule != "constant" else 0
    if rate_factors or offset:
        return rate_scaled(base)(rate, rate_factors=rate_factors, step_offset=offset, **options)
    return base(rate, **options)
