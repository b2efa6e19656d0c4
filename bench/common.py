"""Helpers the benches share: a folder of digit images, the machine, timing summaries."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits_folder(root: Path, side: int = 32, images: int = 1797) -> Path:
    """scikit-learn's 1,797 digits as class folders of image files (JPEG and PNG alternately),
    upscaled from 8x8 to `side` pixels; more `images` repeat the set (shifted by a pixel)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    gray = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    count = 0
    for copy in range(-(-images // len(gray))):
        for index, (pixels, label) in enumerate(zip(gray, bunch.target, strict=True)):
            if count == images:
                return root
            folder = root / f"digit_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(np.roll(pixels, copy % 3, axis=1)).convert("RGB")
            image = image.resize((side, side), Image.Resampling.BILINEAR)
            extension = "jpg" if index % 2 == 0 else "png"
            image.save(folder / f"{copy:03d}_{index:05d}.{extension}")
            count += 1
    return root


def scratch_config(
    path: Path, folder: Path, runs_dir: Path, *, size: int, batch: int, epochs: int, name: str
) -> Path:
    """Write a config training MobileNetV3Small from scratch on `folder` (10% validation, no
    augmentation, one phase at 1e-3) to `path`: the benches' run through the real CLI."""
    import yaml

    body = {
        "name": name,
        "seed": 1,
        "data": {
            "source": "folder",
            "path": str(folder),
            "image_size": [size, size],
            "batch_size": batch,
            "validation_split": 0.1,
            "test_split": 0.0,
            "augment": {"flip": "none"},
        },
        "model": {
            "backbone": "mobilenet_v3_small",
            "weights": "none",
            "freeze": "none",
            "head": {"hidden": [], "dropout": 0.0, "init": "random"},
        },
        "train": {"phases": [{"name": "scratch", "epochs": epochs, "learning_rate": 1.0e-3}]},
        "output": {"runs_dir": str(runs_dir)},
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def machine() -> dict:
    """What the numbers were measured on."""
    import keras
    import tensorflow as tf

    memory = 0
    with contextlib.suppress(ValueError, OSError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    load = os.getloadavg()
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average": [round(value, 2) for value in load],
    }


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_json(command: list[str], env: dict | None = None) -> dict:
    """Run a bench helper that prints one JSON object on its last line."""
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PYTHON = sys.executable
