"""Input-pipeline throughput: images per second that the tf.data pipelines deliver.

Measures the training pipeline (shuffle, decode, resize, augment, one-hot, prefetch) for the
in-memory digits and for a generated folder of JPEG files, with parallel map (AUTOTUNE) as
transferctl builds it, against the same pipeline with sequential map, so the gain of parallel
decoding is a measured number.

    .venv/bin/python bench/pipeline_throughput.py [--images 1200] [--size 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from transferctl import runtime
from transferctl.config.schema import Augment, Data
from transferctl.data import load_data


def throughput(dataset, epochs: int = 2) -> float:
    count = 0
    started = time.perf_counter()
    for _ in range(epochs):
        for images, _labels in dataset:
            count += int(images.shape[0])
    return count / (time.perf_counter() - started)


def make_folder(root: Path, images: int) -> Path:
    rng = np.random.default_rng(0)
    for index in range(images):
        folder = root / f"class_{index % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, size=(300, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:05d}.jpg", quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    tf = runtime.tf()
    augment = Augment(flip="horizontal", rotation=0.1, zoom=0.1)
    with tempfile.TemporaryDirectory() as temp:
        folder = make_folder(Path(temp) / "images", args.images)
        cases = {
            "digits (in memory, 8x8 -> size)": Data(
                source="digits",
                image_size=(args.size, args.size),
                validation_split=0.0,
                augment=augment,
            ),
            f"folder ({args.images} JPEG 400x300 -> size)": Data(
                source="folder",
                path=folder,
                image_size=(args.size, args.size),
                validation_split=0.0,
                augment=augment,
            ),
        }
        print(f"tf {tf.__version__}, image size {args.size}, batch 32, {args.images} files")
        for label, config in cases.items():
            bundle = load_data(config, seed=0)
            throughput(bundle.training(), epochs=1)  # warm-up: tracing, file cache
            parallel = throughput(bundle.training())
            with mock.patch.object(tf.data, "AUTOTUNE", None):
                sequential = throughput(bundle.training())
            print(
                f"{label:45s} parallel {parallel:8.0f} img/s   sequential {sequential:8.0f} "
                f"img/s   x{parallel / sequential:.2f}"
            )


if __name__ == "__main__":
    main()
