"""The kept model: what model.keras holds, by `train.restore_best`.

- `run` (the default): the best epoch of the whole run by the monitor. Each phase still ends on
  its own best epoch (the next phase starts from it), and that phase's end (BatchNorm statistics
  exact) is kept when its best scored better than the kept one; at the run's end the kept
  weights go back into the model. A second phase at a rate that wrecks the model then leaves
  model.keras at the first phase's best instead of at the wreck.
- `phase`: each phase ends on its own best epoch; model.keras is the last phase's.
- `false`: the last epoch.

The kept weights are a file in checkpoints/ (`kept-phase-N.weights.h5`), named in the training
state with the phase, the epoch and the score, so a run killed and resumed keeps what it kept.
What was kept is `metrics.json`'s `kept: {phase, epoch, monitor, value}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferctl.rundir import layout as rundir
from transferctl.train.checkpoint import TrainState

RUN = "run"
PHASE = "phase"
PREFIX = rundir.KEPT_WEIGHTS_PREFIX


@dataclass(frozen=True)
class Kept:
    """The kept epoch: its phase (index and name), 1-based run epoch, monitor and score."""

    phase_index: int
    phase: str
    epoch: int | None
    monitor: str
    value: float | None
    weights: str | None = None  # in checkpoints/; None where the model itself is what is kept

    def record(self) -> dict[str, Any]:
        """metrics.json's `kept`."""
        keys = ("phase", "epoch", "monitor", "value")
        return {key: getattr(self, key) for key in keys}


def from_state(state: TrainState) -> Kept | None:
    return None if state.kept is None else Kept(**state.kept)


def better(value: float | None, than: float | None, monitor: str) -> bool:
    """Whether `value` beats `than` by the monitor (accuracy up, a loss down)."""
    if value is None or not math.isfinite(value):
        return False
    if than is None:
        return True
    return value > than if monitor.endswith("accuracy") else value < than


def phase_ended(
    model: Any,
    folder: Path,
    state: TrainState,
    candidate: Kept,
    restore_best: str | bool,
) -> None:
    """After a phase ended (its best restored, BatchNorm exact): with `run`, keep its model in
    checkpoints/ when it scored better than the kept one, and name it in `state`. Else the last
    phase's end is what is kept."""
    if restore_best != RUN:
        state.kept = vars(candidate)
        return
    kept = from_state(state)
    if kept is not None and not better(candidate.value, kept.value, candidate.monitor):
        return
    name = f"{PREFIX}{candidate.phase_index}.weights.h5"
    with rundir.atomic_path(folder / name, suffix=".weights.h5") as temporary:
        model.save_weights(str(temporary))
    state.kept = vars(Kept(**{**vars(candidate), "weights": name}))


def restore(
    model: Any, folder: Path, state: TrainState, last_phase: int, restore_best: str | bool
) -> Kept | None:
    """At the run's end: with `run`, the kept phase's weights back into the model when a phase
    before the last one is kept; what is kept."""
    from transferctl.train.driver import load_model_weights

    kept = from_state(state)
    earlier = kept is not None and kept.weights is not None and kept.phase_index != last_phase
    if restore_best == RUN and earlier:
        assert kept is not None and kept.weights is not None
        load_model_weights(model, folder / kept.weights)
    return kept
