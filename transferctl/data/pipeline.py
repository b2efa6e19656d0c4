"""tf.data pipelines: decode, resize, batch, augment (train only), one-hot, prefetch.

Images leave the pipeline as float32 RGB in 0-255 at the model's input size; the backbone's own
preprocessing lives inside the model, so exported models carry it.
"""

from __future__ import annotations

from typing import Any

from transferctl import runtime
from transferctl.config.schema import Augment
from transferctl.data.examples import Examples


def make_dataset(
    examples: Examples,
    image_size: tuple[int, int],
    batch_size: int,
    num_classes: int,
    *,
    shuffle_seed: int | None = None,
    augmenter: Any = None,
    drop_remainder: bool = False,
) -> Any:
    tf = runtime.tf()
    autotune = tf.data.AUTOTUNE
    height, width = image_size

    if examples.images is not None:
        dataset = tf.data.Dataset.from_tensor_slices((examples.images, examples.labels))
        if shuffle_seed is not None:
            dataset = dataset.shuffle(len(examples), seed=shuffle_seed)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

        def resize_batch(images: Any, labels: Any) -> Any:
            images = tf.image.resize(tf.cast(images, tf.float32), (height, width))
            return tf.clip_by_value(images, 0.0, 255.0), labels

        dataset = dataset.map(resize_batch, num_parallel_calls=autotune)
    else:
        assert examples.paths is not None
        dataset = tf.data.Dataset.from_tensor_slices((examples.paths, examples.labels))
        if shuffle_seed is not None:
            dataset = dataset.shuffle(len(examples), seed=shuffle_seed)

        def load(path: Any, label: Any) -> Any:
            return decode_and_resize(tf.io.read_file(path), image_size), label

        dataset = dataset.map(load, num_parallel_calls=autotune)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    if augmenter is not None:
        dataset = dataset.map(
            lambda images, labels: (augmenter(images, training=True), labels),
            num_parallel_calls=autotune,
        )
    dataset = dataset.map(
        lambda images, labels: (images, tf.one_hot(labels, num_classes)),
        num_parallel_calls=autotune,
    )
    return dataset.prefetch(autotune)


def decode_and_resize(encoded: Any, image_size: tuple[int, int]) -> Any:
    """Encoded bytes (JPEG, PNG, BMP, GIF first frame; any channel mode) -> float32 RGB 0-255."""
    tf = runtime.tf()
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def make_augmenter(augment: Augment, seed: int) -> Any:
    """Train-only augmentation as Keras preprocessing layers, or None when nothing is on."""
    layers = runtime.keras().layers
    steps: list[Any] = []
    if augment.flip != "none":
        steps.append(layers.RandomFlip(augment.flip, seed=seed))
    if augment.rotation > 0:
        steps.append(layers.RandomRotation(augment.rotation, seed=seed + 1))
    if augment.zoom > 0:
        steps.append(layers.RandomZoom(augment.zoom, seed=seed + 2))
    if augment.translate > 0:
        steps.append(layers.RandomTranslation(augment.translate, augment.translate, seed=seed + 3))
    if augment.contrast > 0:
        steps.append(layers.RandomContrast(augment.contrast, seed=seed + 4))
    if not steps:
        return None
    return runtime.keras().Sequential(steps, name="augment")
