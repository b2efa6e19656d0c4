"""tf.data pipelines: decode, resize, batch, augment (train only), one-hot, prefetch.

Images leave the pipeline as float32 RGB in 0-255 at the model's input size; the backbone's own
preprocessing lives inside the model, so exported models carry it. TensorFlow's decoders ignore
EXIF orientation: files that carry one (`Examples.orientation`, found by the folder audit) are
turned upright in the graph before resizing, as Pillow's `ImageOps.exif_transpose` does.

The training images of a folder are decoded and resized once and kept in memory after the first
epoch when they fit a budget (`decode_cache_fits`; `TRANSFERCTL_DECODE_CACHE_MB`, default 128):
later epochs then only shuffle, augment and batch. Evaluation sets are read as they stream.

tf.data's autotuning model is off (`steady`): with it on, destroying an epoch's iterator at the
start of the next sometimes waited, idle, for the model thread's next wake-up (18-45 s seen at the
start of a 15-s epoch; bench/README.md, "Idle epochs"). Parallel maps then run at the default
parallelism autotuning starts from (the cores, at most 16), and `prefetch(AUTOTUNE)` sizes its
buffer with its own tuner, as before.
"""

from __future__ import annotations

import os
from typing import Any

from transferctl import runtime
from transferctl.config.schema import Augment
from transferctl.data import recipe
from transferctl.data.examples import Examples


def make_dataset(
    examples: Examples,
    image_size: tuple[int, int],
    batch_size: int,
    num_classes: int,
    *,
    shuffle_seed: int | None = None,
    augmenter: Any = None,
    mixer: Any = None,
    drop_remainder: bool = False,
    skip_unreadable: bool = False,
    extra: Any = None,
    keep: bool = False,
) -> Any:
    """Batches of (float32 images 0-255 at `image_size`, one-hot labels), prefetched.

    Args:
        mixer: MixUp or CutMix over each batch once the labels are one-hot
            (`recipe.make_mixer`): the labels come out soft. Not with `extra`. Defaults to
            `None`.
        skip_unreadable: drop a file that fails to decode instead of stopping: a safety net for
            folders already audited (a file changed since, or a decoder disagreement), so that
            nothing crashes mid-epoch. Defaults to `False`.
        extra: an array with one row per example (a distillation teacher's outputs) that
            travels with its image, shuffled and skipped with it; batches are then
            `((images, extra), labels)`. Defaults to `None`.
        keep: keep a folder's decoded images in memory after the first pass (a split read
            every epoch; the caller checked `decode_cache_fits`). The training set (with
            `shuffle_seed`) is kept whenever it fits. Defaults to `False`.
    """
    if mixer is not None and extra is not None:
        raise ValueError("`mixer` mixes (images, labels) batches; it cannot carry `extra` rows")
    tf = runtime.tf()
    autotune = tf.data.AUTOTUNE
    carried = () if extra is None else (extra,)
    if examples.images is not None:
        dataset = _array_batches(
            examples, carried, image_size, batch_size, shuffle_seed, drop_remainder
        )
    else:
        dataset = _file_images(
            examples, carried, image_size, shuffle_seed, skip_unreadable=skip_unreadable, keep=keep
        ).batch(batch_size, drop_remainder=drop_remainder)

    if augmenter is not None:
        dataset = dataset.map(
            lambda images, *rest: (augmenter(images, training=True), *rest),
            num_parallel_calls=autotune,
        )

    def finish(images: Any, labels: Any, *rows: Any) -> Any:
        onehot = tf.one_hot(labels, num_classes)
        return ((images, rows[0]), onehot) if rows else (images, onehot)

    dataset = dataset.map(finish, num_parallel_calls=autotune)
    if mixer is not None:
        dataset = dataset.map(mixer, num_parallel_calls=autotune)
    return steady(dataset.prefetch(autotune))


def _array_batches(
    examples: Examples,
    carried: tuple[Any, ...],
    image_size: tuple[int, int],
    batch_size: int,
    shuffle_seed: int | None,
    drop_remainder: bool,
) -> Any:
    """Batches of in-memory images (digits, CIFAR) resized to `image_size`, with their labels
    (and `carried` rows)."""
    tf = runtime.tf()
    dataset = tf.data.Dataset.from_tensor_slices((examples.images, examples.labels, *carried))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(examples), seed=shuffle_seed)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def resize_batch(images: Any, *rest: Any) -> Any:
        # the same resize as files, `predict` and the exports: one definition of the pixels
        return resize(images, image_size), *rest

    return dataset.map(resize_batch, num_parallel_calls=tf.data.AUTOTUNE)


def _file_images(
    examples: Examples,
    carried: tuple[Any, ...],
    image_size: tuple[int, int],
    shuffle_seed: int | None,
    *,
    skip_unreadable: bool,
    keep: bool,
) -> Any:
    """Image files decoded, turned upright and resized to `image_size`, one by one, with their
    labels (and `carried` rows); decoded once and kept in memory where `make_dataset` says."""
    tf = runtime.tf()
    assert examples.paths is not None
    orientation = examples.orientation
    oriented = orientation is not None and bool((orientation != 1).any())
    columns: tuple[Any, ...] = (examples.paths, examples.labels, *carried)
    if oriented:
        columns = (examples.paths, orientation, examples.labels, *carried)
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    # the training set, read every epoch: decoded once, kept in memory when it fits
    cached = keep or (shuffle_seed is not None and decode_cache_fits(len(examples), image_size))
    if shuffle_seed is not None and not cached:
        dataset = dataset.shuffle(len(examples), seed=shuffle_seed)

    def load(path: Any, *rest: Any) -> Any:
        image = decode(tf.io.read_file(path))
        if oriented:  # a file's EXIF orientation, then its label (and extra)
            image, rest = orient(image, rest[0]), rest[1:]
        return resize(image, image_size), *rest

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if skip_unreadable:
        dataset = dataset.ignore_errors(log_warning=True)
    if cached:
        dataset = dataset.cache()
    if cached and shuffle_seed is not None:
        # same seed, same count: the same order as shuffling the paths
        dataset = dataset.shuffle(len(examples), seed=shuffle_seed)
    return dataset


def steady(dataset: Any) -> Any:
    """`dataset` with tf.data's autotuning model off (see the module docstring); the options
    carry on to the transformations that follow."""
    options = runtime.tf().data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


DECODE_CACHE_MIB = 128  # default memory budget of the decoded training images (bench/memory.py)
DECODE_CACHE_ENV = "TRANSFERCTL_DECODE_CACHE_MB"


def decode_cache_budget() -> int:
    """Bytes the decoded training images may take in memory: `$TRANSFERCTL_DECODE_CACHE_MB`
    (0 turns the cache off), else `DECODE_CACHE_MIB`."""
    value = os.environ.get(DECODE_CACHE_ENV, "").strip()
    try:
        megabytes = float(value) if value else DECODE_CACHE_MIB
    except ValueError:
        megabytes = DECODE_CACHE_MIB
    return max(0, int(megabytes * 2**20))


def decode_cache_fits(count: int, image_size: tuple[int, int]) -> bool:
    """Whether `count` decoded images (float32 RGB at `image_size`) fit the cache's budget."""
    needed = count * image_size[0] * image_size[1] * 3 * 4
    return 0 < needed <= decode_cache_budget()


def decode_and_resize(encoded: Any, image_size: tuple[int, int]) -> Any:
    """Encoded bytes (JPEG, PNG, BMP, GIF first frame; any channel mode) -> float32 RGB 0-255."""
    return resize(decode(encoded), image_size)


def decode(encoded: Any) -> Any:
    """Encoded bytes -> uint8 RGB [H, W, 3]: grey, alpha, palette, CMYK, 16-bit all converted."""
    tf = runtime.tf()
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def resize(image: Any, image_size: tuple[int, int]) -> Any:
    """An image [H, W, 3] (or a batch of them) -> float32 0-255 at `image_size`, antialiased."""
    tf = runtime.tf()
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def orient(image: Any, orientation: Any) -> Any:
    """Undo an EXIF orientation (1-8; anything else is left alone), as `exif_transpose` does."""
    tf = runtime.tf()
    transposed = tf.image.transpose
    branches = [
        lambda: image,  # 1: as stored (index 0 stands for any out-of-range value)
        lambda: image,
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, 2),
        lambda: tf.image.flip_up_down(image),
        lambda: transposed(image),
        lambda: tf.image.rot90(image, 3),  # 90 degrees clockwise
        lambda: tf.image.rot90(transposed(image), 2),  # transverse
        lambda: tf.image.rot90(image, 1),
    ]
    index = tf.cast(orientation, tf.int32)
    index = tf.where((index >= 1) & (index <= 8), index, 0)
    return tf.switch_case(index, branches)


def make_augmenter(augment: Augment, seed: int) -> Any:
    """Train-only augmentation as Keras preprocessing layers, or None when nothing is on; the
    recipe's per-image layers (`recipe.image_layers`) come last."""
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
    steps += recipe.image_layers(augment, seed)
    if not steps:
        return None
    return runtime.keras().Sequential(steps, name="augment")
