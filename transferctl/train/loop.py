"""Run the configured phases in order on a built model, resumable after any kill.

Each phase (`train/phases.py`) applies its freezing, compiles again, trains its epochs through
the epoch driver (`train/driver.py`: checkpoints, best epoch, NaN guard, history) and leaves the
model as it is saved. A resumed run skips the phases it finished and re-enters the one it was in,
with the optimizer state, the schedule's position (the optimizer's step count), the best epoch
so far and early stopping's count.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl.config.schema import Model, Train
from transferctl.data import DataBundle
from transferctl.rundir import layout as rundir
from transferctl.train import driver, kept
from transferctl.train.checkpoint import TrainState
from transferctl.train.driver import TrainResult, read_history
from transferctl.train.phases import Run, compile_model, train_phase

__all__ = ["TrainResult", "compile_model", "read_history", "train"]  # plan, bench, stages


def train(
    model: Any,
    backbone: Any,
    data: DataBundle,
    model_config: Model,
    train_config: Train,
    run_dir: Path,
    console: Console | None,
    resume: TrainState | None = None,
    class_weight: dict[int, float] | None = None,
    teacher: Any = None,
) -> TrainResult:
    """The training stage. Writes history.csv, checkpoints/ and tensorboard/ as it goes.

    With a `teacher` (`distill.load_teacher`), every phase distils from it.
    """
    state = resume or TrainState()
    result = TrainResult(history=read_history(run_dir / rundir.HISTORY, state.epochs_done))
    result.phases = list(state.phases_done)
    started = time.perf_counter()
    run = Run(
        model,
        backbone,
        data,
        model_config,
        train_config,
        run_dir,
        console,
        rows=result.history,
        # where BatchNorm trains, its statistics before each validation: one fixed sample
        sample=driver.epoch_sample(data),
        class_weight=class_weight,
        teacher=teacher,
    )
    for index, phase in enumerate(train_config.phases):
        if index >= state.phase_index:
            state = train_phase(run, index, phase, state)
            result.phases = list(state.phases_done)
    last = len(train_config.phases) - 1
    kept_epoch = kept.restore(model, run.folder, state, last, train_config.restore_best)
    result.kept = None if kept_epoch is None else kept_epoch.record()
    result.seconds = time.perf_counter() - started
    return result
