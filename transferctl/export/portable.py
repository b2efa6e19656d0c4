"""Keras models fit for export: loaded from the run, in float32, free of transferctl's own layers.

- A run trained with mixed precision holds float16/bfloat16 layers; exports are float32 (ONNX
  requires it, TFLite quantizes from float32), so the model is rebuilt with float32 policies and
  the same weights.
- The exported `.keras` file must load where transferctl is not installed: the registered
  `BackbonePreprocess` layer is swapped for built-in layers that compute the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.errors import UserError

_MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def load_run_model(path: Path) -> Any:
    """The run's `model.keras`, uncompiled, loaded safely (no arbitrary code)."""
    keras = runtime.keras()
    import transferctl.model.preprocess  # noqa: F401 - registers BackbonePreprocess

    try:
        with runtime.quiet_native_stderr():
            return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - a damaged file is the user's input
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise UserError(
            str(path),
            f"cannot load the model ({type(error).__name__}: {first_line})",
            "the file is damaged; train the run again",
        ) from None


def float32_model(model: Any) -> Any:
    """`model` itself when every layer computes in float32, else a float32 copy of it."""
    if all(layer.dtype_policy.name == "float32" for layer in _layers(model)):
        return model
    keras = runtime.keras()
    config = _float32_config(keras.saving.serialize_keras_object(model))
    rebuilt = keras.saving.deserialize_keras_object(config, safe_mode=True)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def portable_keras_model(model: Any) -> tuple[Any, list[str]]:
    """A copy of `model` that loads with plain Keras, and the custom objects it still needs.

    The copy shares the weights of every other layer; only the preprocessing layer is new.
    """
    keras = runtime.keras()
    from transferctl.model.preprocess import BackbonePreprocess

    kept: list[str] = []

    def replace(layer: Any) -> Any:
        if not isinstance(layer, BackbonePreprocess):
            return layer
        built_in = _built_in_preprocess(layer.mode, layer.name)
        if built_in is None:
            kept.append(f"transferctl>{type(layer).__name__}")
            return layer
        return built_in

    copy = keras.models.clone_model(model, clone_function=replace)
    return copy, kept


def _built_in_preprocess(mode: str, name: str) -> Any:
    """Built-in Keras layers computing `BackbonePreprocess(mode)`, or None for an unknown mode.

    `caffe` (RGB->BGR minus the mean) and `torch` ((x/255 - mean) / std) are per-pixel affine
    maps, so a frozen Dense(3) over the channel axis computes them; for `caffe` the kernel is a
    permutation, which keeps the result bit-identical.
    """
    keras = runtime.keras()
    from transferctl.model import preprocess

    if mode == "none":
        return keras.layers.Identity(name=name, dtype="float32")
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name, dtype="float32")
    if mode == "caffe":
        kernel = np.eye(3, dtype=np.float32)[::-1]  # row i (RGB) feeds column 2 - i (BGR)
        bias = -np.asarray(preprocess.IMAGENET_MEAN_BGR, dtype=np.float32)
    elif mode == "torch":
        std = np.asarray(preprocess.TORCH_STD, dtype=np.float64)
        mean = np.asarray(preprocess.TORCH_MEAN, dtype=np.float64)
        kernel = np.diag(1.0 / (255.0 * std)).astype(np.float32)
        bias = (-mean / std).astype(np.float32)
    else:
        return None
    layer = keras.layers.Dense(3, name=name, dtype="float32", trainable=False)
    layer.build((None, None, None, 3))
    layer.set_weights([np.ascontiguousarray(kernel), bias])
    return layer


def _layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def _float32_config(node: Any) -> Any:
    """A serialized model with every mixed dtype policy replaced by float32."""
    if isinstance(node, list):
        return [_float32_config(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
        if node["config"].get("name") in _MIXED_POLICIES:
            return {**node, "config": {**node["config"], "name": "float32"}}
        return node
    return {
        key: "float32" if key == "dtype" and value in _MIXED_POLICIES else _float32_config(value)
        for key, value in node.items()
    }
