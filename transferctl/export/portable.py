"""Keras models fit for export: loaded from the run, in float32, free of transferctl's own layers.

- A run trained with mixed precision holds float16/bfloat16 layers; exports are float32 (ONNX
  requires it, TFLite quantizes from float32), so the model is rebuilt with float32 policies and
  the same weights.
- The exported `.keras` file must load where transferctl is not installed: a run written by
  transferctl 0.1 holds the registered `BackbonePreprocess` layer, swapped for built-in layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferctl import runtime
from transferctl.rundir.model_file import load_model_file, model_not_loaded

_MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def load_run_model(path: Path) -> Any:
    """The run's `model.keras`, uncompiled, loaded safely (no arbitrary code)."""
    import transferctl.model.preprocess  # noqa: F401 - registers BackbonePreprocess (0.1 runs)

    return load_model_file(
        path, explain=model_not_loaded("the file is damaged; train the run again")
    )


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
    """A model that loads with plain Keras, and the custom objects it still needs (none).

    Models built by this version are portable as they are; a run written by transferctl 0.1
    holds the registered `BackbonePreprocess` layer, swapped here for the built-in layers that
    compute the same thing (`model.preprocess.without_legacy_layer`).
    """
    from transferctl.model.preprocess import without_legacy_layer

    return without_legacy_layer(model), []


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
