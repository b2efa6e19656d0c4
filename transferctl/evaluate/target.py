"""Which images `evaluate` reads: the run's own held-out split, or another folder of its classes.

The run's split is rebuilt from its resolved config (same seed, same split); another folder
(`--data`) must hold one sub-folder per class of the run, and is audited as training audits.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import files, runtime
from transferctl.data.examples import Examples
from transferctl.errors import ConfigErrors, UserError, quote
from transferctl.files import paths
from transferctl.labels import HELD_OUT, SPLITS
from transferctl.rundir import layout as rundir
from transferctl.rundir.reading import RunFiles
from transferctl.runtime.native import native_stderr_dropped

TRAIN = SPLITS[0]
PREFERRED = HELD_OUT[::-1]  # evaluate's default: test when the data has it, else val
NAME_CHARS = 100  # longest eval/ folder name made from a --data folder's name


@dataclass(frozen=True)
class Target:
    """The images to evaluate: examples in order, how to batch them, and what to call them."""

    name: str
    source: str
    examples: Examples
    image_size: tuple[int, int]
    batch_size: int
    data_path: Path | None
    dataset: Any


def load_run_config(run: RunFiles, *, other_data: bool) -> Any:
    """The run's resolved config; with `other_data`, one whose training folder may be gone."""
    from transferctl.config.loader import load_config

    try:
        return load_config(run.config)
    except ConfigErrors as error:
        if not all(item.where == "data.path" for item in error.errors):
            raise
        if not other_data:
            raise UserError(
                "data.path",
                f"the run's training data is gone ({error.errors[0].what})",
                "restore the folder, or evaluate another folder with --data PATH",
            ) from None
    # The training folder has moved, but --data names the images: keep the rest of the run's
    # data section (image size, batch size) and let the source go.
    return load_config(run.config, ["data.source=digits", "data.path="])


def run_split(run: RunFiles, config: Any, class_names: list[str], split: str | None) -> Target:
    """The run's own held-out split (`split`, or test when it has one, else val), rebuilt."""
    from transferctl.data import load_data

    bundle = load_data(config.data, config.seed)
    if bundle.class_names != class_names:
        missing, extra = _class_difference(class_names, bundle.class_names)
        raise UserError(
            "data.path",
            f"the run's data now has other classes than its {rundir.LABELS} (missing: "
            f"{missing}; extra: {extra})",
            "restore the training folder, or evaluate another folder with --data PATH",
        )
    available = [name for name in PREFERRED if bundle.has(name)]
    if split is None:
        if not available:
            raise UserError(
                "RUN_DIR",
                f"{run.path} has no held-out split (test_split and validation_split are 0)",
                "evaluate another folder with --data PATH",
            )
        split = available[0]
    elif not bundle.has(split):
        raise UserError(
            "--split",
            f"the run has no {split} split (its splits: {', '.join([TRAIN, *available])})",
            f"use --split {available[0]}" if available else "evaluate a folder with --data PATH",
        )
    source = {
        "folder": f"the {split} split of {config.data.path}",
        "digits": f"the {split} split of scikit-learn's digits",
    }.get(config.data.source, f"the {split} split of {config.data.source}")
    return Target(
        name=split,
        source=source,
        examples=bundle.examples[split],
        image_size=bundle.image_size,
        batch_size=bundle.batch_size,
        data_path=None,
        dataset=bundle.plain(split),
    )


def other_folder(path: Path, config: Any, class_names: list[str], split: str | None) -> Target:
    """Every image of another folder whose class sub-folders are the run's classes."""
    if not path.exists():
        raise UserError(
            "--data", f"{path} {paths.missing(path)}", "pass a folder of class sub-folders"
        )
    if not path.is_dir():
        raise UserError("--data", f"{path} is a file", "pass a folder of class sub-folders")
    path = path.resolve()
    root, chosen = _split_folder(path, split)
    _check_class_folders(root, class_names)
    examples = _audited_examples(root, class_names)

    from transferctl.data import pipeline

    image_size = config.data.image_size
    batch_size = config.data.batch_size
    name = _safe_name(f"data-{path.name}" + (f"-{chosen}" if chosen else ""))
    return Target(
        name=name,
        source=str(root),
        examples=examples,
        image_size=image_size,
        batch_size=batch_size,
        data_path=root,
        dataset=pipeline.make_dataset(examples, image_size, batch_size, len(class_names)),
    )


def _split_folder(path: Path, split: str | None) -> tuple[Path, str | None]:
    """The folder of class sub-folders to read, and the split it is (None: not split)."""
    if not (path / TRAIN).is_dir():
        if split is not None:
            raise UserError(
                "--split",
                f"{path} is not split into train/ val/ test/ sub-folders",
                "drop --split to evaluate all of its images",
            )
        return path, None
    present = [name for name in (*PREFERRED, TRAIN) if (path / name).is_dir()]
    chosen = split or present[0]
    if chosen not in present:
        raise UserError(
            "--split",
            f"{path} has no {chosen}/ sub-folder; it has {', '.join(present)}",
            f"use --split {present[0]}" if present[0] in PREFERRED else "drop --split",
        )
    return path / chosen, chosen


def _audited_examples(root: Path, class_names: list[str]) -> Examples:
    """The folder's images after the same audit as training (bad files left out and named,
    EXIF orientation kept), labelled with the run's class indices."""
    from transferctl.data import sources

    try:
        scanned = sources.load_scanned_folder(root, "skip")
        folder_classes = scanned.class_names
    except UserError as error:
        if "class folder" not in error.what:
            raise UserError("--data", error.what, error.fix) from None
        folder_classes = []  # no class has a usable image: say which, below
    empty = sorted(set(class_names) - set(folder_classes))
    if empty:
        raise UserError(
            "--data",
            f"class folder(s) without a usable image: {', '.join(empty)}",
            "every class of the run needs at least one image",
        )
    examples = scanned.splits[TRAIN]
    for skipped_path, reason in scanned.skipped:
        print(f"warning: --data: skipped {skipped_path}: {reason}", file=sys.stderr)
    # The folder's classes are sorted by name; map them onto the run's label indices.
    to_run_index = np.asarray([class_names.index(name) for name in folder_classes], np.int32)
    return dataclasses.replace(examples, labels=to_run_index[examples.labels])


def _check_class_folders(root: Path, class_names: list[str]) -> None:
    try:
        entries = list(root.iterdir())
    except OSError as error:
        raise UserError(
            "--data", f"cannot read {quote(str(root))} ({error.strerror or error})"
        ) from None
    folders = sorted(
        entry.name for entry in entries if entry.is_dir() and not entry.name.startswith(".")
    )
    if not folders:
        raise UserError(
            "--data",
            f"{root} has no class sub-folders",
            f"put the images in one sub-folder per class: {', '.join(class_names)}",
        )
    if set(folders) != set(class_names):
        missing, extra = _class_difference(class_names, folders)
        raise UserError(
            "--data",
            f"{root} has other classes than the run's {rundir.LABELS} (missing: {missing}; "
            f"extra: {extra})",
            "give it exactly one sub-folder per class of the run",
        )


def _class_difference(expected: Sequence[str], found: Sequence[str]) -> tuple[str, str]:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    return ", ".join(missing) or "none", ", ".join(extra) or "none"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:NAME_CHARS] or "data"


def count_notes(run: RunFiles, target: Target) -> list[str]:
    """A warning when the rebuilt split is not the one training measured."""
    if target.data_path is not None or not (run.path / rundir.METRICS).is_file():
        return []
    try:
        trained = files.read_json(run.path / rundir.METRICS)
        expected = int(trained[target.name]["num_examples"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if expected == len(target.examples):
        return []
    return [
        f"the {target.name} split has {len(target.examples)} images now but had {expected} "
        "when the run finished: the data changed since training, so results differ"
    ]


def check_model(model: Any, run: RunFiles, target: Target, class_names: list[str]) -> None:
    """The model takes the target's image size and has one output per class of labels.txt."""
    shape = tuple(model.input_shape)
    if tuple(shape[1:3]) != tuple(target.image_size):
        raise UserError(
            str(run.model),
            f"the model takes {shape[1]}x{shape[2]} images but the run's config says "
            f"data.image_size {list(target.image_size)}",
            f"keep the {rundir.CONFIG} that was saved with this model",
        )
    classes = int(tuple(model.output_shape)[-1])
    if classes != len(class_names):
        raise UserError(
            str(run.model),
            f"the model has {classes} outputs but {rundir.LABELS} names {len(class_names)} classes",
            f"keep the {rundir.LABELS} that was saved with this model",
        )


def identifiers(examples: Examples) -> list[str]:
    """Each image's name in predictions.csv: its path, or its index for in-memory data."""
    if examples.paths is not None:
        return [str(path) for path in examples.paths]
    return [str(index) for index in range(len(examples))]


def unreadable_file(target: Target, first_example: int) -> UserError:
    """Name the file that broke the input pipeline (it fails in the batch after the last one)."""
    where = "--data" if target.data_path is not None else "data.path"
    paths = target.examples.paths
    if paths is not None:
        tf = runtime.tf()
        for path in paths[first_example:]:
            try:
                with native_stderr_dropped():
                    tf.io.decode_image(
                        tf.io.read_file(str(path)), channels=3, expand_animations=False
                    )
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
                reason = str(error.message).split("[Op:")[0].split("}}")[-1].strip()
                return UserError(
                    where,
                    f"cannot decode {path} ({reason or type(error).__name__})",
                    "remove or replace the file",
                )
    return UserError(
        where,
        f"an image at or after example {first_example} cannot be decoded",
        "check the images",
    )
