"""The predict stage: a trained model and image files in, the top-k labels of each image out.

A model is a run directory (its `model.keras`), a `.keras` file (class names from the
`labels.txt` beside it), an export folder, or an exported SavedModel (`export/saved_model/`,
signature `serving_default`: uint8 `image` [batch, height, width, 3] in, `probabilities` out).

Images are decoded and resized exactly as training does (`data.pipeline.decode_and_resize`), so
a run directory's top-1 here equals `evaluate`'s for the same file. Formats TensorFlow can't
decode (WebP, TIFF, some CMYK JPEGs) are read with Pillow, converted to RGB, and go through the
same resize. A SavedModel gets those pixels rounded to uint8 (its contract), so its
probabilities can differ from the `.keras` model's in the second or third decimal. Files are
read in a thread pool and predicted a batch at a time; an unreadable file is reported and
skipped, never fatal.

Example:
    classifier = load_classifier(Path("runs/flowers-20261122-101500"))
    files = find_images([Path("photos")])
    for item in predict_images(classifier, files, top_k=3):
        print(item)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import files, runtime
from transferctl.errors import UserError, debug_enabled
from transferctl.rundir import layout as rundir
from transferctl.rundir import lock as runlock

# The exit code of `predict` when some files could not be read (they are named on stderr).
# errors.py reserves 0, 1, 2 and 130.
EXIT_SKIPPED = 3

# What a folder is searched for (case-insensitive). A file named on the command line is tried
# whatever its name.
IMAGE_SUFFIXES = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".jpe",
    ".jfif",
    ".png",
    ".webp",
    ".tif",
    ".tiff",
)

DEFAULT_BATCH_SIZE = 32
DEFAULT_SAVED_MODEL_SIZE = (224, 224)
EXPORT_INFO = "export.json"
SAVED_MODEL_FILE = "saved_model.pb"


# ----------------------------------------------------------------------------------------------
# Run directories and models
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFiles:
    """The files of a finished run that evaluate and predict read."""

    path: Path
    config: Path
    labels: Path
    model: Path


def open_run(path: Path, where: str = "RUN_DIR") -> RunFiles:
    """Check that `path` is a finished run directory (config, labels and model present)."""
    if not path.exists():
        raise UserError(where, f"{path} not found", "pass a run directory made by `finetune`")
    if not path.is_dir():
        raise UserError(where, f"{path} is a file, not a run directory", "pass the run folder")
    run = RunFiles(
        path=path,
        config=path / rundir.CONFIG,
        labels=path / rundir.LABELS,
        model=path / rundir.MODEL,
    )
    runlock.check_free(path, where)
    if not run.model.is_file():
        if run.config.is_file():
            raise UserError(
                where,
                f"{path} has no {rundir.MODEL}: its training did not finish",
                f"finish it with `transferctl finetune --resume {path}`",
            )
        raise UserError(
            where,
            f"{path} is not a run directory (no {rundir.MODEL}, no {rundir.CONFIG})",
            "pass a run directory made by `finetune`",
        )
    for needed in (run.config, run.labels):
        if not needed.is_file():
            raise UserError(
                where, f"{path} has no {needed.name}", "pass a run directory made by `finetune`"
            )
    return run


def read_labels(path: Path) -> list[str]:
    """Class names, one per line, in index order."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(str(path), f"cannot read the labels ({error})", "check the file") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise UserError(str(path), "holds no class names", "write one class name per line")
    return labels


def load_keras_model(path: Path) -> Any:
    """A transferctl `.keras` classifier, loaded safely (no arbitrary code) and uncompiled."""
    files.check_keras_file(path)
    keras = runtime.keras()
    import transferctl.model.preprocess  # noqa: F401 - registers BackbonePreprocess for loading

    try:
        with runtime.quiet_native_stderr():
            return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file is the user's input
        raise UserError(
            str(path),
            f"cannot load the model ({type(error).__name__}: {_first_line(error)})",
            "pass a .keras file saved by transferctl (a damaged file: train again)",
        ) from None


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


def load_classifier(target: Path) -> Classifier:
    """A run directory, a `.keras` file or an exported SavedModel folder, ready to predict."""
    where = "RUN_DIR|MODEL"
    if not target.exists():
        raise UserError(
            where,
            f"{target} not found",
            "pass a run directory, a .keras file or an exported saved_model folder",
        )
    if target.is_file():
        if target.suffix != ".keras":
            raise UserError(
                where,
                f"{target} is not a .keras file",
                "pass a run directory, a .keras file or an exported saved_model folder",
            )
        return _keras_file(target)
    if (target / SAVED_MODEL_FILE).is_file():
        return _saved_model(target)
    if (target / rundir.CONFIG).is_file():  # a run directory (finished or not)
        return _run_directory(target)
    if (target / rundir.MODEL).is_file():  # an export folder: its .keras file and labels
        return _keras_file(target / rundir.MODEL)
    if (target / "saved_model" / SAVED_MODEL_FILE).is_file():
        return _saved_model(target / "saved_model")
    raise UserError(
        where,
        f"{target} is neither a run directory (no {rundir.MODEL}) nor a SavedModel "
        f"(no {SAVED_MODEL_FILE})",
        "pass a finished run, a .keras file or the export's saved_model folder",
    )


def _run_directory(path: Path) -> Classifier:
    run = open_run(path, where="RUN_DIR|MODEL")
    from transferctl.config.loader import read_yaml

    # Only the batch size is read, so a run whose training data has moved still predicts.
    data = read_yaml(run.config).get("data") or {}
    batch_size = data.get("batch_size") if isinstance(data, dict) else None
    if not isinstance(batch_size, int) or batch_size < 1:
        batch_size = DEFAULT_BATCH_SIZE
    model = load_keras_model(run.model)
    return KerasClassifier(model, run.model, read_labels(run.labels), batch_size=batch_size)


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


def _saved_model(path: Path) -> Classifier:
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
            "RUN_DIR|MODEL",
            f"no {rundir.LABELS} in or beside {path}",
            f"keep the export's {rundir.LABELS} next to the saved_model folder",
        )
    try:
        with runtime.quiet_native_stderr():
            loaded = tf.saved_model.load(str(path))
    except Exception as error:  # noqa: BLE001 - a damaged export is the user's input
        raise UserError(
            str(path),
            f"cannot load the SavedModel ({type(error).__name__}: {_first_line(error)})",
            "export the run again",
        ) from None
    if "serving_default" not in getattr(loaded, "signatures", {}):
        raise UserError(
            str(path), "the SavedModel has no serving_default signature", "export it again"
        )
    size, notes = _export_input_size(path)
    return SavedModelClassifier(
        loaded, path, read_labels(labels_file), image_size=size, notes=notes
    )


def _export_input_size(path: Path) -> tuple[tuple[int, int], list[str]]:
    for candidate in (path / EXPORT_INFO, path.parent / EXPORT_INFO):
        if not candidate.is_file():
            continue
        try:
            size = json.loads(candidate.read_text(encoding="utf-8")).get("input_size")
            height, width = (int(value) for value in size)
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        if height > 0 and width > 0:
            return (height, width), []
    return DEFAULT_SAVED_MODEL_SIZE, [
        f"no input_size in {EXPORT_INFO} beside {path}; images are resized to "
        f"{DEFAULT_SAVED_MODEL_SIZE[0]}x{DEFAULT_SAVED_MODEL_SIZE[1]}"
    ]


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


# ----------------------------------------------------------------------------------------------
# Finding and reading images
# ----------------------------------------------------------------------------------------------


def find_images(paths: Sequence[Path], problems: list[Skipped] | None = None) -> list[Path]:
    """The files named, and the image files under the folders named (recursively, sorted).

    Hidden files and folders (`.DS_Store`, macOS `._x.jpg`) are left out, as in training.
    Named pipes, devices and sockets with an image's name are kept, for `read_image` to
    report; sub-folders that cannot be read are added to `problems`, never skipped silently.
    """
    if not paths:
        raise UserError("IMAGE_OR_FOLDER", "no images given", "name image files or folders")
    found: list[Path] = []
    for path in paths:
        try:
            missing = not path.exists() and not path.is_symlink()
            folder = path.is_dir()
        except OSError:  # cannot even be examined: read_image says why
            missing = folder = False
        if missing:
            raise UserError("IMAGE_OR_FOLDER", f"{path} not found", "check the path")
        if folder:
            unreadable: list[Skipped] = []
            inside = _images_in(path, unreadable)
            if not inside and not unreadable:
                raise UserError(
                    "IMAGE_OR_FOLDER",
                    f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                    "name a folder with images in it",
                )
            found.extend(inside)
            if problems is not None:
                problems.extend(unreadable)
        else:
            found.append(path)
    return found


def _images_in(folder: Path, unreadable: list[Skipped]) -> list[Path]:
    def report(error: OSError) -> None:
        where = Path(error.filename) if error.filename else folder
        unreadable.append(Skipped(where, f"cannot read the folder: {error.strerror or error}"))

    inside: list[Path] = []
    for directory, subfolders, names in os.walk(folder, onerror=report):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        here = Path(directory)
        for name in sorted(names):
            file = here / name
            if name.startswith(".") or file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if file.is_file() or files.special_kind(file) is not None:
                inside.append(file)
    return sorted(inside)  # by path, as `rglob` sorted them


class UnreadableImage(Exception):
    """A file that neither TensorFlow nor Pillow can decode."""


def read_image(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """float32 RGB 0-255 [H, W, 3] at `image_size`, decoded, EXIF-oriented and resized as
    training does.

    Only a regular file is opened (a named pipe would block forever), and its header is read
    first: an image with more pixels than `files.max_pixels()` is refused before decoding (a
    390 KB PNG can declare 20000x20000 pixels).
    """
    tf = runtime.tf()
    from transferctl.data.pipeline import decode, orient, resize

    try:
        encoded = files.read_regular(path, limit=files.MAX_IMAGE_BYTES)
    except files.NotReadable as error:
        raise UnreadableImage(error.reason) from None
    if not encoded:
        raise UnreadableImage("the file is empty")
    orientation = _check_header(encoded)
    try:
        image = decode(tf.constant(encoded))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        image = tf.constant(_pillow_rgb(encoded))  # WebP, TIFF, some CMYK JPEGs: Pillow reads them
    return np.asarray(resize(orient(image, orientation), image_size))


def _check_header(encoded: bytes) -> int:
    """The EXIF orientation (1-8; 1 when there is none: training undoes it too), after checking
    the pixel count in the header; raises `UnreadableImage` for too many pixels."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(encoded))  # the header only
    except Image.DecompressionBombError as error:
        raise UnreadableImage(files.too_many_pixels(error)) from None
    except Exception:  # noqa: BLE001 - not for Pillow: TensorFlow's decoder says what it is
        return 1
    with image:
        problem = files.pixels_problem(image.width, image.height)
        if problem is not None:
            raise UnreadableImage(problem)
        try:
            return int(image.getexif().get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001 - no readable EXIF means no rotation
            return 1


def _pillow_rgb(encoded: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.seek(0)  # animated GIF/WebP: the first frame, as TensorFlow does
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise UnreadableImage("not an image file Pillow or TensorFlow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"damaged or unsupported image ({_first_line(error)})") from None


# ----------------------------------------------------------------------------------------------
# Predicting
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """The top-k labels of one image, most probable first."""

    path: Path
    labels: list[str]
    probabilities: list[float]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "predictions": [
                {"label": label, "probability": round(probability, 6)}
                for label, probability in zip(self.labels, self.probabilities, strict=True)
            ],
        }


@dataclass(frozen=True)
class Skipped:
    """A file that could not be read, and why."""

    path: Path
    reason: str


def predict_images(
    classifier: Classifier,
    files: Sequence[Path],
    top_k: int,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
) -> Iterator[Prediction | Skipped]:
    """One `Prediction` or `Skipped` per file, in order, predicted `batch_size` at a time.

    Only one batch of decoded images is held at a time, so memory does not grow with the number
    of files.

    Args:
        classifier: from `load_classifier`.
        files: image files, e.g. from `find_images`.
        top_k: how many labels per image; capped at the number of classes.
        batch_size: images per model call. Defaults to the run's `data.batch_size` (32 for
            models without a run).
        workers: threads decoding images. Defaults to the number of CPUs, at most 8.
    """
    if top_k < 1:
        raise ValueError(f"`top_k` must be at least 1. Received: top_k={top_k}")
    k = min(top_k, classifier.num_classes)
    size = batch_size or classifier.batch_size
    threads = workers or max(1, min(8, os.cpu_count() or 1))

    def load(path: Path) -> np.ndarray | Skipped:
        try:
            return read_image(path, classifier.image_size)
        except UnreadableImage as error:
            return Skipped(path, str(error))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(files), size):
            chunk = files[start : start + size]
            with decoder_messages_dropped():
                loaded = list(pool.map(load, chunk))
            readable = [index for index, item in enumerate(loaded) if isinstance(item, np.ndarray)]
            images = [item for item in loaded if isinstance(item, np.ndarray)]
            results: dict[int, Prediction] = {}
            if images:
                batch = np.stack(images).astype(np.float32, copy=False)
                probabilities = classifier.predict_batch(batch)
                for row, index in enumerate(readable):
                    results[index] = top_labels(
                        chunk[index], probabilities[row], classifier.class_names, k
                    )
            for index, item in enumerate(loaded):
                yield item if isinstance(item, Skipped) else results[index]


def top_labels(
    path: Path, probabilities: np.ndarray, class_names: Sequence[str], k: int
) -> Prediction:
    """The `k` most probable classes; ties keep class order."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return Prediction(
        path=path,
        labels=[class_names[index] for index in order],
        probabilities=[float(probabilities[index]) for index in order],
    )


@contextlib.contextmanager
def decoder_messages_dropped() -> Iterator[None]:
    """Silence what native decoders print on file descriptor 2 (libjpeg's "Input file read
    error", TensorFlow's "Premature end of JPEG data"): each unreadable file is reported once,
    as a `Skipped`, instead. `--debug` keeps them."""
    if debug_enabled():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
