"""SavedModel for TF Serving, TF.js and plain TensorFlow: raw images in, probabilities out.

Signatures (loadable with `tf.saved_model.load`, no transferctl needed):
- `serving_default`: `image` uint8 [batch, height, width, 3], any height and width ->
  `probabilities` float32 [batch, classes]. Resizing and preprocessing run inside.
- `serving_bytes`: `image_bytes` string [batch] of encoded JPEG/PNG/BMP/GIF files ->
  `probabilities`, decoded and resized as training reads files (EXIF orientation is not applied:
  TensorFlow's decoders ignore it, so send upright images).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.export.serving import decode_batch, resize_like_training
from transferctl.export.source import Samples

NAME = "saved_model"
IMAGE_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
OUTPUT = "probabilities"


def write(model: Any, target: Path, image_size: tuple[int, int]) -> dict[str, Any]:
    """Write the SavedModel folder at `target` (replaced whole); its description for export.json."""
    tf = runtime.tf()
    keras = runtime.keras()

    def classify_images(image: Any) -> dict[str, Any]:
        return {OUTPUT: model(resize_like_training(image, image_size), training=False)}

    def classify_bytes(image_bytes: Any) -> dict[str, Any]:
        return {OUTPUT: model(decode_batch(image_bytes, image_size), training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        IMAGE_SIGNATURE,
        classify_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")],
    )
    archive.add_endpoint(
        BYTES_SIGNATURE,
        classify_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    with _atomic_folder(target) as folder, runtime.quiet_native_stderr():
        archive.write_out(str(folder), verbose=False)
    return {
        "signatures": {
            IMAGE_SIGNATURE: {
                "inputs": {"image": {"dtype": "uint8", "shape": [None, None, None, 3]}},
                "outputs": {OUTPUT: {"dtype": "float32", "shape": [None, None]}},
                "note": "RGB pixels of any size; resized (bilinear, antialiased) and "
                "preprocessed inside",
            },
            BYTES_SIGNATURE: {
                "inputs": {"image_bytes": {"dtype": "string", "shape": [None]}},
                "outputs": {OUTPUT: {"dtype": "float32", "shape": [None, None]}},
                "note": "encoded JPEG, PNG, BMP or GIF files, decoded and resized like "
                "training; EXIF orientation is not applied (TensorFlow's decoders ignore it)",
            },
        },
    }


def predict(target: Path, samples: Samples) -> dict[str, np.ndarray]:
    """Load the folder with TensorFlow alone and run both signatures on the samples."""
    tf = runtime.tf()
    with runtime.quiet_native_stderr():
        loaded = tf.saved_model.load(str(target))
    by_image = loaded.signatures[IMAGE_SIGNATURE]
    by_bytes = loaded.signatures[BYTES_SIGNATURE]
    images = [
        np.asarray(by_image(image=tf.constant(raw[np.newaxis]))[OUTPUT])[0] for raw in samples.raw
    ]
    encoded = np.asarray(
        by_bytes(image_bytes=tf.constant(samples.encoded, dtype=tf.string))[OUTPUT]
    )
    return {IMAGE_SIGNATURE: np.stack(images), BYTES_SIGNATURE: encoded}


@contextlib.contextmanager
def _atomic_folder(target: Path) -> Iterator[Path]:
    """A new folder beside `target`, swapped in for it when the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)  # mkdtemp's 0700 would hide the model from a server user
    try:
        yield folder
        if target.exists():
            retired = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, retired / target.name)
            os.replace(folder, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(folder, target)
    finally:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
