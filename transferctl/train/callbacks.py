"""Keras callbacks for a phase: validation, best weights, history, checkpoints (the progress
display: `train/progress.py`).

Validation runs in a callback rather than through `fit(validation_data=...)`, so that in phases
where BatchNorm trains its statistics are recomputed exactly *before* the epoch is scored: the
validation numbers, and the choice of the best epoch, are then those of the model as it will be
saved and served (inference mode).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transferctl import runtime
from transferctl.model.batchnorm import recompute_statistics
from transferctl.rundir import layout as rundir
from transferctl.train import checkpoint, listeners
from transferctl.train.checkpoint import TrainState

keras = runtime.keras()
Callback: Any = keras.callbacks.Callback
EarlyStopping: Any = keras.callbacks.EarlyStopping

HISTORY_COLUMNS = (
    "epoch",
    "phase",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
    "trainable_params",  # what trained in the epoch (grows with gradual unfreezing)
)


class EpochValidation(Callback):
    """Recompute BatchNorm statistics (when they trained), then score the validation split."""

    def __init__(self, validation: Any | None, batchnorm_images: Callable[[], Any] | None) -> None:
        super().__init__()
        self.validation = validation
        self.batchnorm_images = batchnorm_images

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.batchnorm_images is not None:
            recompute_statistics(self.model, self.batchnorm_images())
        if self.validation is not None and logs is not None:
            scores = self.model.evaluate(self.validation, verbose=0, return_dict=True)
            logs.update({f"val_{name}": float(value) for name, value in scores.items()})


class BestWeights(Callback):
    """Keep the weights of the phase's best epoch in memory; `restore()` puts them back."""

    def __init__(
        self,
        monitor: str,
        best: float | None = None,
        best_epoch: int | None = None,
        weights: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.maximize = monitor.endswith("accuracy")
        self.best = best
        self.best_epoch = best_epoch
        self.weights = weights
        self.improved = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.improved = False
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        better = self.best is None or (value > self.best if self.maximize else value < self.best)
        if better:
            self.best, self.best_epoch = float(value), epoch
            self.weights = self.model.get_weights()
            self.improved = True

    def restore(self) -> int | None:
        if self.weights is not None:
            self.model.set_weights(self.weights)
        return self.best_epoch


class ResumableEarlyStopping(EarlyStopping):
    """Keras's EarlyStopping, able to continue counting after a resume."""

    def __init__(self, *args: Any, wait: int = 0, best: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.initial_wait = wait
        self.initial_best = best

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self.wait = self.initial_wait
        self.best = self.initial_best


class NaNGuard(Callback):
    """Stop at the first batch whose loss is NaN or infinite, and remember where.

    `async_safe`: Keras runs the batch hook in a worker thread, so the next step starts without
    waiting for this one's loss to reach Python (a hook that is not async-safe makes every step
    wait). Hooks may then finish out of order; the earliest failing batch is kept, and Keras
    flushes them all before `on_epoch_end`, so the epoch's checkpoint sees any failure.
    """

    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.failure: tuple[int, int, float] | None = None
        self.lock = threading.Lock()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        with self.lock:
            if self.failure is None or (self.epoch, batch) < self.failure[:2]:
                self.failure = (self.epoch, batch, float(loss))
        self.model.stop_training = True


class HistoryWriter(Callback):
    """history.csv: one row per epoch, rewritten atomically after each epoch.

    `seconds` is wall time from the previous row to this one: the epoch's training, BatchNorm
    statistics and validation, and the previous epoch's checkpoint (which is committed after
    the row it follows is written, so that a kill between the two loses no row a resume keeps).
    The first epoch of each `fit` counts from its start, plus `extra_seconds`.
    """

    def __init__(
        self, path: Path, phase: str, rows: list[dict[str, Any]], extra_seconds: float = 0.0
    ) -> None:
        super().__init__()
        self.path = path
        self.phase = phase
        self.rows = rows
        self.started = 0.0
        self.extra_seconds = extra_seconds  # spent for this phase before its first epoch
        self.last_row: float | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.last_row = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        self.started = (now if self.last_row is None else self.last_row) - self.extra_seconds
        self.extra_seconds = 0.0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return  # a NaN epoch is reported as an error, not recorded as history
        row = {
            "epoch": epoch + 1,
            "phase": self.phase,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "learning_rate": current_learning_rate(self.model),
            "seconds": round(time.perf_counter() - self.started, 3),
            "trainable_params": trainable_params(self.model),
        }
        self.rows.append(row)
        write_history(self.path, self.rows)
        self.last_row = time.perf_counter()
        listeners.epoch(row)  # may raise to stop the run (a pruned trial)


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in HISTORY_COLUMNS})
    rundir.write_text(path, buffer.getvalue())


def trainable_params(model: Any) -> int:
    """How many parameters `fit` trains now (those of the trainable variables)."""
    return int(sum(math.prod(variable.shape) for variable in model.trainable_weights))


def tensorboard(log_dir: Path) -> Any:
    """Keras's TensorBoard callback, epoch summaries only, marked `async_safe` (see `NaNGuard`):
    with `update_freq="epoch"` and no profiling its batch hook writes nothing, so the steps need
    not wait for it."""
    board = keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0)
    board.async_safe = True
    return board


def current_learning_rate(model: Any) -> float:
    optimizer = model.optimizer
    rate = optimizer.learning_rate
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)


class EpochCheckpoint(Callback):
    """Commit weights, optimizer state and training state after every good epoch, and every
    `every_steps` batches when asked (a resumed run then skips the batches already trained)."""

    def __init__(
        self,
        folder: Path,
        state: TrainState,
        best: BestWeights,
        guard: NaNGuard,
        early_stopping: ResumableEarlyStopping | None,
        every_steps: int | None = None,
        steps_before: int = 0,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.state = state
        self.best = best
        self.guard = guard
        self.early_stopping = early_stopping
        self.every_steps = every_steps
        self.steps_before = steps_before  # batches of this epoch trained before a resume
        self.epoch = 0
        # with train.ema, `ema.Averaging.averaged`: a step checkpoint holds the average too
        self.averaged: Callable[[], Any] | None = None
        # without step checkpoints the batch hook does nothing: the steps need not wait for it
        self.async_safe = every_steps is None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.every_steps is None or self.guard.failure is not None:
            return
        done = self.steps_before + batch + 1
        if done % self.every_steps == 0:
            self.state.epochs_done = self.epoch
            self.state.steps_done = done
            with self.averaged() if self.averaged is not None else contextlib.nullcontext():
                checkpoint.save(self.model, self.folder, self.state)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps_before = 0
        if self.guard.failure is not None:
            return  # keep the last good checkpoint
        self.state.epochs_done = epoch + 1
        self.state.steps_done = 0
        self.state.best_value = self.best.best
        self.state.best_epoch = self.best.best_epoch
        if self.early_stopping is not None:
            self.state.early_stopping_wait = int(self.early_stopping.wait)
            best = self.early_stopping.best
            self.state.early_stopping_best = None if best is None else float(best)
        self.state.phase_stopped = bool(self.model.stop_training)
        checkpoint.save(self.model, self.folder, self.state, best_model_weights=self.best.improved)
