"""Low-rank adapters (`model.lora`) through Keras's own `enable_lora`, merged for saving.

Keras 3.15's `Dense.enable_lora(rank, lora_alpha)` (and `EinsumDense`'s and the convolutions')
adds `lora_kernel_a` [..., in, r] (He-uniform) and `lora_kernel_b` [r, out] (zeros: the model
starts unchanged), computes with `kernel + (alpha / r) * A @ B` (the `kernel` property) and
freezes the raw kernel (depthwise, separable and transposed convolutions have no LoRA in Keras).
It does not freeze the bias, and setting `layer.trainable` again (every phase does) makes the raw
kernel trainable again; Keras has no way back to a plain layer. So:

- `enable` puts adapters on the target layers of the backbone once, when the model is built;
- `restrict_to_adapters` (called by `freezing.apply_freeze` after every freeze) leaves, in the
  backbone layers that train, only the adapters trainable;
- `merged_copy` is the model as saved: a model built without LoRA holding every weight, with the
  kernels of adapted layers replaced by their merged value, so model.keras has the parameter count
  of the model without LoRA and plain layers that load anywhere.

Example:
    adapted = enable(backbone, Lora(rank=8, alpha=16))  # the adapted layers' paths
    saved = merged_copy(model, lambda: build_classifier(...)[0])
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.config.schema import Lora
from transferctl.errors import UserError

ADAPTER_NAMES = ("lora_kernel_a", "lora_kernel_b")


def _convolutions() -> tuple[type, ...]:
    layers = runtime.keras().layers
    return (layers.Conv1D, layers.Conv2D, layers.Conv3D)


def target_layers(backbone: Any, target: str) -> list[Any]:
    """The backbone's layers (nested ones too) that `target` selects: `auto` is every Dense and
    EinsumDense layer, or every convolution when there is none (a CNN); a pattern picks among
    both kinds by path."""
    layers = runtime.keras().layers
    every = list(backbone._flatten_layers(include_self=False))
    dense = [layer for layer in every if isinstance(layer, (layers.Dense, layers.EinsumDense))]
    convolutions = [layer for layer in every if isinstance(layer, _convolutions())]
    if target == "auto":
        return dense or convolutions
    pattern = re.compile(target)
    return [layer for layer in dense + convolutions if pattern.search(layer.path)]


def kinds(layers: list[Any]) -> str:
    """What the adapted layers are, for the plan: e.g. "12 Dense/EinsumDense layers"."""
    convolutions = sum(isinstance(layer, _convolutions()) for layer in layers)
    parts = [
        f"{count} {name}"
        for count, name in ((len(layers) - convolutions, "Dense/EinsumDense layers"),
                            (convolutions, "convolutions"))
        if count
    ]  # fmt: skip
    return " and ".join(parts) or "no layer"


def enable(backbone: Any, lora: Lora) -> list[str]:
    """Adapters of `lora.rank` on the target layers; their paths.

    Raises:
        UserError: no layer of the backbone is a target (a conv backbone has no Dense layer).
    """
    chosen = target_layers(backbone, lora.target)
    if not chosen:
        raise UserError(
            "model.lora.target",
            f"{lora.target!r} selects none of the backbone's Dense, EinsumDense or convolution "
            "layers",
            "LoRA adapts Dense, EinsumDense and Conv1D/2D/3D layers (not depthwise ones); "
            "`transferctl plan CONFIG --layers` lists the layers",
        )
    alpha = lora.alpha if lora.alpha is not None else lora.rank
    for layer in chosen:
        layer.enable_lora(lora.rank, lora_alpha=alpha)
    return [layer.path for layer in chosen]


def adapted_layers(model: Any) -> list[Any]:
    """The layers of `model` (nested ones too) that carry adapters."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if getattr(layer, "lora_enabled", False)
    ]


def restrict_to_adapters(backbone: Any) -> None:
    """In the backbone's training layers, only the adapters train (nothing without adapters)."""
    if not adapted_layers(backbone):
        return
    for variable in backbone.trainable_weights:
        if variable.name not in ADAPTER_NAMES:
            variable.trainable = False


def adapter_params(model: Any) -> int:
    """How many parameters the adapters hold (trainable or not)."""
    return sum(
        int(np.prod(variable.shape)) for variable in model.weights if variable.name in ADAPTER_NAMES
    )


def merged_copy(model: Any, build_plain: Callable[[], Any]) -> Any:
    """`model` itself without adapters; else a model from `build_plain` (the same architecture
    without LoRA) holding `model`'s weights with every adapted kernel merged:
    `kernel + (alpha / rank) * lora_kernel_a @ lora_kernel_b` (Keras's `kernel` property)."""
    adapted = adapted_layers(model)
    if not adapted:
        return model
    merged = {id(layer._kernel): layer.kernel for layer in adapted}
    values = [
        np.asarray(merged.get(id(variable), variable))
        for variable in model.weights
        if variable.name not in ADAPTER_NAMES
    ]
    plain = build_plain()
    if len(plain.weights) != len(values):
        raise RuntimeError(
            f"the model without LoRA has {len(plain.weights)} weights, the adapted one "
            f"{len(values)} besides its adapters"
        )
    plain.set_weights(values)
    return plain
