"""The backbone's own input preprocessing, as built-in Keras layers inside the model.

Keeping it in the model (the Keras transfer-learning guide's advice) means a saved or exported
model takes plain 0-255 RGB pixels. Built from Keras's own layers only, so a run's `model.keras`
loads with plain Keras, in a process that never imported transferctl, under `safe_mode=True`
(measured on Keras 3.15: a registered custom layer does not load there). This is the one
definition: the run's model, the exported `.keras` file and the serving graphs share it.

- `none`: `Identity` (EfficientNet, ConvNeXt, MobileNetV3 rescale themselves);
- `tf`: `Rescaling(1/127.5, offset=-1)` to [-1, 1];
- `caffe` (RGB->BGR minus the ImageNet mean) and `torch` ((x/255 - mean) / std) are per-pixel
  affine maps, so a frozen `Dense(3)` over the channel axis computes them; for `caffe` the
  kernel is a permutation, which keeps the result bit-identical to the subtraction.

`BackbonePreprocess`, the registered layer that runs written by transferctl 0.1 hold, stays
importable so those runs still load, evaluate, export and resume.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transferctl import runtime

keras = runtime.keras()
ops = keras.ops
Layer: Any = keras.layers.Layer

LAYER_NAME = "preprocess"
MODES = ("caffe", "tf", "torch", "none")
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def preprocess_layer(mode: str, name: str = LAYER_NAME) -> Any:
    """A built-in Keras layer mapping 0-255 RGB to what the backbone's weights expect.

    Example:
        x = preprocess_layer("caffe")(keras.Input((224, 224, 3)))

    Args:
        mode: `caffe`, `tf`, `torch` or `none` (`BackboneSpec.preprocess`).
        name: the layer's name. Defaults to `preprocess`.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {', '.join(MODES)}. Received: mode={mode}")
    if mode == "none":
        return keras.layers.Identity(name=name, dtype="float32", trainable=False)
    if mode == "tf":
        return keras.layers.Rescaling(
            1.0 / 127.5, offset=-1.0, name=name, dtype="float32", trainable=False
        )
    kernel, bias = _affine(mode)
    layer = keras.layers.Dense(3, name=name, dtype="float32", trainable=False)
    layer.build((None, None, None, 3))
    layer.set_weights([kernel, bias])
    return layer


def _affine(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Kernel [3, 3] and bias [3] of the per-pixel affine map `mode` applies."""
    if mode == "caffe":
        kernel = np.eye(3, dtype=np.float32)[::-1]  # row i (RGB) feeds column 2 - i (BGR)
        bias = -np.asarray(IMAGENET_MEAN_BGR, dtype=np.float32)
    else:
        std = np.asarray(TORCH_STD, dtype=np.float64)
        mean = np.asarray(TORCH_MEAN, dtype=np.float64)
        kernel = np.diag(1.0 / (255.0 * std)).astype(np.float32)
        bias = (-mean / std).astype(np.float32)
    return np.ascontiguousarray(kernel), bias


@keras.saving.register_keras_serializable(package="transferctl")
class BackbonePreprocess(Layer):
    """The preprocessing layer of runs written by transferctl 0.1 (kept to load them).

    New models use `preprocess_layer`; `export.portable.portable_keras_model` swaps this layer
    for it.
    """

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {', '.join(MODES)}. Received: mode={mode}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype=x.dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def without_legacy_layer(model: Any) -> Any:
    """`model` itself, or a copy whose `BackbonePreprocess` is replaced by `preprocess_layer`.

    The copy shares the weights of every other layer. Runs written by transferctl 0.1 hold
    the registered layer; this makes their models load without transferctl.
    """
    if not any(isinstance(layer, BackbonePreprocess) for layer in model.layers):
        return model

    def replace(layer: Any) -> Any:
        if isinstance(layer, BackbonePreprocess):
            return preprocess_layer(layer.mode, layer.name)
        return layer

    return keras.models.clone_model(model, clone_function=replace)


def is_legacy_checkpoint(weights_file: Any) -> bool:
    """Whether a `.weights.h5` checkpoint was written by a model holding `BackbonePreprocess`.

    Keras names a layer's group in the file after its class (`layers/backbone_preprocess`), so
    a resumed 0.1 run is rebuilt with the layer its checkpoint has weights for.
    """
    import h5py

    with h5py.File(str(weights_file), "r") as handle:
        return "layers/backbone_preprocess" in handle
