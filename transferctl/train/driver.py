"""The epoch driver: one span of epochs (a finetune phase, pretrain's epochs) under its callbacks,
resumable after any kill; `train/loop.py` (finetune's phases) and `train/autoencoder.py`
(pretrain) both train through it.

It owns, once for every stage that trains:

- restore-or-save: a resumed span loads its checkpoint (weights and optimizer state) and its best
  epoch's weights; a new span commits its first checkpoint before training;
- the callbacks, in order: `NaNGuard`, `ema.Averaging` (with `train.ema`: the average in the
  model at each epoch's end), `EpochValidation` (BatchNorm statistics over a fixed
  sample of training images before each validation, where BatchNorm trains), `BestWeights`,
  early stopping, `HistoryWriter`, `EpochCheckpoint`, TensorBoard and the progress display;
- fit-with-resume: the rest of a mid-epoch checkpoint's epoch first, then the whole epochs;
- a NaN loss as `TrainingFailed`, the last good checkpoint kept;
- the best epoch's weights restored, and BatchNorm statistics left exact at the end.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import runtime
from transferctl.config.schema import EarlyStopping
from transferctl.data import DataBundle
from transferctl.distribute import strategy as distribution
from transferctl.errors import TrainingFailed, UserError, first_line
from transferctl.model.batchnorm import (
    EPOCH_STATISTICS_IMAGES,
    PHASE_STATISTICS_IMAGES,
    recompute_statistics,
    statistics_images,
)
from transferctl.model.freezing import FreezeReport
from transferctl.rundir import layout as rundir
from transferctl.runtime import speed
from transferctl.train import callbacks as cb
from transferctl.train import checkpoint, ema
from transferctl.train.checkpoint import TrainState
from transferctl.train.progress import ProgressDisplay


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    kept: dict[str, Any] | None = None  # metrics.json's `kept` (`train/kept.py`)


@dataclass
class Span:
    """What one span of epochs is: its name (history.csv's `phase`, `tensorboard/<label>`), its
    epochs within the run, and what decides its best epoch."""

    label: str
    first_epoch: int  # 0-based run epoch the span starts at
    epochs: int
    total_epochs: int  # of the whole run, for the progress line
    monitor: str
    stopping: EarlyStopping | None = None
    checkpoint_every: int | None = None


@dataclass
class Epochs:
    """A span's callbacks, and how it fits: `start` builds it, `fit` trains, `end` finishes."""

    model: Any
    state: TrainState
    folder: Path
    guard: cb.NaNGuard
    best: cb.BestWeights
    validating: cb.EpochValidation
    early: cb.ResumableEarlyStopping | None
    callbacks: list[Any]
    sample: Any  # the training images BatchNorm statistics are measured on before validating
    class_weight: dict[int, float] | None = None

    @property
    def stopped(self) -> bool:
        """A NaN loss, or early stopping, ended the span."""
        return self.guard.failure is not None or self.state.phase_stopped

    def batchnorm_trains(self, trains: bool) -> None:
        """Whether BatchNorm trains now: its statistics are then recomputed before validating
        (without a validation split, once at the end is enough)."""
        validating = trains and self.validating.validation is not None
        self.validating.batchnorm_images = self._sample if validating else None

    def _sample(self) -> Any:
        return self.sample

    def fit(self, training: Callable[[int], Any], end_epoch: int) -> None:
        """Train up to run epoch `end_epoch`; `training(epochs_done)` gives the batches."""
        state = self.state
        if self.stopped or state.epochs_done >= end_epoch:
            return
        if state.steps_done:
            # killed mid-epoch after a step checkpoint: train the rest of that epoch first
            self._fit(training(state.epochs_done).skip(state.steps_done), state.epochs_done + 1)
        if not self.stopped and state.epochs_done < end_epoch:
            self._fit(training(state.epochs_done), end_epoch)

    def _fit(self, dataset: Any, end_epoch: int) -> None:
        self.model.fit(
            feed(dataset, self.class_weight is not None),
            epochs=end_epoch,
            initial_epoch=self.state.epochs_done,
            callbacks=self.callbacks,
            class_weight=self.class_weight,
            verbose=0,
        )
        if self.early is not None:  # the next fit goes on counting where this one stopped
            self.early.initial_wait, self.early.initial_best = self.early.wait, self.early.best

    def end(self, where: str, rate: str, restore_best: bool) -> int | None:
        """A NaN loss as `TrainingFailed` (`where`: the config section; `rate`: what to lower);
        else the best epoch's weights back when `restore_best`, and that epoch (0-based)."""
        if self.guard.failure is not None:
            epoch, batch, loss = self.guard.failure
            raise TrainingFailed(
                f"{where}: the loss became {loss} in epoch {epoch + 1}, batch {batch + 1}; "
                f"training stopped and the last good checkpoint is kept in {self.folder}; "
                f"lower {rate} and start again, or resume with a changed config and --force"
            )
        return self.best.restore() if restore_best else None


def start(
    model: Any,
    run_dir: Path,
    state: TrainState,
    span: Span,
    *,
    resuming: bool,
    validation: Any | None,
    sample: Any,
    batchnorm_trains: bool,
    rows: list[dict[str, Any]],
    console: Console | None,
    steps: int,
    best_weights: list[Any] | None = None,
    extra_seconds: float = 0.0,
    class_weight: dict[int, float] | None = None,
) -> Epochs:
    """Restore the span's checkpoint (`resuming`) or commit its first one, and build its callbacks.

    Args:
        state: the span's training state; the callbacks update it as epochs end.
        sample: `epoch_sample(data)`, shared by every span of a run.
        batchnorm_trains: whether BatchNorm trains (`Epochs.batchnorm_trains` changes it).
        rows: history.csv's rows so far; the span appends its own.
        steps: batches per epoch, for the progress display.
        best_weights: a new span's first candidate for its best epoch (a linear probe's head).
        extra_seconds: spent for the span before its first epoch (history's first row has it).
    """
    folder = run_dir / rundir.CHECKPOINTS
    if resuming:
        best_weights = restore(model, folder, state)
    else:
        checkpoint.save(model, folder, state, best_model_weights=best_weights is not None)
    best = cb.BestWeights(span.monitor, state.best_value, state.best_epoch, best_weights)
    best.set_model(model)  # restore() may run with no fit: killed right after the span's end
    guard = cb.NaNGuard()
    early = _early_stopping(span.stopping, state)
    validating = cb.EpochValidation(validation, None)
    history = cb.HistoryWriter(run_dir / rundir.HISTORY, span.label, rows, extra_seconds)
    every = span.checkpoint_every
    steps_before = state.steps_done if resuming else 0
    averaging = ema.callbacks(model)
    saving = cb.EpochCheckpoint(folder, state, best, guard, early, every, steps_before)
    saving.averaged = averaging[0].averaged if averaging else None
    callbacks: list[Any] = [
        guard,
        *averaging,
        validating,
        best,
        *([early] if early is not None else []),
        history,
        saving,
        cb.tensorboard(run_dir / rundir.TENSORBOARD / span.label),
    ]
    if console is not None:
        progress = (span.label, span.first_epoch, span.epochs, span.total_epochs, steps)
        callbacks.append(ProgressDisplay(console, *progress))
    span_epochs = Epochs(
        model, state, folder, guard, best, validating, early, callbacks, sample, class_weight
    )
    span_epochs.batchnorm_trains(batchnorm_trains)
    return span_epochs


def what_trains(report: FreezeReport, state: TrainState, resuming: bool) -> str:
    """The end of a span's console line: its trainable parameters, and where a resumed span
    goes on."""
    return (
        f"trainable parameters {report.trainable_params:,}"
        + (" (BatchNorm trains)" if report.trainable_batchnorm_layers > 0 else "")
        + (f"; resuming at epoch {state.epochs_done + 1}" if resuming else "")
    )


def _early_stopping(
    stopping: EarlyStopping | None, state: TrainState
) -> cb.ResumableEarlyStopping | None:
    if stopping is None:
        return None
    return cb.ResumableEarlyStopping(
        monitor=stopping.monitor,
        patience=stopping.patience,
        min_delta=stopping.min_delta,
        wait=state.early_stopping_wait,
        best=state.early_stopping_best,
    )


def restore(model: Any, folder: Path, state: TrainState) -> list[Any] | None:
    """Load a resumed span's checkpoint into `model` (weights and optimizer state); the best
    epoch's weights so far, when the state names them."""
    best_weights = None
    assert state.weights is not None
    try:
        if state.best_weights is not None:
            load_model_weights(model, folder / state.best_weights)
            best_weights = model.get_weights()
        model.load_weights(str(folder / state.weights))  # model + optimizer state
    except ValueError as error:
        if not checkpoint.config_pending():
            raise
        checkpoint.forget_pending_config()
        raise UserError(
            "--force",
            f"the checkpoint of {folder.parent} does not load into the new config's model "
            f"({_shape_clash(error)}); config.yaml is left as it was",
            "resume without the changed model keys (or without --force), or start a new run",
        ) from None
    checkpoint.config_fits()
    return best_weights


def _shape_clash(error: ValueError) -> str:
    """What Keras says does not fit, in a few words: the first shape mismatch, or its line."""
    found = re.search(r"variable\.shape=\(.*?\), Received: value\.shape=\(.*?\)", str(error))
    return found[0] if found else first_line(error)[:200]


def load_model_weights(model: Any, path: Path) -> None:
    """Load weights saved with an optimizer state that may not fit the model's optimizer now
    (the best epoch of an earlier step of gradual unfreezing): the model's weights load, the
    optimizer's are skipped, which is what is wanted here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(str(path))


def feed(dataset: Any, class_weighted: bool = False) -> Any:
    """The training batches as `fit` gets them: prefetched to the GPU where runtime.speed
    decides so."""
    return speed.feed(dataset, runtime.device(), distribution.distributed_now(), class_weighted)


def epoch_sample(data: DataBundle) -> Any:
    """The fixed sample of training images BatchNorm statistics are recomputed on before each
    validation, where BatchNorm trains: decoded once, shared by a run's spans."""
    return statistics_images(data, EPOCH_STATISTICS_IMAGES, cache=True)


def exact_statistics(model: Any, data: DataBundle, batchnorm_trained: bool) -> int:
    """Where BatchNorm trained, its statistics for the saved model, over more images than each
    epoch's sample; how many layers were recomputed."""
    if not batchnorm_trained:
        return 0
    return recompute_statistics(model, statistics_images(data, PHASE_STATISTICS_IMAGES))


def read_history(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """The rows of an existing history.csv up to `upto_epoch` (a resumed run drops the rest)."""
    if upto_epoch <= 0 or not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= upto_epoch]
    for row in rows:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"):
            value = row.get(key)
            row[key] = float(value) if value not in (None, "") else None
        row["epoch"] = int(row["epoch"])
        count = row.get("trainable_params")
        row["trainable_params"] = int(count) if count not in (None, "") else None
        if isinstance(row["loss"], float) and not math.isfinite(row["loss"]):
            row["loss"] = None
    return rows
