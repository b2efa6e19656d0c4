"""Which backbone layers train: `all | none | {first: N} | {until: LAYER} | {last_trainable: N}
| {regex: PATTERN}`.

Layers are counted as in `backbone.layers` (as the Keras guide's `base_model.layers[:N]`).
Every mode resolves to a set of frozen layer indices: the first four to a prefix of the layers,
`{regex: PATTERN}` to the layers whose names match (`re.search`), wherever they are.
BatchNorm layers stay frozen, which in Keras 3 also keeps them in inference mode, unless
`train_batchnorm` is true: measured on Keras 3.15.1, `base(x, training=False)` inside a
functional model is ignored during `fit`, so `trainable = False` is the only switch that holds.

After changing `trainable`, the model must be compiled again (in both directions), which the
training stage does at every phase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from transferctl import runtime
from transferctl.config.schema import Freeze
from transferctl.errors import UserError, quote
from transferctl.model.classifier import FEATURE_NORM_NAME
from transferctl.model.lora import restrict_to_adapters
from transferctl.model.preprocess import LAYER_NAME as PREPROCESS_LAYER_NAME

LAYER_NAMES_HINT = (
    "`transferctl plan CONFIG --layers` or `transferctl backbones --layers BACKBONE` lists the "
    "layer names"
)


@dataclass(frozen=True)
class FreezeReport:
    """What `apply_freeze` did to the backbone, and what trains now."""

    frozen_layers: int  # backbone layers frozen by the spec
    trainable_layers: int  # the others (BatchNorm among them trains only with train_batchnorm)
    trainable_batchnorm_layers: int
    trainable_weights: int
    trainable_params: int
    backbone_frozen: bool = False  # every backbone layer frozen: its output never changes


def frozen_indices(backbone: Any, freeze: Freeze, where: str) -> frozenset[int]:
    """The indices in `backbone.layers` that `freeze` keeps frozen.

    Example:
        frozen = frozen_indices(backbone, Freeze(mode="regex", value="^block[1-4]_"), "x")

    Args:
        where: the config field of `freeze`, for error messages (e.g. `train.phases.1.freeze`).

    Raises:
        UserError: `{until: NAME}` names no layer, or `{regex: PATTERN}` matches none.
    """
    names = [layer.name for layer in backbone.layers]
    count = len(names)
    if freeze.mode == "regex":
        pattern = re.compile(str(freeze.value))
        matched = frozenset(i for i, name in enumerate(names) if pattern.search(name))
        if not matched:
            raise UserError(
                f"{where}.regex",
                f"{quote(str(freeze.value))} matches none of the backbone's {count} layer names "
                f"(they run from {names[0]!r} to {names[-1]!r})",
                LAYER_NAMES_HINT,
            )
        return matched
    return frozenset(range(_frozen_prefix(names, freeze, where)))


def _frozen_prefix(names: list[str], freeze: Freeze, where: str) -> int:
    """How many leading layers a prefix mode (all, none, first, until, last_trainable) freezes."""
    count = len(names)
    if freeze.mode == "all":
        return count
    if freeze.mode == "none":
        return 0
    if freeze.mode == "first":
        return min(int(freeze.value or 0), count)
    if freeze.mode == "last_trainable":
        return max(count - int(freeze.value or 0), 0)
    if freeze.value not in names:
        close = [name for name in names if str(freeze.value) in name][:5]
        raise UserError(
            f"{where}.until",
            f"the backbone has no layer named {quote(str(freeze.value))}"
            + (f" (similar: {', '.join(close)})" if close else ""),
            LAYER_NAMES_HINT,
        )
    return names.index(str(freeze.value))


def check_freezes(backbone: Any, model_freeze: Freeze, phase_freezes: list[Freeze | None]) -> None:
    """Check every freeze spec against the backbone's layer names, before any training."""
    frozen_indices(backbone, model_freeze, "model.freeze")
    for index, freeze in enumerate(phase_freezes):
        if freeze is not None:
            frozen_indices(backbone, freeze, f"train.phases.{index}.freeze")


def release_top(frozen: frozenset[int], count: int) -> frozenset[int]:
    """`frozen` less its `count` topmost layers: one step of gradual unfreezing.

    Works for any frozen set: for a prefix (`{first: N}`, `{until: ...}`, ...) it is the prefix
    `count` layers shorter; for `{regex: ...}` the `count` matching layers nearest the top train.
    """
    return frozenset(sorted(frozen)[: max(len(frozen) - count, 0)])


def apply_freeze(
    model: Any,
    backbone: Any,
    freeze: Freeze,
    train_batchnorm: bool,
    where: str,
    release: int = 0,
) -> FreezeReport:
    """Set `trainable` on every backbone layer; the head always trains, preprocessing never.

    Args:
        release: how many of the frozen layers nearest the top train anyway (gradual
            unfreezing, `release_top`). Defaults to `0`.
    """
    batch_norm = runtime.keras().layers.BatchNormalization
    frozen = release_top(frozen_indices(backbone, freeze, where), release)
    backbone.trainable = True
    trainable_bn = 0
    for index, layer in enumerate(backbone.layers):
        trains = index not in frozen
        if isinstance(layer, batch_norm) and not train_batchnorm:
            trains = False
        layer.trainable = trains
        if trains and isinstance(layer, batch_norm):
            trainable_bn += 1
    backbone_frozen = len(frozen) >= len(backbone.layers)
    if backbone_frozen:
        backbone.trainable = False
    for layer in model.layers:
        if layer is not backbone and layer.name not in (PREPROCESS_LAYER_NAME, FEATURE_NORM_NAME):
            layer.trainable = True  # the head; the preprocessing constants never train
    # feature_norm stays frozen, in inference mode: it standardises with the statistics set
    # from the features, not each batch's (per replica under tf.distribute)
    restrict_to_adapters(backbone)  # model.lora: in the training layers, only the adapters
    return FreezeReport(
        frozen_layers=len(frozen),
        trainable_layers=len(backbone.layers) - len(frozen),
        trainable_batchnorm_layers=trainable_bn,
        trainable_weights=len(model.trainable_weights),
        trainable_params=int(sum(int(w.numpy().size) for w in model.trainable_weights)),
        backbone_frozen=backbone_frozen,
    )
