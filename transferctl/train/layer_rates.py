"""Discriminative learning rates: the backbone (or each of its layers) learns at its own rate.

A phase's `backbone_lr_scale: s` makes every backbone variable learn at `learning_rate * s`;
`layer_decay: d` makes a backbone layer at depth k learn at `learning_rate * d ** k` (timm's
layer decay), where depth counts the backbone's layers with weights from the top, the last one
at depth 1, and a normalisation layer (BatchNorm, LayerNorm, ...) shares the depth of the layer
before it, the one it normalises. The head learns at `learning_rate`; the phase's schedule
applies on top of all of them.

Scaling gradients would not do this: Adam, AdamW and RMSprop divide the gradient by its own running
magnitude, so their steps ignore its scale (docs/keras-behaviour.md). The optimizer itself scales
each variable's learning rate instead (`RateScaled`, used by `optimizers.make_optimizer`), inside
`update_step`, where Adam, AdamW, SGD and RMSprop all take the rate as an argument. Decoupled weight
decay (AdamW, SGD) is scaled the same way, as PyTorch's per-group `lr` does. The factors follow from
the config and the architecture alone, so a resumed run rebuilds them exactly.

Example:
    factors = rate_factors(backbone, phase)  # {"block_16_project/kernel": 0.9, ...}
    optimizer = make_optimizer(train, phase.learning_rate, steps, rate_factors=factors)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from transferctl import runtime
from transferctl.config.schema import Phase

NORMALISATION_LAYERS = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "Normalization",
)


def layer_depths(backbone: Any) -> list[int | None]:
    """Per layer of `backbone.layers`, its depth from the top; None for a layer without weights.

    Example: a backbone conv1, bn1, relu, conv2, bn2 has depths [2, 2, None, 1, 1].
    """
    layers = list(backbone.layers)
    counted = [
        index
        for index, layer in enumerate(layers)
        if layer.weights and type(layer).__name__ not in NORMALISATION_LAYERS
    ]
    depth_of = {index: len(counted) - position for position, index in enumerate(counted)}
    current = max(len(counted), 1)  # a normalisation layer below every counted one: the deepest
    depths: list[int | None] = []
    for index, layer in enumerate(layers):
        if index in depth_of:
            current = depth_of[index]
            depths.append(current)
        else:
            depths.append(current if layer.weights else None)
    return depths


def layer_factors(backbone: Any, phase: Phase) -> list[float | None]:
    """Per layer of `backbone.layers`, the factor on the phase's learning rate (None: no
    weights)."""
    depths = layer_depths(backbone)
    if phase.layer_decay is not None:
        decay = phase.layer_decay
        return [None if depth is None else decay**depth for depth in depths]
    return [None if depth is None else phase.backbone_lr_scale for depth in depths]


def scales_rates(phase: Phase) -> bool:
    """Whether the phase gives the backbone a rate other than the head's."""
    return phase.layer_decay is not None or phase.backbone_lr_scale != 1.0


def rate_factors(backbone: Any, phase: Phase) -> dict[str, float]:
    """The factor on the learning rate of every backbone variable, by `variable.path`; empty
    when the phase does not scale rates (variables not listed, the head's, learn at 1.0)."""
    if not scales_rates(phase):
        return {}
    factors: dict[str, float] = {}
    for layer, factor in zip(backbone.layers, layer_factors(backbone, phase), strict=True):
        if factor is not None:
            factors.update({variable.path: factor for variable in layer.weights})
    return factors


@dataclass(frozen=True)
class Rates:
    """The learning rates of a phase, per group, for `plan` and the console."""

    head: float
    backbone_top: float  # the backbone's trainable layer nearest the top
    backbone_bottom: float  # ... and the one deepest down
    top_depth: int
    bottom_depth: int
    per_layer: bool  # layer_decay: a rate per depth; else one rate for the whole backbone

    def describe(self) -> str:
        if not self.per_layer:
            if self.backbone_top == self.head:
                return f"{self.head:g} (head and backbone)"
            ratio = self.backbone_top / self.head
            return f"head {self.head:g}, backbone {self.backbone_top:g} (x{ratio:g})"
        return (
            f"head {self.head:g}, backbone {self.backbone_top:g} (depth {self.top_depth}) to "
            f"{self.backbone_bottom:g} (depth {self.bottom_depth})"
        )


def phase_rates(backbone: Any, phase: Phase, training: set[int]) -> Rates:
    """The phase's rates at its start (before any schedule), over the backbone layers in
    `training` (indices in `backbone.layers`); the whole backbone's range when none train."""
    depths = layer_depths(backbone)
    factors = layer_factors(backbone, phase)
    shown = [i for i in sorted(training) if factors[i] is not None] or [
        i for i, factor in enumerate(factors) if factor is not None
    ]
    base = phase.learning_rate
    if not shown:
        return Rates(base, base, base, 0, 0, False)
    top, bottom = shown[-1], shown[0]
    return Rates(
        head=base,
        backbone_top=base * float(factors[top] or 1.0),
        backbone_bottom=base * float(factors[bottom] or 1.0),
        top_depth=int(depths[top] or 0),
        bottom_depth=int(depths[bottom] or 0),
        per_layer=phase.layer_decay is not None,
    )


class RateScaled:
    """Mixin for a Keras optimizer: per-variable learning-rate factors, and a schedule offset.

    `rate_factors` maps `variable.path` to a factor on the learning rate (1.0 when absent);
    `step_offset` is how many steps of the phase's schedule ran before this optimizer was made
    (gradual unfreezing recompiles mid-phase, with a fresh optimizer state, while the schedule
    continues). The optimizer's own step count restarts at 0, so Adam's bias correction suits
    its fresh moments. Not registered for serialization: the training loop never saves a model
    compiled with it (`model.keras` stays plain Keras); `save_weights` stores its variables,
    which are the base optimizer's.
    """

    def __init__(
        self,
        *args: Any,
        rate_factors: Mapping[str, float] | None = None,
        step_offset: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._rate_by_path = tuple((rate_factors or {}).items())
        self._step_offset = int(step_offset)
        self._factors: tuple[float, ...] = ()

    def build(self, variables: Any) -> None:
        super().build(variables)  # type: ignore[misc]
        by_path = dict(self._rate_by_path)
        self._factors = tuple(
            float(by_path.get(variable.path, 1.0))
            for variable in self._trainable_variables  # type: ignore[attr-defined]
        )

    def _get_current_learning_rate(self) -> Any:
        schedules = runtime.keras().optimizers.schedules
        rate = self._learning_rate  # type: ignore[attr-defined]
        if self._step_offset and isinstance(rate, schedules.LearningRateSchedule):
            return rate(self.iterations + self._step_offset)  # type: ignore[attr-defined]
        return super()._get_current_learning_rate()  # type: ignore[misc]

    def _apply_weight_decay(self, variables: Any) -> None:
        return None  # applied per variable in update_step, at the variable's own rate

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        ops = runtime.keras().ops
        factor = self._factors[self._get_variable_index(variable)]  # type: ignore[attr-defined]
        if factor != 1.0:
            learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), factor)
        decay = self.weight_decay  # type: ignore[attr-defined]
        if decay is not None and self._use_weight_decay(variable):  # type: ignore[attr-defined]
            step = ops.cast(learning_rate, variable.dtype) * ops.cast(decay, variable.dtype)
            self.assign_sub(variable, variable * step)  # type: ignore[attr-defined]
        super().update_step(gradient, variable, learning_rate)  # type: ignore[misc]


@cache
def rate_scaled(base: type) -> type:
    """`base` (a Keras optimizer class) with `RateScaled` mixed in; one class per base."""
    return type(f"RateScaled{base.__name__}", (RateScaled, base), {})
