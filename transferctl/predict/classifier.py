"""The model `predict` runs: a run directory, a `.keras` file, an export folder or a SavedModel
(model.onnx and .tflite files: `predict/exported.py`).

A model is a run directory (its `model.keras`), a `.keras` file (class names from the
`labels.txt` beside it), an export folder, or an exported SavedModel (`export/saved_model/`,
signature `serving_default`: uint8 `image` [batch, height, width, 3] in, `probabilities` out).
A SavedModel gets its pixels rounded to uint8 (its contract), so its probabilities can differ
from the `.keras` model's in the second or third decimal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import files, runtime
from transferctl.errors import UserError, first_line, quote
from transferctl.export.metadata import EXPORT_INFO
from transferctl.files import paths
from transferctl.model import temperature
from transferctl.rundir import layout as rundir
from transferctl.rundir.model_file import classifier_problem, load_model_file
from transferctl.rundir.reading import open_run, read_labels

DEFAULT_BATCH_SIZE = 32
DEFAULT_SAVED_MODEL_SIZE = (224, 224)
MAX_SIDE = 4096  # an input side, as data.image_size allows
MAX_EXPORT_INFO = 16 * 2**20  # bytes of an export.json
SAVED_MODEL_FILE = "saved_model.pb"
SAVED_MODEL_FOLDER = "saved_model"  # in an export folder (export.saved_model.NAME)
WHERE = "RUN_DIR|MODEL"
MODEL_KINDS = (
    "pass a run directory, a .keras file, an exported saved_model folder, model.onnx or a "
    ".tflite file"
)


def load_keras_model(path: Path) -> Any:
    """A transferctl `.keras` classifier, loaded safely (no arbitrary code) and uncompiled."""
    import transferctl.model.preprocess  # noqa: F401 - registers BackbonePreprocess (0.1 runs)

    return load_model_file(path, check_as=str(path))


class Classifier:
    """A loaded model: class names, the input size it wants, and probabilities for a batch."""

    kind = "model"

    def __init__(
        self,
        source: Path,
        class_names: list[str],
        image_size: tuple[int, int],
        batch_size: int = DEFAULT_BATCH_SIZE,
        notes: Sequence[str] = (),
    ) -> None:
        self.source = source
        self.class_names = class_names
        self.image_size = image_size
        self.batch_size = batch_size
        self.notes = list(notes)
        self.trained_flip: str | None = None  # a run's data.augment.flip (unknown otherwise)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """float32 RGB 0-255 [B, H, W, 3] at `image_size` -> float32 probabilities [B, C]."""
        raise NotImplementedError


class KerasClassifier(Classifier):
    kind = "keras"

    def __init__(self, model: Any, source: Path, class_names: list[str], **kwargs: Any) -> None:
        super().__init__(source, class_names, _keras_input_size(model, source), **kwargs)
        self.model = model
        problem = classifier_problem(model)
        if problem is not None:
            raise UserError(
                str(source),
                f"not a classifier: {problem}",
                "predict with a run trained by transferctl finetune, or its export",
            )
        _check_class_count(_keras_output_classes(model), class_names, source)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(images), dtype=np.float32)


class SavedModelClassifier(Classifier):
    """An exported SavedModel; it takes uint8 pixels and resizes and preprocesses inside."""

    kind = "saved_model"

    def __init__(self, loaded: Any, source: Path, class_names: list[str], **kwargs: Any) -> None:
        super().__init__(source, class_names, **kwargs)
        self.loaded = loaded  # the signature's functions live as long as their owner
        self.signature = loaded.signatures["serving_default"]

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        tf = runtime.tf()
        pixels = tf.constant(np.clip(np.round(images), 0, 255).astype(np.uint8))
        outputs = self.signature(image=pixels)
        probabilities = outputs.get("probabilities")
        if probabilities is None:
            (probabilities,) = outputs.values()
        result = np.asarray(probabilities, dtype=np.float32)
        _check_class_count(result.shape[-1], self.class_names, self.source)
        return result


def load_classifier(target: Path, unsafe: bool = False) -> Classifier:
    """A run directory, a `.keras` file or an exported SavedModel folder, ready to predict.

    A SavedModel is a TensorFlow program: loading and calling it runs its graph, which can
    read and write files. One that transferctl's export did not write (no entry for it in the
    `export.json` beside it) is refused unless `unsafe`."""
    if not target.exists():
        raise UserError(WHERE, f"{target} {paths.missing(target)}", MODEL_KINDS)
    if target.is_file():
        if target.suffix in (".onnx", ".tflite"):
            from transferctl.predict.exported import load_exported

            return load_exported(target)
        if target.suffix != ".keras":
            raise UserError(WHERE, f"{target} is not a .keras, .onnx or .tflite file", MODEL_KINDS)
        return _keras_file(target)
    if (target / SAVED_MODEL_FILE).is_file():
        return _saved_model(target, unsafe)
    if (target / rundir.CONFIG).is_file():  # a run directory (finished or not)
        return _run_directory(target)
    if (target / rundir.MODEL).is_file():  # an export folder: its .keras file and labels
        return _keras_file(target / rundir.MODEL)
    if (target / SAVED_MODEL_FOLDER / SAVED_MODEL_FILE).is_file():
        return _saved_model(target / SAVED_MODEL_FOLDER, unsafe)
    raise UserError(
        WHERE,
        f"{target} is neither a run directory (no {rundir.MODEL}) nor a SavedModel "
        f"(no {SAVED_MODEL_FILE})",
        "pass a finished run, a .keras file or the export's saved_model folder",
    )


def _run_directory(path: Path) -> Classifier:
    run = open_run(path, WHERE, verb="predict with")
    from transferctl.config.loader import read_yaml

    # Only the batch size is read, so a run whose training data has moved still predicts.
    data = read_yaml(run.config).get("data") or {}
    batch_size = data.get("batch_size") if isinstance(data, dict) else None
    if not isinstance(batch_size, int) or batch_size < 1:
        batch_size = DEFAULT_BATCH_SIZE
    model = temperature.calibrated(load_keras_model(run.model), run.path)
    classifier = KerasClassifier(model, run.model, read_labels(run.labels), batch_size=batch_size)
    augment = data.get("augment") if isinstance(data, dict) else None
    flip = augment.get("flip") if isinstance(augment, dict) else None
    classifier.trained_flip = flip if isinstance(flip, str) else None
    return classifier


def _keras_file(path: Path) -> Classifier:
    labels_file = path.parent / rundir.LABELS
    model = load_keras_model(path)
    if labels_file.is_file():
        return KerasClassifier(model, path, read_labels(labels_file))
    classes = _keras_output_classes(model)
    return KerasClassifier(
        model,
        path,
        [str(index) for index in range(classes)],
        notes=[f"no {rundir.LABELS} beside {path}; labels are class indices"],
    )


def _saved_model(path: Path, unsafe: bool) -> Classifier:
    info = _export_info(path)
    if info is None and not unsafe:
        raise UserError(
            WHERE,
            f"{path} is a SavedModel that transferctl did not export (no {EXPORT_INFO} beside "
            "it names it); loading one runs its graph, which can read and write files",
            "pass --unsafe if you trust where it came from, or predict with the run, its "
            "model.keras, model.onnx or model.tflite",
        )
    size, notes = _export_input_size(info, path)
    tf = runtime.tf()
    labels_file = next(
        (
            candidate
            for candidate in (path / rundir.LABELS, path.parent / rundir.LABELS)
            if candidate.is_file()
        ),
        None,
    )
    if labels_file is None:
        raise UserError(
            WHERE,
            f"no {rundir.LABELS} in or beside {path}",
            f"keep the export's {rundir.LABELS} next to the saved_model folder",
        )
    try:
        with runtime.quiet_native_stderr():
            loaded = tf.saved_model.load(str(path))
    except Exception as error:  # noqa: BLE001 - a damaged export is the user's input
        raise UserError(
            str(path),
            f"cannot load the SavedModel ({type(error).__name__}: {first_line(error)})",
            "export the run again",
        ) from None
    if "serving_default" not in getattr(loaded, "signatures", {}):
        raise UserError(
            str(path), "the SavedModel has no serving_default signature", "export it again"
        )
    return SavedModelClassifier(
        loaded, path, read_labels(labels_file), image_size=size, notes=notes
    )


def _export_info(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The export.json beside (or in) a SavedModel folder that names it, read bounded."""
    for candidate in (path.parent / EXPORT_INFO, path / EXPORT_INFO):
        try:
            document = json.loads(files.read_regular(candidate, limit=MAX_EXPORT_INFO))
        except (files.NotReadable, OSError, ValueError, RecursionError):
            continue
        exports = document.get("exports") if isinstance(document, dict) else None
        if isinstance(exports, dict) and path.name in exports:
            return candidate, document
    return None


def _export_input_size(
    info: tuple[Path, dict[str, Any]] | None, path: Path
) -> tuple[tuple[int, int], list[str]]:
    size = info[1].get("input_size") if info is not None else None
    if info is None or size is None:
        return DEFAULT_SAVED_MODEL_SIZE, [
            f"no input_size in an {EXPORT_INFO} beside {path}; images are resized to "
            f"{DEFAULT_SAVED_MODEL_SIZE[0]}x{DEFAULT_SAVED_MODEL_SIZE[1]}"
        ]
    valid = (
        isinstance(size, list)
        and len(size) == 2
        and all(type(side) is int and 0 < side <= MAX_SIDE for side in size)
    )
    if not valid:
        raise UserError(
            f"{info[0]} input_size",
            f"expected [height, width], each 1-{MAX_SIDE} (as data.image_size); got {quote(size)}",
            "export the run again",
        )
    return (size[0], size[1]), []


def _keras_input_size(model: Any, source: Path) -> tuple[int, int]:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise UserError(
            str(source),
            f"expected an image classifier with a fixed [batch, height, width, 3] input; "
            f"got input shape {list(shape)}",
            "pass a model trained by transferctl",
        )
    return int(shape[1]), int(shape[2])


def _keras_output_classes(model: Any) -> int:
    return int(tuple(model.output_shape)[-1])


def _check_class_count(classes: int, class_names: list[str], source: Path) -> None:
    if classes != len(class_names):
        raise UserError(
            str(source),
            f"the model has {classes} outputs but {rundir.LABELS} names {len(class_names)} classes",
            f"keep the {rundir.LABELS} that was saved with this model",
        )
