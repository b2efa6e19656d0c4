"""What an export is made from: the run's model, class names and input size, and its images.

The images serve two purposes: the parity gate (validation images first, then test, then
training, as decoded from disk at their own size) and int8 calibration (a few hundred training
images, resized like training, never augmented).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.config.loader import load_config
from transferctl.config.schema import Config
from transferctl.errors import UserError
from transferctl.files import NotReadable, read_regular
from transferctl.model import temperature
from transferctl.rundir import layout as rundir
from transferctl.rundir.reading import read_labels

PARITY_IMAGES = 100
CALIBRATION_IMAGES = 300
PARITY_SPLITS = ("val", "test", "train")


@dataclass
class Source:
    """A finished run, loaded for export."""

    run_dir: Path
    config: Config
    class_names: list[str]
    image_size: tuple[int, int]
    model: Any  # the Keras classifier, float32: float32 RGB 0-255 in, probabilities out
    data: Any = field(default=None, repr=False)  # the run's DataBundle, loaded on first use


@dataclass
class Samples:
    """The parity images, and what the Keras model says about them.

    `raw[i]` is image i as decoded (uint8, its own size); `encoded[i]` its file bytes (PNG for
    in-memory datasets); `resized[i]` the same image resized exactly like training, the input
    of the Keras model and of fixed-size exports; `reference[i]` the Keras probabilities.
    """

    raw: list[np.ndarray]
    encoded: list[bytes]
    resized: np.ndarray
    reference: np.ndarray
    counts: dict[str, int]

    def __len__(self) -> int:
        return len(self.raw)


def load_source(run_dir: Path) -> Source:
    """The run's config, class names and model (as float32); the data stays unloaded."""
    from transferctl.export.portable import float32_model, load_run_model

    config = load_config(run_dir / rundir.CONFIG)
    class_names = read_labels(
        run_dir / rundir.LABELS, empty_fix=f"restore the {rundir.LABELS} finetune wrote"
    )
    assert config.data.image_size is not None, "a run's config is resolved"
    model = temperature.calibrated(float32_model(load_run_model(run_dir / rundir.MODEL)), run_dir)
    outputs = int(tuple(model.output_shape)[-1])
    if outputs != len(class_names):
        raise UserError(
            str(run_dir / rundir.LABELS),
            f"names {len(class_names)} classes but the model has {outputs} outputs",
            f"restore the {rundir.LABELS} that finetune wrote",
        )
    return Source(
        run_dir=run_dir,
        config=config,
        class_names=class_names,
        image_size=tuple(config.data.image_size),  # type: ignore[arg-type]
        model=model,
    )


def run_data(source: Source) -> Any:
    """The run's data splits, rebuilt from its config (same source, same seed, same splits)."""
    if source.data is None:
        from transferctl.data import load_data

        try:
            source.data = load_data(source.config.data, source.config.seed)
        except UserError as error:
            raise UserError(
                error.where,
                f"{error.what} (export checks every file against the run's images, and int8 "
                "calibrates on them)",
                error.fix,
            ) from None
    return source.data


def parity_samples(source: Source, limit: int = PARITY_IMAGES) -> Samples:
    """Up to `limit` images: validation first, then test, then training, a seeded pick of each."""
    from transferctl.export.serving import resize_like_training

    data = run_data(source)
    rng = np.random.default_rng(source.config.seed)
    raw: list[np.ndarray] = []
    encoded: list[bytes] = []
    counts: dict[str, int] = {}
    for split in PARITY_SPLITS:
        wanted = limit - len(raw)
        if wanted <= 0 or not data.has(split):
            continue
        examples = data.examples[split]
        picked = np.sort(rng.permutation(len(examples))[:wanted])
        decoded = [_decode(examples, int(index)) for index in picked]
        readable = [item for item in decoded if item is not None]
        raw.extend(image for image, _ in readable)
        encoded.extend(file_bytes for _, file_bytes in readable)
        counts[split] = len(readable)
    if not raw:
        raise UserError(
            str(source.run_dir / rundir.CONFIG),
            "the run's data has no images to check the export on",
            "restore the training data the run was made from",
        )
    resized = np.stack(
        [np.asarray(resize_like_training(image[None], source.image_size))[0] for image in raw]
    )
    reference = predict_keras(source.model, resized)
    return Samples(raw, encoded, resized, reference, counts)


def calibration_images(source: Source, limit: int = CALIBRATION_IMAGES) -> np.ndarray:
    """Up to `limit` training images, float32 0-255 at the input size, read like training."""
    data = run_data(source)
    examples = data.examples["train"]
    rng = np.random.default_rng(source.config.seed + 1)
    picked = np.sort(rng.permutation(len(examples))[:limit])
    subset = dataclasses.replace(data, examples={"train": examples.take(picked)})
    return np.concatenate([np.asarray(images) for images, _ in subset.plain("train")])


def predict_keras(model: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Inference-mode probabilities, float32 [N, classes]."""
    outputs = [
        np.asarray(model(images[start : start + batch_size], training=False), dtype=np.float32)
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs)


def _decode(examples: Any, index: int) -> tuple[np.ndarray, bytes] | None:
    """Image `index` as uint8 [h, w, 3] the way training decodes it, and its encoded bytes.

    None for a file that can no longer be read (changed since training): the sample skips it.
    """
    tf = runtime.tf()
    if examples.images is not None:
        image = np.asarray(examples.images[index], dtype=np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        return image, bytes(tf.io.encode_png(image).numpy())
    try:
        file_bytes = read_regular(Path(examples.paths[index]))  # never blocks on a FIFO
        image = tf.io.decode_image(file_bytes, channels=3, expand_animations=False)
    except (NotReadable, tf.errors.OpError):
        return None
    return np.asarray(image), file_bytes
