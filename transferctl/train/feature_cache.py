"""The feature cache: a phase that trains only the head on a frozen backbone runs it once.

In such a phase (the whole backbone frozen, so BatchNorm in inference mode, and no
augmentation), the pooled backbone output of an image never changes. So the backbone runs once
per image of each split; the head then trains for every epoch on those features, in memory
when they fit `MEMORY_BUDGET_BYTES`, else in a memory-mapped file under the run's checkpoints/.
The head model shares its layers with the full model, so what it learns is in the full model:
model.keras, evaluate and export see one ordinary model.
"""

from __future__ import annotations

from dataclasses import dataclass

from transferctl.config.schema import Augment

MEMORY_BUDGET_BYTES = 1 << 30


@dataclass(frozen=True)
class CacheDecision:
    """Whether a phase trains on cached features, and why (or why not), in words."""

    use: bool
    reason: str


def augmentation_on(augment: Augment) -> bool:
    return augment.flip != "none" or any(
        value > 0 for value in (augment.rotation, augment.zoom, augment.contrast, augment.translate)
    )


def decide(setting: str, backbone_frozen: bool, augment: Augment) -> CacheDecision:
    """The cache decision for one phase.

    Args:
        setting: `train.feature_cache` (`auto` or `off`).
        backbone_frozen: every backbone layer is frozen in this phase.
        augment: `data.augment`; any augmentation changes the features every epoch.
    """
    if setting == "off":
        return CacheDecision(False, "train.feature_cache is off")
    if not backbone_frozen:
        return CacheDecision(False, "part of the backbone trains")
    if augmentation_on(augment):
        return CacheDecision(False, "augmentation is on (data.augment)")
    return CacheDecision(True, "the backbone is frozen and nothing is augmented")
