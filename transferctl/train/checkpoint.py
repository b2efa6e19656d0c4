"""What resuming needs, in `checkpoints/`, committed atomically after every epoch.

Weights (model and optimizer state, as Keras 3 `save_weights` stores both) go to files named by
epoch; `state.json` names the current ones and is replaced last, so it is the commit point: a
kill at any moment leaves the previous consistent state or the new one, never a mix. Older
weight files are removed only after the new state is committed.

Measured on Keras 3.15.1: `BackupAndRestore` and `ModelCheckpoint` write in place, and random
kills left corrupt `.weights.h5` files in 3 of 6 runs; hence this module.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transferctl import rundir

STATE = "state.json"


@dataclass
class TrainState:
    """Where training stands: the start of epoch `epochs_done` (0-based) of phase `phase_index`."""

    phase_index: int = 0
    phase_start_epoch: int = 0
    epochs_done: int = 0
    steps_done: int = 0  # batches already trained in epoch `epochs_done` (step checkpoints)
    phase_stopped: bool = False  # early stopping ended this phase
    weights: str | None = None  # file in checkpoints/ (model + optimizer)
    best_weights: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None  # 0-based global epoch
    early_stopping_wait: int = 0
    early_stopping_best: float | None = None
    finished: bool = False
    phases_done: list[dict[str, Any]] = field(default_factory=list)


def load_state(folder: Path) -> TrainState | None:
    path = folder / STATE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    known = {key: value for key, value in data.items() if key in TrainState.__dataclass_fields__}
    return TrainState(**known)


def save(model: Any, folder: Path, state: TrainState, *, best_model_weights: bool = False) -> None:
    """Write the model's weights (and, if asked, as the new best), then commit `state`."""
    folder.mkdir(parents=True, exist_ok=True)
    name = (
        f"epoch-{state.epochs_done:04d}-step-{state.steps_done:06d}-phase-{state.phase_index}"
        ".weights.h5"
    )
    with rundir.atomic_path(folder / name, suffix=".weights.h5") as temporary:
        model.save_weights(str(temporary))
    state.weights = name
    if best_model_weights:
        state.best_weights = name
    commit(folder, state)


def commit(folder: Path, state: TrainState) -> None:
    rundir.write_text(folder / STATE, json.dumps(asdict(state), indent=2) + "\n")
    keep = {state.weights, state.best_weights, STATE}
    for path in folder.glob("epoch-*.weights.h5"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
