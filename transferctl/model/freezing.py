"""Which backbone layers train: `all | none | {first: N} | {until: LAYER} | {last_trainable: N}`.

Layers are counted as in `backbone.layers` (as the Keras guide's `base_model.layers[:N]`).
BatchNorm layers stay frozen, which in Keras 3 also keeps them in inference mode, unless
`train_batchnorm` is true: measured on Keras 3.15.1, `base(x, training=False)` inside a
functional model is ignored during `fit`, so `trainable = False` is the only switch that holds.

After changing `trainable`, the model must be compiled again (in both directions), which the
training stage does at every phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferctl import runtime
from transferctl.config.schema import Freeze
from transferctl.errors import UserError
from transferctl.model.preprocess import LAYER_NAME as PREPROCESS_LAYER_NAME


@dataclass(frozen=True)
class FreezeReport:
    frozen_layers: int
    trainable_layers: int
    trainable_batchnorm_layers: int
    trainable_weights: int
    trainable_params: int


def frozen_prefix(backbone: Any, freeze: Freeze, where: str) -> int:
    """How many leading backbone layers `freeze` keeps frozen."""
    count = len(backbone.layers)
    if freeze.mode == "all":
        return count
    if freeze.mode == "none":
        return 0
    if freeze.mode == "first":
        return min(int(freeze.value or 0), count)
    if freeze.mode == "last_trainable":
        return max(count - int(freeze.value or 0), 0)
    names = [layer.name for layer in backbone.layers]
    if freeze.value not in names:
        close = [name for name in names if str(freeze.value) in name][:5]
        raise UserError(
            f"{where}.until",
            f"the backbone has no layer named {freeze.value!r}"
            + (f" (similar: {', '.join(close)})" if close else ""),
            f"`transferctl backbones --layers {backbone.name}` lists the names",
        )
    return names.index(str(freeze.value))


def check_freezes(backbone: Any, model_freeze: Freeze, phase_freezes: list[Freeze | None]) -> None:
    """Check every freeze spec against the backbone's layer names, before any training."""
    frozen_prefix(backbone, model_freeze, "model.freeze")
    for index, freeze in enumerate(phase_freezes):
        if freeze is not None:
            frozen_prefix(backbone, freeze, f"train.phases.{index}.freeze")


def apply_freeze(
    model: Any, backbone: Any, freeze: Freeze, train_batchnorm: bool, where: str
) -> FreezeReport:
    """Set `trainable` on every backbone layer; the head always trains, preprocessing never."""
    batch_norm = runtime.keras().layers.BatchNormalization
    prefix = frozen_prefix(backbone, freeze, where)
    backbone.trainable = True
    trainable_bn = 0
    for index, layer in enumerate(backbone.layers):
        trains = index >= prefix
        if isinstance(layer, batch_norm) and not train_batchnorm:
            trains = False
        layer.trainable = trains
        if trains and isinstance(layer, batch_norm):
            trainable_bn += 1
    if prefix >= len(backbone.layers):
        backbone.trainable = False
    for layer in model.layers:
        if layer is not backbone and layer.name != PREPROCESS_LAYER_NAME:
            layer.trainable = True  # the head; the preprocessing constants never train
    return FreezeReport(
        frozen_layers=prefix,
        trainable_layers=len(backbone.layers) - prefix,
        trainable_batchnorm_layers=trainable_bn,
        trainable_weights=len(model.trainable_weights),
        trainable_params=int(sum(int(w.numpy().size) for w in model.trainable_weights)),
    )
