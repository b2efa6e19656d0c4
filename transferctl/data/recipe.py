"""The recipe's augmentations (`data.augment`): RandAugment and random erasing on each image,
MixUp and CutMix across a batch, with soft labels. Keras 3's own layers, in the tf.data pipeline.

Per image (after flips, rotation, zoom, translation and contrast), in this order:
`keras.layers.RandAugment` (its operations are drawn per batch, their strength per image), then
`keras.layers.RandomErasing` (each image erased with probability `erasing`, exactly: Keras
draws the probability itself between the two ends of `factor`, so both are `erasing`).

Per batch, once the labels are one-hot: `keras.layers.MixUp` (Beta(alpha, alpha) blend weights)
or `keras.layers.CutMix` (its `factor` is the range alpha is drawn from: `(alpha, alpha)` makes it
the Beta alpha, at most 1). With both on, a seeded coin picks one for each batch, as timm does.
The labels come out soft (rows sum to 1), so the cross-entropy stays the loss it says it is; the
training `accuracy` (Keras's categorical accuracy) compares the prediction with each soft label's
largest share, the image that covers most of the mixed one.

Example:
    steps = image_layers(config.data.augment, seed=42)      # [] when none is on
    mixer = make_mixer(config.data.augment, seed=42)        # None when neither is on
    batches = batches.map(mixer)                             # (images, one-hot) -> soft labels
"""

from __future__ import annotations

from typing import Any

from transferctl import runtime
from transferctl.config.schema import Augment

# seed offsets, after make_augmenter's (+0 to +4), so that no two layers share a stream
RANDAUGMENT_SEED, ERASING_SEED, MIXUP_SEED, CUTMIX_SEED, PICK_SEED = 5, 6, 7, 8, 9
VALUE_RANGE = (0, 255)  # the pipeline's pixels (the backbone's preprocessing is in the model)


def recipe_on(augment: Augment) -> bool:
    """Whether any of the recipe's augmentations is on (each changes the images every epoch)."""
    return augment.randaugment is not None or mixing_on(augment) or augment.erasing > 0


def mixing_on(augment: Augment) -> bool:
    """Whether MixUp or CutMix is on: the training labels are then soft."""
    return augment.mixup > 0 or augment.cutmix > 0


def image_layers(augment: Augment, seed: int) -> list[Any]:
    """The per-image layers of the recipe that are on, in the order they apply."""
    layers = runtime.keras().layers
    steps: list[Any] = []
    spec = augment.randaugment
    if spec is not None:
        steps.append(
            layers.RandAugment(
                value_range=VALUE_RANGE,
                num_ops=spec.ops,
                factor=spec.magnitude,
                seed=seed + RANDAUGMENT_SEED,
            )
        )
    if augment.erasing > 0:
        probability = augment.erasing
        steps.append(
            layers.RandomErasing(
                factor=(probability, probability),
                value_range=VALUE_RANGE,
                seed=seed + ERASING_SEED,
            )
        )
    return steps


class Mixer:
    """(images, one-hot labels) -> (mixed images, soft labels), in a tf.data map.

    Args:
        mixup: MixUp's Beta alpha; 0: off.
        cutmix: CutMix's Beta alpha (at most 1); 0: off.
        seed: the data seed; each layer and the coin get their own offset.
    """

    def __init__(self, mixup: float, cutmix: float, seed: int) -> None:
        if mixup <= 0 and cutmix <= 0:
            raise ValueError(
                f"`Mixer` needs mixup or cutmix above 0. Received: mixup={mixup}, cutmix={cutmix}"
            )
        keras = runtime.keras()
        self.mixes: list[Any] = []
        if mixup > 0:
            self.mixes.append(keras.layers.MixUp(alpha=mixup, seed=seed + MIXUP_SEED))
        if cutmix > 0:
            factor = (cutmix, cutmix)
            self.mixes.append(keras.layers.CutMix(factor=factor, seed=seed + CUTMIX_SEED))
        self.coin = keras.random.SeedGenerator(seed + PICK_SEED)

    def __call__(self, images: Any, labels: Any) -> tuple[Any, Any]:
        batch = {"images": images, "labels": labels}
        if len(self.mixes) == 1:
            mixed = self.mixes[0](batch, training=True)
        else:
            tf, keras = runtime.tf(), runtime.keras()
            heads = keras.random.uniform((), seed=self.coin) < 0.5
            first, second = self.mixes
            mixed = tf.cond(
                heads, lambda: first(batch, training=True), lambda: second(batch, training=True)
            )
        return mixed["images"], mixed["labels"]


def make_mixer(augment: Augment, seed: int) -> Mixer | None:
    """The batch mixer `data.augment` asks for, or None (no `mixup`, no `cutmix`)."""
    if not mixing_on(augment):
        return None
    return Mixer(augment.mixup, augment.cutmix, seed)
