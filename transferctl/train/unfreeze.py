"""Gradual unfreezing: the steps of a phase with `unfreeze: {every: K, layers: N}`.

Starting from the phase's freezing, every K epochs the N frozen backbone layers nearest the top
start to train (fastai's `freeze_to` steps, Lightning's `BackboneFinetuning`). Layers are counted
as the freeze specs count them, in `backbone.layers`; BatchNorm layers among them train only with
`model.train_batchnorm`. Keras needs a recompile after any change of `trainable`, so each step is
its own `fit`, with a fresh optimizer state; the learning-rate schedule runs over the whole phase.

Example:
    steps = schedule(epochs=6, unfreeze=Unfreeze(every=2, layers=10), frozen_layers=150)
    # [Step(0, 2, 0), Step(2, 4, 10), Step(4, 6, 20)]
"""

from __future__ import annotations

from dataclasses import dataclass

from transferctl.config.schema import Unfreeze


@dataclass(frozen=True)
class Step:
    """Epochs `first_epoch` to `end_epoch - 1` of a phase (0-based, within the phase), with the
    `released` frozen layers nearest the top training."""

    first_epoch: int
    end_epoch: int
    released: int


def schedule(epochs: int, unfreeze: Unfreeze | None, frozen_layers: int) -> list[Step]:
    """The phase's steps, in order; one step when there is no `unfreeze`.

    Steps that would release nothing new (every frozen layer already trains) are merged into
    the step before, so the phase recompiles only when something changes.

    Args:
        epochs: the phase's epochs.
        unfreeze: the phase's `unfreeze`, or None.
        frozen_layers: how many backbone layers the phase's freeze spec keeps frozen.
    """
    if unfreeze is None:
        return [Step(0, epochs, 0)]
    steps: list[Step] = []
    for first in range(0, epochs, unfreeze.every):
        released = min(first // unfreeze.every * unfreeze.layers, frozen_layers)
        end = min(first + unfreeze.every, epochs)
        if steps and steps[-1].released == released:
            steps[-1] = Step(steps[-1].first_epoch, end, released)
        else:
            steps.append(Step(first, end, released))
    return steps


def step_of(steps: list[Step], epoch: int) -> Step:
    """The step that trains the phase's `epoch` (0-based; past the end: the last step)."""
    for step in steps:
        if epoch < step.end_epoch:
            return step
    return steps[-1]


def checkpoint_step(steps: list[Step], epoch: int, steps_done: int) -> Step:
    """The step whose optimizer wrote a checkpoint taken at the start of the phase's `epoch`,
    `steps_done` batches in: after a whole epoch, the step that trained that epoch."""
    if steps_done > 0 or epoch == 0:
        return step_of(steps, epoch)
    return step_of(steps, epoch - 1)
