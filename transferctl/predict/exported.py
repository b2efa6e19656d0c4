"""`predict` on the files `export` writes for other runtimes: model.onnx (onnxruntime) and
model.tflite / model_<quantize>.tflite (the LiteRT interpreter).

Both take the images `predict` reads (decoded and resized as training does) and return the
same probabilities the run's model gives, within each format's parity gate. Class names come
from the export's labels.txt beside the file. The runtimes are the export extras
(`pip install 'transferctl[onnx]'`, `'transferctl[tflite]'`); a missing one is exit 2 naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferctl import files
from transferctl.errors import UserError
from transferctl.export import onnx_file, tflite_file
from transferctl.export.metadata import EXPORT_INFO
from transferctl.predict.classifier import Classifier
from transferctl.rundir import layout as rundir
from transferctl.rundir.reading import read_labels

SUFFIXES = (".onnx", ".tflite")


class OnnxClassifier(Classifier):
    """model.onnx: uint8 pixels of any size in (it resizes and preprocesses inside)."""

    kind = "onnx"

    def __init__(self, source: Path, class_names: list[str], image_size: tuple[int, int]) -> None:
        super().__init__(source, class_names, image_size)
        self.run = onnx_file.Runner(source)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        pixels = np.clip(np.round(images), 0, 255).astype(np.uint8)
        return _checked(self.run(pixels), self)


class TfliteClassifier(Classifier):
    """A .tflite file: float32 pixels 0-255 at its fixed input size, one image per call."""

    kind = "tflite"

    def __init__(self, source: Path, class_names: list[str]) -> None:
        self.run = tflite_file.Runner(source)
        super().__init__(source, class_names, self.run.image_size, batch_size=8)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        return _checked(self.run(images.astype(np.float32)), self)


def load_exported(path: Path) -> Classifier:
    """A model.onnx or .tflite file written by `export`, with the labels.txt beside it."""
    labels = path.parent / rundir.LABELS
    if not labels.is_file():
        raise UserError(
            str(path),
            f"no {rundir.LABELS} beside it",
            f"keep the export's {rundir.LABELS} in the same folder as {path.name}",
        )
    class_names = read_labels(labels)
    if path.suffix == ".onnx":
        return OnnxClassifier(path, class_names, _input_size(path))
    return TfliteClassifier(path, class_names)


def _input_size(path: Path) -> tuple[int, int]:
    """The size the run trained at (export.json), which predict resizes to before the file's
    own resize; the file takes any size, so without export.json the image's own would do, but
    one size per batch is what a batch needs: 224x224 then."""
    try:
        size = files.read_json(path.parent / EXPORT_INFO)["input_size"]
        height, width = (int(value) for value in size)
    except (OSError, ValueError, TypeError, KeyError):
        return 224, 224
    return (height, width) if 0 < height <= 4096 and 0 < width <= 4096 else (224, 224)


def _checked(probabilities: np.ndarray, classifier: Classifier) -> np.ndarray:
    if probabilities.shape[-1] != classifier.num_classes:
        raise UserError(
            str(classifier.source),
            f"the model has {probabilities.shape[-1]} outputs but {rundir.LABELS} names "
            f"{classifier.num_classes} classes",
            f"keep the {rundir.LABELS} that was exported with this model",
        )
    return probabilities
