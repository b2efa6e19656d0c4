"""The feature cache: a phase that trains only the head on a frozen backbone runs it once.

In such a phase (the whole backbone frozen, so BatchNorm in inference mode, and no
augmentation), the pooled backbone output of an image never changes. So the backbone runs once
per image of each split; the head then trains for every epoch on those features, in memory
when they fit `MEMORY_BUDGET_BYTES`, else in a memory-mapped file under the run's checkpoints/.
The head model shares its layers with the full model, so what it learns is in the full model:
model.keras, evaluate and export see one ordinary model.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from transferctl import runtime
from transferctl.config.schema import Augment
from transferctl.data import DataBundle, pipeline, recipe
from transferctl.errors import UserError
from transferctl.labels import SPLITS
from transferctl.train.progress import progress_bars

MEMORY_BUDGET_BYTES = 1 << 30
POOL_LAYER = "pool"


@dataclass(frozen=True)
class CacheDecision:
    """Whether a phase trains on cached features, and why (or why not), in words."""

    use: bool
    reason: str


def augmentation_on(augment: Augment) -> bool:
    """Whether any training augmentation is on, the recipe's (`data/recipe.py`) included."""
    return (
        augment.flip != "none"
        or any(
            value > 0
            for value in (augment.rotation, augment.zoom, augment.contrast, augment.translate)
        )
        or recipe.recipe_on(augment)
    )


def decide(
    setting: str, backbone_frozen: bool, augment: Augment, unfreezing: bool = False
) -> CacheDecision:
    """The cache decision for one phase.

    Args:
        setting: `train.feature_cache` (`auto` or `off`).
        backbone_frozen: every backbone layer is frozen in this phase (at its start).
        augment: `data.augment`; any augmentation changes the features every epoch.
        unfreezing: the phase unfreezes layers as it goes (`unfreeze`). Defaults to `False`.
    """
    if setting == "off":
        return CacheDecision(False, "train.feature_cache is off")
    if unfreezing:
        return CacheDecision(False, "gradual unfreezing")
    if not backbone_frozen:
        return CacheDecision(False, "part of the backbone trains")
    if augmentation_on(augment):
        return CacheDecision(False, "augmentation is on (data.augment)")
    return CacheDecision(True, "the backbone is frozen and nothing is augmented")


@dataclass
class Features:
    """Pooled backbone features and one-hot labels of each split, in the splits' order."""

    inputs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    seconds: float

    def count(self, split: str) -> int:
        return int(self.labels[split].shape[0]) if split in self.labels else 0


def extract(
    model: Any, data: DataBundle, spill_dir: Path, console: Console | None = None
) -> Features:
    """Run the frozen backbone (and pooling) once over every image of every split.

    Arrays go to memory while the whole set fits `MEMORY_BUDGET_BYTES`, else to `.npy` files
    in `spill_dir`, memory-mapped (removed by `discard`). On a terminal `console`, a bar
    counts the images (it goes when the pass is done).
    """
    keras = runtime.keras()
    started = time.perf_counter()
    pooled = keras.Model(model.inputs, model.get_layer(POOL_LAYER).output)
    width = int(pooled.output.shape[-1])
    total = sum(data.count(split) for split in SPLITS) * width * 4
    on_disk = total > MEMORY_BUDGET_BYTES
    if on_disk:
        _check_room(spill_dir, total)
    inputs: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}

    @runtime.tf().function(reduce_retracing=True)
    def forward(images: Any) -> Any:
        return pooled(images, training=False)

    with image_bar(console, sum(data.count(split) for split in SPLITS if data.has(split))) as seen:
        for split in (split for split in SPLITS if data.has(split)):
            _extract_split(data, split, forward, width, on_disk, spill_dir, inputs, labels, seen)
    return Features(inputs, labels, time.perf_counter() - started)


def _extract_split(
    data: DataBundle,
    split: str,
    forward: Any,
    width: int,
    on_disk: bool,
    spill_dir: Path,
    inputs: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    seen: Callable[[int], None],
) -> None:
    """One split's features (and one-hot labels) into `inputs` and `labels`."""
    count = data.count(split)
    array: np.ndarray
    if on_disk:
        spill_dir.mkdir(parents=True, exist_ok=True)
        path = spill_dir / f"features-{split}.npy"
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, width))
        _reserve(path, spill_dir)
    else:
        array = np.empty((count, width), np.float32)
    onehot = np.empty((count, data.num_classes), np.float32)
    done = 0
    for images, batch_labels in data.plain(split):
        size = int(images.shape[0])
        array[done : done + size] = np.asarray(forward(images), dtype=np.float32)
        onehot[done : done + size] = batch_labels.numpy()
        done += size
        seen(size)
    inputs[split], labels[split] = array[:done], onehot[:done]


SPILL_MARGIN_BYTES = 64 * 2**20  # left free beside the spill (checkpoints, logs)


def free_bytes(folder: Path) -> int:
    """Free space on the disk that holds `folder` (or the nearest folder above it)."""
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _check_room(spill_dir: Path, total: int) -> None:
    """The disk holds the spill files (checked before any is written).

    Raises:
        UserError: it does not.
    """
    free = free_bytes(spill_dir)
    if free < total + SPILL_MARGIN_BYTES:
        raise UserError(
            "train.feature_cache",
            f"the cached features need {total / 2**20:,.0f} MiB on {spill_dir.parent} (they do "
            f"not fit the memory budget), {SPILL_MARGIN_BYTES / 2**20:.0f} MiB more to spare, "
            f"and only {free / 2**20:,.0f} MiB is free",
            "free some space and resume the run, or set train.feature_cache: off",
        )


def _reserve(path: Path, spill_dir: Path) -> None:
    """Allocate every block of a memory-mapped spill file now: a disk that fills while the
    pages are written kills the process with SIGBUS, no message; this fails first, in one line.

    Raises:
        UserError: the disk has no room for it (the spill files are removed).
    """
    size = os.path.getsize(path)
    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            return  # a file system without fallocate: written as before
        discard(spill_dir)
        raise UserError(
            "train.feature_cache",
            f"no room on {spill_dir} for the cached features ({size / 2**20:.0f} MiB for "
            f"{path.name}): {error.strerror}",
            "free some space and resume the run, or set train.feature_cache: off",
        ) from None


@contextlib.contextmanager
def image_bar(console: Console | None, total: int) -> Iterator[Callable[[int], None]]:
    """A transient bar of the images the backbone has seen, on a terminal; what advances it."""
    if console is None or not console.is_terminal:
        yield lambda count: None
        return
    bars = progress_bars(console, transient=True)
    task = bars.add_task("feature cache", total=total, metrics="images through the backbone")
    with bars:
        yield lambda count: bars.advance(task, count)


def discard(spill_dir: Path) -> None:
    """Remove features spilled to disk (the run directory keeps no cache once a phase ends)."""
    for path in spill_dir.glob("features-*.npy"):
        path.unlink(missing_ok=True)


def head_model(model: Any) -> Any:
    """The classifier's head alone, features in, sharing the full model's layers (and weights)."""
    keras = runtime.keras()
    names = [layer.name for layer in model.layers]
    start = names.index(POOL_LAYER) + 1
    features = keras.Input(model.get_layer(POOL_LAYER).output.shape[1:], name="features")
    x = features
    for layer in model.layers[start:]:
        x = layer(x)
    return keras.Model(features, x, name="transferctl_head")


def training_dataset(
    features: Features, batch_size: int, seed: int, extra: np.ndarray | None = None
) -> Any:
    """Cached training features, reshuffled every epoch (by seed).

    Args:
        extra: one row per training image (a distillation teacher's outputs), shuffled with
            its features; batches are then `((features, extra), labels)`. Defaults to `None`.
    """
    tf = runtime.tf()
    order = tf.data.Dataset.range(features.count("train")).shuffle(
        features.count("train"), seed=seed, reshuffle_each_iteration=True
    )
    return _gather(features, "train", order.batch(batch_size), extra)


def plain_dataset(features: Features, split: str, batch_size: int) -> Any:
    """Cached features of `split`, in order."""
    tf = runtime.tf()
    return _gather(features, split, tf.data.Dataset.range(features.count(split)).batch(batch_size))


def _gather(
    features: Features, split: str, index_batches: Any, extra: np.ndarray | None = None
) -> Any:
    """Batches of (features, labels) by index: from tensors in memory, or from the spill files."""
    tf = runtime.tf()
    inputs, labels = features.inputs[split], features.labels[split]
    labels_tensor = tf.constant(labels)
    extra_tensor = None if extra is None else tf.constant(extra)
    if isinstance(inputs, np.memmap):
        # memory maps read fastest in order; a batch is a set, so its indices are sorted
        index_batches = index_batches.map(tf.sort)

        def read(index: np.ndarray) -> np.ndarray:
            return np.asarray(inputs[index])

        def load(index: Any) -> Any:
            found = tf.numpy_function(read, [index], tf.float32)
            return tf.ensure_shape(found, [None, inputs.shape[1]])
    else:
        inputs_tensor = tf.constant(inputs)

        def load(index: Any) -> Any:
            return tf.gather(inputs_tensor, index)

    def batch(index: Any) -> Any:
        x = load(index)
        if extra_tensor is not None:
            x = (x, tf.gather(extra_tensor, index))
        return x, tf.gather(labels_tensor, index)

    batches = index_batches.map(batch, num_parallel_calls=tf.data.AUTOTUNE)
    return pipeline.steady(batches.prefetch(tf.data.AUTOTUNE))
