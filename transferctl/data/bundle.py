"""Load the configured source, carve the splits, and build the pipelines for training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transferctl.config.schema import Data
from transferctl.data import pipeline, sources, splits
from transferctl.data.examples import Examples

SPLITS = ("train", "val", "test")


@dataclass
class DataBundle:
    """The examples of each split, the class names, and how to turn them into tf.data."""

    class_names: list[str]
    examples: dict[str, Examples]
    image_size: tuple[int, int]
    batch_size: int
    seed: int
    augment_config: Any
    # files found but not used, with the reason (data.on_bad_file: skip): path, reason
    bad_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def has(self, split: str) -> bool:
        return split in self.examples and len(self.examples[split]) > 0

    def count(self, split: str) -> int:
        return len(self.examples[split]) if self.has(split) else 0

    def steps(self, split: str) -> int:
        return -(-self.count(split) // self.batch_size)

    def training(self) -> Any:
        """Shuffled every epoch, augmented."""
        return pipeline.make_dataset(
            self.examples["train"],
            self.image_size,
            self.batch_size,
            self.num_classes,
            shuffle_seed=self.seed,
            augmenter=pipeline.make_augmenter(self.augment_config, self.seed),
        )

    def plain(self, split: str, *, drop_remainder: bool = False) -> Any:
        """In order, not augmented: for evaluation and BatchNorm statistics."""
        return pipeline.make_dataset(
            self.examples[split],
            self.image_size,
            self.batch_size,
            self.num_classes,
            drop_remainder=drop_remainder,
        )


def load_data(config: Data, seed: int) -> DataBundle:
    """The data stage: the `data` section in, a `DataBundle` out.

    Example:
        bundle = load_data(config.data, config.seed)
        model.fit(bundle.training(), epochs=1)
    """
    assert config.image_size is not None, "resolve the config first"
    if config.source == "digits":
        found, class_names = sources.load_digits()
    elif config.source in ("cifar10", "cifar100"):
        found, class_names = sources.load_cifar(config.source)
    else:
        assert config.path is not None
        found, class_names = sources.load_folder(config.path)

    train = found["train"]
    test = found.get("test")
    if test is None:
        train, test = splits.carve(train, config.test_split, seed, "test")
    val = found.get("val")
    if val is None:
        train, val = splits.carve(train, config.validation_split, seed + 1, "validation")
    examples = {"train": train}
    for name, split in (("val", val), ("test", test)):
        if split is not None and len(split) > 0:
            examples[name] = split
    examples = {name: splits.limit(split, config.limit, seed) for name, split in examples.items()}
    return DataBundle(
        class_names=class_names,
        examples=examples,
        image_size=config.image_size,
        batch_size=config.batch_size,
        seed=seed,
        augment_config=config.augment,
    )
