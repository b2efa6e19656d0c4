"""Rules between config fields: small named functions, each naming the dotted field it faults.

They run once, after every field has its type (see `loader.load_config`). A rule that needs
TensorFlow (a layer name in `freeze: {until: ...}`) lives with the model, not here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from transferctl import labels
from transferctl.config import backbones, hub
from transferctl.config.schema import Config
from transferctl.errors import UserError, quote

Check = Callable[[Config], Iterator[UserError]]


def folder_source_has_path(config: Config) -> Iterator[UserError]:
    """`data.path` is set exactly when the images come from a folder."""
    if config.data.source == "folder" and config.data.path is None:
        yield UserError("data.path", "required when data.source is folder", "set the image folder")
    if config.data.source != "folder" and config.data.path is not None:
        yield UserError(
            "data.path",
            f"is only used with data.source: folder; got source {config.data.source}",
            "remove data.path or set data.source: folder",
        )


def splits_leave_training_data(config: Config) -> Iterator[UserError]:
    """The splits carved from the training data leave at least a tenth of it to train on."""
    total = config.data.validation_split + config.data.test_split
    if total >= 0.9:
        yield UserError(
            "data.validation_split",
            f"validation_split + test_split = {total:g} leaves too few images to train on",
            "keep their sum below 0.9",
        )


def image_size_fits_backbone(config: Config) -> Iterator[UserError]:
    """`data.image_size` is at least the smallest input Keras builds the backbone at (and a
    multiple of a KerasHub ViT's patch size)."""
    spec = backbones.get(config.model.backbone)
    if config.data.image_size is not None and min(config.data.image_size) < spec.min_size:
        yield UserError(
            "data.image_size",
            f"{list(config.data.image_size)} is too small for {spec.name}, which needs at least "
            f"{spec.min_size}x{spec.min_size}",
            f"use at least [{spec.min_size}, {spec.min_size}]",
        )
    size, patch = config.data.image_size, spec.min_size  # a hub ViT's minimum: its patch size
    if spec.family == hub.FAMILY and size is not None and any(side % patch for side in size):
        fitted = [max(side // patch, 1) * patch for side in size]
        yield UserError(
            "data.image_size",
            f"{list(size)} is not a multiple of the patch size of {spec.name} ({patch})",
            f"use e.g. {fitted}",
        )


def phase_names_unique(config: Config) -> Iterator[UserError]:
    """Every phase has its own name: the run's history and metrics tell phases apart by it."""
    seen: dict[str, int] = {}
    for index, phase in enumerate(config.train.phases):
        name = str(phase.name)
        if name in seen:
            yield UserError(
                f"train.phases.{index}.name",
                f"{name!r} is also the name of train.phases.{seen[name]} "
                f"(phases {seen[name]} and {index} share it)",
                "give every phase its own name, or leave names out (phase1, phase2, ...)",
            )
        else:
            seen[name] = index


def weight_decay_has_optimizer(config: Config) -> Iterator[UserError]:
    """`train.weight_decay` is set only with an optimizer that applies it (adamw, sgd)."""
    if config.train.weight_decay is not None and config.train.optimizer not in ("adamw", "sgd"):
        yield UserError(
            "train.weight_decay",
            f"applies to adamw and sgd; got optimizer {config.train.optimizer}",
            "set train.optimizer: adamw, or remove weight_decay",
        )


def imagenet_fits_backbone_input(config: Config) -> Iterator[UserError]:
    """NASNet's ImageNet weights (and a KerasHub preset folder's weights: its position
    embeddings) load only at the backbone's native input size."""
    spec = backbones.get(config.model.backbone)
    size = config.data.image_size
    fixed = (config.model.weights == "imagenet" and spec.family == "NASNet") or (
        config.model.weights == "preset" and hub.looks_like_folder(spec.keras_name)
    )  # a preset folder's size is read from its config.json; a name's only once downloaded
    if fixed and size is not None:
        native = (spec.native_size, spec.native_size)
        if tuple(size) != native:
            kind = "ImageNet" if spec.family == "NASNet" else "preset"
            yield UserError(
                "data.image_size",
                f"{spec.name} {kind} weights need the native size {list(native)}; got {list(size)}",
                f"use image_size: {list(native)} or another backbone",
            )


def classes_are_in_the_source(config: Config) -> Iterator[UserError]:
    """`data.classes` names classes the source has (when that is known without loading it)."""
    if config.data.classes is None:
        return
    from transferctl.config.classes import source_class_names, unknown_classes

    available = source_class_names(config.data)
    if available is not None:
        problem = unknown_classes(config.data.classes, available)
        if problem is not None:
            yield problem


def one_kind_of_backbone_rate(config: Config) -> Iterator[UserError]:
    """A phase scales its backbone's rate either as a whole or per layer, not both."""
    for index, phase in enumerate(config.train.phases):
        if phase.layer_decay is not None and phase.backbone_lr_scale != 1.0:
            yield UserError(
                f"train.phases.{index}.layer_decay",
                f"is set together with backbone_lr_scale {phase.backbone_lr_scale:g}; a phase "
                "scales the backbone's learning rate as a whole or per layer, not both",
                f"remove train.phases.{index}.backbone_lr_scale or layer_decay",
            )


# Numbers that training multiplies stay this far inside float32 (max ~3.4e38, smallest normal
# ~1.2e-38): a step is the rate times a gradient, the distillation loss is weighted by T^2, the
# sparsity penalty is its weight times the code's size.
FLOAT32_SAFE = 1e30
TEMPERATURE_MAX = 1e15  # T^2 <= 1e30
SPARSITY_MAX = 1e6  # above it the penalty is all the loss there is, and overflows with the code


def numbers_stay_in_float32(config: Config) -> Iterator[UserError]:
    """Values whose products training computes in float32 stay finite (and above zero)."""
    for index, phase in enumerate(config.train.phases):
        rate = phase.learning_rate * phase.backbone_lr_scale
        if 1 / FLOAT32_SAFE <= rate <= FLOAT32_SAFE:
            continue
        where = f"train.phases.{index}"
        if phase.backbone_lr_scale == 1.0:
            yield UserError(
                f"{where}.learning_rate",
                f"{phase.learning_rate:g} is outside what float32 training can step by",
                "1e-5 to 1e-2 is usual",
            )
        else:
            yield UserError(
                f"{where}.backbone_lr_scale",
                f"{phase.backbone_lr_scale:g} times the learning rate {phase.learning_rate:g} "
                f"is {rate:g}, outside what float32 training can step by",
                "a backbone rate is a fraction of the head's, e.g. 0.1 or 0.01",
            )
    distill = config.distill
    if distill is not None and distill.temperature > TEMPERATURE_MAX:
        yield UserError(
            "distill.temperature",
            f"{distill.temperature:g} is too large: the loss is weighted by its square, which "
            "leaves float32",
            f"keep it at most {TEMPERATURE_MAX:g}; 1 to 20 is usual",
        )
    pretrain = config.pretrain
    if pretrain is not None and pretrain.sparsity > SPARSITY_MAX:
        yield UserError(
            "pretrain.sparsity",
            f"{pretrain.sparsity:g} is too large: the penalty would swamp the reconstruction "
            "and overflow float32",
            f"keep it at most {SPARSITY_MAX:g}; 1e-4 to 1e-2 is usual",
        )


def unfreeze_has_work(config: Config) -> Iterator[UserError]:
    """Gradual unfreezing needs frozen layers to start from, and a second step in the phase."""
    for index, phase in enumerate(config.train.phases):
        if phase.unfreeze is None:
            continue
        freeze = phase.freeze or config.model.freeze
        if freeze.mode == "none":
            where = f"train.phases.{index}.freeze" if phase.freeze else "model.freeze"
            yield UserError(
                f"train.phases.{index}.unfreeze",
                f"has nothing to unfreeze: the phase starts with {where}: none",
                "start the phase from a freeze that keeps layers frozen (e.g. freeze: all), "
                "or remove unfreeze",
            )
        if phase.unfreeze.every >= phase.epochs:
            yield UserError(
                f"train.phases.{index}.unfreeze.every",
                f"is {phase.unfreeze.every}, but the phase has only {phase.epochs} epoch(s), so "
                "no layer would ever be unfrozen",
                f"use every < {phase.epochs}, or more epochs",
            )


CHECKS: tuple[Check, ...] = (
    folder_source_has_path,
    splits_leave_training_data,
    image_size_fits_backbone,
    phase_names_unique,
    weight_decay_has_optimizer,
    imagenet_fits_backbone_input,
    classes_are_in_the_source,
    one_kind_of_backbone_rate,
    numbers_stay_in_float32,
    unfreeze_has_work,
)


def run_checks(config: Config) -> list[UserError]:
    return [error for check in CHECKS for error in check(config)]


# ----------------------------------------------------------------------------------------------
# on the resolved config: what the file system and labels.txt will need (no TensorFlow)
# ----------------------------------------------------------------------------------------------

# What `rundir.create` appends to `name`: "-YYYYmmdd-HHMMSS", and "-N" for a second run in the
# same second (up to -1000).
RUN_NAME_SUFFIX_BYTES = len("-20260101-000000") + len("-1000")
# The longest path a run writes below its folder (checkpoints/<epoch weights>, tensorboard/...).
DEEPEST_RUN_FILE_BYTES = 120


def class_folder_names_round_trip(config: Config) -> Iterator[UserError]:
    """Every class folder name must come back from labels.txt as itself."""
    path = config.data.path
    if config.data.source != "folder" or path is None or not path.is_dir():
        return
    try:
        labels.check_class_folders(labels.class_folder_names(path), "data.path")
    except UserError as error:
        yield error


def run_name_fits_the_file_system(config: Config) -> Iterator[UserError]:
    """`name` + the timestamp is a folder name: no control characters, within NAME_MAX bytes."""
    name = config.name or ""
    problem = labels.name_problem(name)
    if problem is not None and "white space" not in problem:
        yield UserError(
            "name",
            f"{quote(name)} {problem}; it names the run's folder",
            "use letters, digits, - and _",
        )
        return
    runs_dir = config.output.runs_dir
    limit = labels.name_max(runs_dir)
    length = len(name.encode("utf-8", "surrogateescape"))
    if length + RUN_NAME_SUFFIX_BYTES > limit:
        yield UserError(
            "name",
            f"{quote(name)} is {length} bytes long; with the timestamp the run folder's name "
            f"would pass the file system's limit of {limit} bytes",
            f"use at most {limit - RUN_NAME_SUFFIX_BYTES} bytes (name defaults to the config "
            "file's name)",
        )
        return
    for part in runs_dir.parts:
        if len(part.encode("utf-8", "surrogateescape")) > limit:
            yield UserError(
                "output.runs_dir",
                f"the folder name {quote(part)} is longer than the file system's limit of "
                f"{limit} bytes",
                "use a shorter folder name",
            )
            return
    path_max = _path_max(runs_dir)
    deepest = len(str(runs_dir).encode("utf-8", "surrogateescape")) + 1 + length
    deepest += RUN_NAME_SUFFIX_BYTES + DEEPEST_RUN_FILE_BYTES
    if deepest > path_max:
        yield UserError(
            "output.runs_dir",
            f"{quote(str(runs_dir))} is so long that the run's files would pass the file "
            f"system's path limit of {path_max} bytes",
            "use a shorter path",
        )


def listed_classes_round_trip(config: Config) -> Iterator[UserError]:
    """`data.classes` are written to labels.txt as they are: each must read back as itself."""
    for index, name in enumerate(config.data.classes or []):
        problem = labels.name_problem(name)
        if problem is not None:
            yield UserError(
                f"data.classes.{index}",
                f"{quote(name)} {problem}",
                "name the class as its folder is named",
            )


def teacher_has_the_classes(config: Config) -> Iterator[UserError]:
    """`distill.teacher` learned the classes this config trains (checked again on loading)."""
    if config.distill is None:
        return
    from transferctl.config.classes import source_class_names, teacher_class_problem

    wanted = config.data.classes or source_class_names(config.data)
    if wanted is not None:
        problem = teacher_class_problem(Path(config.distill.teacher), wanted)
        if problem is not None:
            yield problem


RESOLVED_CHECKS: tuple[Check, ...] = (
    class_folder_names_round_trip,
    listed_classes_round_trip,
    run_name_fits_the_file_system,
    teacher_has_the_classes,
)


def run_resolved_checks(config: Config) -> list[UserError]:
    """The checks that need the resolved config (the run's name, the data folder)."""
    return [error for check in RESOLVED_CHECKS for error in check(config)]


def _path_max(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        return 4096
