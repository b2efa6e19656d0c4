"""The serving graph's first steps: raw uint8 images of any size -> float32 at the input size.

Exports resize the way training does (`data.pipeline.decode_and_resize`: bilinear with
antialiasing), so an exported model and the Keras model agree on images of any size. The model
is always called with `training=False`: measured on Keras 3.15, `keras.layers.Resizing` or
`CenterCrop` in a serving graph make SavedModel and ONNX exports run BatchNorm in training mode.
"""

from __future__ import annotations

from typing import Any

from transferctl import runtime


def resize_like_training(images: Any, size: tuple[int, int]) -> Any:
    """uint8 or float [B, h, w, 3] -> float32 0-255 [B, H, W, 3], exactly as training resizes."""
    tf = runtime.tf()
    resized = tf.image.resize(tf.cast(images, tf.float32), size, antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)


def resize_by_matmul(images: Any, size: tuple[int, int]) -> Any:
    """`resize_like_training`, written with the matrix products every converter supports.

    `tf.image.resize(antialias=True)` runs the `ScaleAndTranslate` op, which tf2onnx cannot
    convert. Antialiased bilinear resizing is separable: each output row is a weighted sum of
    input rows with triangle weights widened by the downscale factor, normalized to sum to one
    (`_triangle_weights`), and the same for columns. Agrees with `tf.image.resize` to ~1e-4 on
    0-255 pixels, whatever the sizes.
    """
    tf = runtime.tf()
    height, width = size
    pixels = tf.cast(images, tf.float32)
    shape = tf.shape(pixels)
    channels_first = tf.transpose(pixels, [0, 3, 1, 2])  # [B, 3, h, w]
    rows = tf.matmul(_triangle_weights(shape[1], height), channels_first)  # [B, 3, H, w]
    both = tf.matmul(rows, _triangle_weights(shape[2], width), transpose_b=True)  # [B, 3, H, W]
    return tf.clip_by_value(tf.transpose(both, [0, 2, 3, 1]), 0.0, 255.0)


def _triangle_weights(in_size: Any, out_size: int) -> Any:
    """[out_size, in_size] weights of TensorFlow's antialiased bilinear `ScaleAndTranslate`.

    Output pixel x samples the input at (x + 0.5) * in/out; input pixel s (centre s + 0.5)
    weighs max(0, 1 - |distance| / k) with k = max(in/out, 1) (wider when shrinking).
    """
    tf = runtime.tf()
    inverse_scale = tf.cast(in_size, tf.float32) / float(out_size)
    kernel_scale = tf.maximum(inverse_scale, 1.0)
    centres = (tf.range(out_size, dtype=tf.float32) + 0.5) * inverse_scale
    sources = tf.cast(tf.range(in_size), tf.float32) + 0.5
    distance = tf.abs(sources[tf.newaxis, :] - centres[:, tf.newaxis]) / kernel_scale
    weights = tf.maximum(0.0, 1.0 - distance)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def decode_batch(image_bytes: Any, size: tuple[int, int]) -> Any:
    """Encoded images (JPEG, PNG, BMP, GIF) [B] -> float32 0-255 [B, H, W, 3], as training."""
    tf = runtime.tf()
    from transferctl.data.pipeline import decode_and_resize

    return tf.map_fn(
        lambda encoded: decode_and_resize(encoded, size),
        image_bytes,
        fn_output_signature=tf.TensorSpec([size[0], size[1], 3], tf.float32),
    )
