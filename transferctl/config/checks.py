"""Rules between config fields: small named functions, each naming the dotted field it faults.

They run once, after every field has its type (see `loader.load_config`). A rule that needs
TensorFlow (a layer name in `freeze: {until: ...}`) lives with the model, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from transferctl import backbones
from transferctl.config.schema import Config
from transferctl.errors import UserError

Check = Callable[[Config], Iterator[UserError]]


def folder_source_has_path(config: Config) -> Iterator[UserError]:
    if config.data.source == "folder" and config.data.path is None:
        yield UserError("data.path", "required when data.source is folder", "set the image folder")
    if config.data.source != "folder" and config.data.path is not None:
        yield UserError(
            "data.path",
            f"is only used with data.source: folder; got source {config.data.source}",
            "remove data.path or set data.source: folder",
        )


def splits_leave_training_data(config: Config) -> Iterator[UserError]:
    total = config.data.validation_split + config.data.test_split
    if total >= 0.9:
        yield UserError(
            "data.validation_split",
            f"validation_split + test_split = {total:g} leaves too few images to train on",
            "keep their sum below 0.9",
        )


def image_size_fits_backbone(config: Config) -> Iterator[UserError]:
    spec = backbones.get(config.model.backbone)
    if config.data.image_size is not None and min(config.data.image_size) < spec.min_size:
        yield UserError(
            "data.image_size",
            f"{list(config.data.image_size)} is too small for {spec.name}, which needs at least "
            f"{spec.min_size}x{spec.min_size}",
            f"use at least [{spec.min_size}, {spec.min_size}]",
        )


def phase_names_unique(config: Config) -> Iterator[UserError]:
    seen: set[str] = set()
    for index, phase in enumerate(config.train.phases):
        if phase.name in seen:
            yield UserError(
                f"train.phases.{index}.name",
                f"{phase.name!r} is used by an earlier phase",
                "give every phase its own name",
            )
        seen.add(phase.name)


def weight_decay_has_optimizer(config: Config) -> Iterator[UserError]:
    if config.train.weight_decay is not None and config.train.optimizer not in ("adamw", "sgd"):
        yield UserError(
            "train.weight_decay",
            f"applies to adamw and sgd; got optimizer {config.train.optimizer}",
            "set train.optimizer: adamw, or remove weight_decay",
        )


def imagenet_fits_backbone_input(config: Config) -> Iterator[UserError]:
    spec = backbones.get(config.model.backbone)
    size = config.data.image_size
    if config.model.weights == "imagenet" and spec.family == "NASNet" and size is not None:
        native = (spec.native_size, spec.native_size)
        if tuple(size) != native:
            yield UserError(
                "data.image_size",
                f"{spec.name} ImageNet weights need the native size {list(native)}; "
                f"got {list(size)}",
                f"use image_size: {list(native)} or another backbone",
            )


def classes_are_in_the_source(config: Config) -> Iterator[UserError]:
    """`data.classes` names classes the source has (when that is known without loading it)."""
    if config.data.classes is None:
        return
    from transferctl.source_classes import source_class_names, unknown_classes

    available = source_class_names(config.data)
    if available is not None:
        problem = unknown_classes(config.data.classes, available)
        if problem is not None:
            yield problem


CHECKS: tuple[Check, ...] = (
    folder_source_has_path,
    splits_leave_training_data,
    image_size_fits_backbone,
    phase_names_unique,
    weight_decay_has_optimizer,
    imagenet_fits_backbone_input,
    classes_are_in_the_source,
)


def run_checks(config: Config) -> list[UserError]:
    return [error for check in CHECKS for error in check(config)]
