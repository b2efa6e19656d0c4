"""Load the configured source, carve the splits, and build the pipelines for training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferctl.config.classes import unknown_classes
from transferctl.config.schema import Data
from transferctl.data import pipeline, recipe, sources, splits
from transferctl.data.audit_report import FolderAudit, split_shortfalls
from transferctl.data.examples import Examples
from transferctl.errors import UserError

# Forward-only passes (each epoch's validation and BatchNorm statistics) keep no activations for
# a backward pass, so they take larger batches than training: on 2 CPU cores MobileNetV2 at
# 64 px scored 359 images in 0.33 s at batch 64 against 0.41 s at 32
FORWARD_BATCH_FACTOR = 2


@dataclass
class DataBundle:
    """The examples of each split, the class names, and how to turn them into tf.data."""

    class_names: list[str]
    examples: dict[str, Examples]
    image_size: tuple[int, int]
    batch_size: int  # the global batch: data.batch_size x replicas (`load_data`)
    seed: int
    augment_config: Any
    # files found but not used, with the reason (data.on_bad_file: skip): path, reason
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    # a folder source's audit: duplicates, tiny images, converted modes, warnings (doctor's view)
    audit: FolderAudit | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def has(self, split: str) -> bool:
        return split in self.examples and len(self.examples[split]) > 0

    def count(self, split: str) -> int:
        return len(self.examples[split]) if self.has(split) else 0

    @property
    def forward_batch_size(self) -> int:
        """The batch of forward-only passes: `FORWARD_BATCH_FACTOR` x the training batch."""
        return FORWARD_BATCH_FACTOR * self.batch_size

    def steps(self, split: str) -> int:
        return -(-self.count(split) // self.batch_size)

    def class_weights(self) -> dict[int, float]:
        """`train.class_weight: balanced`: {class index: weight} for `fit(class_weight=...)`.

        Example:
            model.fit(bundle.training(), class_weight=bundle.class_weights())
        """
        return balanced_class_weights(self.examples["train"].labels, self.num_classes)

    def training(self) -> Any:
        """Shuffled every epoch, augmented (soft labels with MixUp or CutMix)."""
        return pipeline.make_dataset(
            self.examples["train"],
            self.image_size,
            self.batch_size,
            self.num_classes,
            shuffle_seed=self.seed,
            augmenter=pipeline.make_augmenter(self.augment_config, self.seed),
            mixer=recipe.make_mixer(self.augment_config, self.seed),
            skip_unreadable=self.audit is not None,
        )

    def plain(
        self, split: str, *, drop_remainder: bool = False, batch_size: int | None = None
    ) -> Any:
        """In order, not augmented: for evaluation and BatchNorm statistics, in batches of
        `batch_size` (defaults to the training batch)."""
        return pipeline.make_dataset(
            self.examples[split],
            self.image_size,
            batch_size or self.batch_size,
            self.num_classes,
            drop_remainder=drop_remainder,
            skip_unreadable=self.audit is not None,
        )

    def validation(self) -> Any:
        """The validation split as each epoch scores it: in order, in forward-pass batches, a
        folder's images decoded once and kept in memory when they fit the decode cache's
        budget beside the training images (like them, read again every epoch)."""
        keep = pipeline.decode_cache_fits(self.count("train") + self.count("val"), self.image_size)
        return pipeline.make_dataset(
            self.examples["val"],
            self.image_size,
            self.forward_batch_size,
            self.num_classes,
            skip_unreadable=self.audit is not None,
            keep=keep,
        )


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's "balanced" weights, n_samples / (n_classes * count), for every class.

    A class without a single label keeps weight 1.0 (it contributes no loss either way).
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    weights = dict.fromkeys(range(num_classes), 1.0)
    if present.size:
        computed = compute_class_weight("balanced", classes=present, y=labels)
        weights.update({int(c): float(w) for c, w in zip(present, computed, strict=True)})
    return weights


def load_data(
    config: Data, seed: int, *, unlabelled: bool = False, replicas: int = 1
) -> DataBundle:
    """The data stage: the `data` section in, a `DataBundle` out.

    `data.classes` keeps those classes (labels 0..K-1 in that order) before the splits are
    carved; `data.per_class` then thins the training split alone, so validation and test stay
    whole; `data.limit` comes last.

    Args:
        unlabelled: labels will be ignored (`transferctl pretrain`): a folder without
            `data.classes` may then hold its images with or without class sub-folders, all
            in one class. Digits and CIFAR keep their labels. Defaults to `False`.
        replicas: replicas training in sync (`transferctl.distribute.strategy`):
            `data.batch_size` is per replica, so the bundle's batches are
            `batch_size x replicas` (the global batch `fit` gets and the strategy splits).
            Defaults to `1`.

    Example:
        bundle = load_data(config.data, config.seed)
        model.fit(bundle.training(), epochs=1)
    """
    assert config.image_size is not None, "resolve the config first"
    found, class_names, scanned = _read_source(config, unlabelled)
    examples = _final_splits(found, class_names, config, seed, audited=scanned is not None)
    return DataBundle(
        class_names=class_names,
        examples=examples,
        image_size=config.image_size,
        batch_size=config.batch_size * replicas,
        seed=seed,
        augment_config=config.augment,
        bad_files=[] if scanned is None else scanned.skipped,
        audit=None if scanned is None else scanned.audit,
    )


def _read_source(
    config: Data, unlabelled: bool
) -> tuple[dict[str, Examples], list[str], sources.ScannedFolder | None]:
    """The source's splits as found, its class names (`data.classes` applied), and a folder's
    audit (None for digits and CIFAR)."""
    scanned = None
    if config.source == "digits":
        found, class_names = sources.load_digits()
    elif config.source in ("cifar10", "cifar100"):
        found, class_names = sources.load_cifar(config.source)
    else:
        assert config.path is not None
        scanned = sources.load_scanned_folder(
            config.path,
            config.on_bad_file,
            config.classes,
            unlabelled=unlabelled and config.classes is None,
        )
        found, class_names = scanned.splits, scanned.class_names
    if config.classes is not None and scanned is not None:
        _check_kept_classes(class_names, config.classes)
    elif config.classes is not None:
        found, class_names = _only_classes(found, class_names, config.classes)
    return found, class_names, scanned


def _final_splits(
    found: dict[str, Examples], class_names: list[str], config: Data, seed: int, *, audited: bool
) -> dict[str, Examples]:
    """Validation and test carved from train where the source has none, then `per_class` on
    train and `limit` on every split; empty splits left out."""
    train = found["train"]
    test = found.get("test")
    if audited:
        _check_class_sizes(
            train, class_names, config, carve_test=test is None, carve_val=found.get("val") is None
        )
    if test is None:
        train, test = splits.carve(train, config.test_split, seed, "test")
    val = found.get("val")
    if val is None:
        train, val = splits.carve(train, config.validation_split, seed + 1, "validation")
    examples = {"train": splits.per_class(train, config.per_class, seed + 2)}
    for name, split in (("val", val), ("test", test)):
        if split is not None and len(split) > 0:
            examples[name] = split
    return {name: splits.limit(split, config.limit, seed) for name, split in examples.items()}


def _only_classes(
    found: dict[str, Examples], class_names: list[str], wanted: list[str]
) -> tuple[dict[str, Examples], list[str]]:
    """`data.classes`: every split restricted to `wanted`, relabelled in its order."""
    problem = unknown_classes(wanted, class_names)
    if problem is not None:
        raise problem
    return {
        split: splits.select_classes(examples, class_names, wanted)
        for split, examples in found.items()
    }, list(wanted)


def _check_kept_classes(class_names: list[str], wanted: list[str]) -> None:
    """A folder keeps only `wanted` as it loads, and drops classes without a usable image."""
    empty = [name for name in wanted if name not in class_names]
    if empty:
        raise UserError(
            "data.classes",
            f"class(es) {', '.join(map(repr, empty))} have no usable training image "
            "(bad_files.txt or `transferctl doctor` says why)",
            "add images to them, or leave them out of data.classes",
        )


def _check_class_sizes(
    train: Examples, class_names: list[str], config: Data, *, carve_test: bool, carve_val: bool
) -> None:
    """Every class needs an image for training and one for each split carved from train."""
    carved = {}
    if carve_val:
        carved["validation_split"] = config.validation_split
    if carve_test:
        carved["test_split"] = config.test_split
    counts = np.bincount(train.labels, minlength=len(class_names))
    problems = split_shortfalls(dict(zip(class_names, counts.tolist(), strict=True)), carved)
    if problems:
        raise UserError(
            "data.path",
            problems[0],
            "add images to that class, remove its folder, or lower the split fractions",
        )
