"""The `.keras` file: the classifier for Keras users, loadable without transferctl.

Input float32 RGB 0-255 [batch, H, W, 3] at the training size (resize first, bilinear with
antialiasing), output softmax probabilities. The backbone's preprocessing is inside, as
built-in layers; no optimizer state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferctl.export.portable import portable_keras_model
from transferctl.export.source import Samples, predict_keras
from transferctl.rundir import layout as rundir
from transferctl.rundir.model_file import load_model_file

NAME = rundir.MODEL  # the same name as the run's model file


def write(model: Any, target: Path, image_size: tuple[int, int]) -> dict[str, Any]:
    portable, custom_objects = portable_keras_model(model)
    with rundir.atomic_path(target, suffix=".keras") as temporary:
        portable.save(str(temporary))
    return {
        "inputs": {
            "image": {
                "dtype": "float32",
                "shape": [None, image_size[0], image_size[1], 3],
                "range": [0, 255],
            }
        },
        "outputs": {"probabilities": {"dtype": "float32", "shape": [None, None]}},
        "custom_objects": custom_objects,
        "load_with": "keras.saving.load_model(path, compile=False)",
    }


def predict(target: Path, samples: Samples) -> dict[str, np.ndarray]:
    """The file just written, loaded back as a user would (safely, without transferctl's
    layers), on the parity images; a failure to load is a bug, so Keras's error goes through."""
    loaded = load_model_file(target, explain=None)
    return {"model": predict_keras(loaded, samples.resized)}
