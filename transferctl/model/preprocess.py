"""The backbone's own input preprocessing, as a serializable layer inside the model.

Keeping it in the model (the Keras transfer-learning guide's advice) means a saved or exported
model takes plain 0-255 RGB pixels. A registered layer, not a `Lambda`, so `.keras` files load
under `safe_mode=True`.
"""

from __future__ import annotations

from typing import Any

from transferctl import runtime

keras = runtime.keras()
ops = keras.ops
Layer: Any = keras.layers.Layer

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="transferctl")
class BackbonePreprocess(Layer):
    """0-255 RGB in, what the backbone's ImageNet weights expect out.

    Args:
        mode: `caffe` (RGB->BGR minus the ImageNet mean), `tf` (scale to [-1, 1]), `torch`
            (scale to [0, 1], ImageNet mean/std) or `none` (the backbone rescales itself).
    """

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch", "none"):
            raise ValueError(f"`mode` must be caffe, tf, torch or none. Received: mode={mode}")
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
