"""Keras callbacks for a phase: validation, best weights, history, checkpoints, progress.

Validation runs in a callback rather than through `fit(validation_data=...)`, so that in phases
where BatchNorm trains its statistics are recomputed exactly *before* the epoch is scored: the
validation numbers, and the choice of the best epoch, are then those of the model as it will be
saved and served (inference mode).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from transferctl import rundir, runtime
from transferctl.model.batchnorm import recompute_statistics

keras = runtime.keras()
Callback: Any = keras.callbacks.Callback

HISTORY_COLUMNS = (
    "epoch",
    "phase",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
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
    """Keep the weights of the best epoch in memory; `restore()` puts them back."""

    def __init__(self, monitor: str) -> None:
        super().__init__()
        self.monitor = monitor
        self.maximize = monitor.endswith("accuracy")
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.weights: list[Any] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        better = self.best is None or (value > self.best if self.maximize else value < self.best)
        if better:
            self.best, self.best_epoch = float(value), epoch
            self.weights = self.model.get_weights()

    def restore(self) -> int | None:
        if self.weights is not None:
            self.model.set_weights(self.weights)
        return self.best_epoch


class HistoryWriter(Callback):
    """history.csv: one row per epoch, rewritten atomically after each epoch."""

    def __init__(self, path: Path, phase: str, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.path = path
        self.phase = phase
        self.rows = rows
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "phase": self.phase,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "learning_rate": current_learning_rate(self.model),
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        self.rows.append(row)
        write_history(self.path, self.rows)


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in HISTORY_COLUMNS})
    rundir.write_text(path, buffer.getvalue())


def current_learning_rate(model: Any) -> float:
    optimizer = model.optimizer
    rate = optimizer.learning_rate
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)


class EpochCheckpoint(Callback):
    """checkpoints/last.weights.h5 and state.json after every epoch, written atomically."""

    def __init__(self, folder: Path, phase_index: int, phase: str) -> None:
        super().__init__()
        self.folder = folder
        self.phase_index = phase_index
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        with rundir.atomic_path(self.folder / "last.weights.h5", suffix=".weights.h5") as temp:
            self.model.save_weights(str(temp))
        state = {"phase_index": self.phase_index, "phase": self.phase, "epochs_done": epoch + 1}
        rundir.write_text(self.folder / "state.json", json.dumps(state) + "\n")


class ProgressDisplay(Callback):
    """A rich progress bar per phase on a terminal; one plain line per epoch otherwise."""

    def __init__(
        self,
        console: Console,
        phase: str,
        first_epoch: int,
        phase_epochs: int,
        total_epochs: int,
        steps: int,
    ) -> None:
        super().__init__()
        self.console = console
        self.phase = phase
        self.first_epoch = first_epoch
        self.phase_epochs = phase_epochs
        self.total_epochs = total_epochs
        self.steps = steps
        self.progress: Progress | None = None
        self.epoch_task: Any = None
        self.batch_task: Any = None
        self.started = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.console.is_terminal:
            return
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.epoch_task = self.progress.add_task(
            f"[bold]{self.phase}[/] epochs", total=self.phase_epochs, metrics=""
        )
        self.batch_task = self.progress.add_task("  batches", total=self.steps, metrics="")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()
        if self.progress is not None:
            self.progress.reset(self.batch_task, total=self.steps, metrics="")

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.progress is not None:
            self.progress.update(
                self.batch_task, completed=batch + 1, metrics=_format(logs or {}, "train")
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.progress is not None:
            self.progress.update(self.epoch_task, advance=1, metrics=_format(logs, "all"))
            return
        seconds = time.perf_counter() - self.started
        self.console.print(
            f"{self.phase} epoch {epoch + 1 - self.first_epoch}/{self.phase_epochs} "
            f"(run epoch {epoch + 1}/{self.total_epochs}): {_format(logs, 'all')} "
            f"[{seconds:.1f}s]",
            highlight=False,
            soft_wrap=True,
        )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.progress is not None:
            self.progress.stop()


def _format(logs: dict[str, Any], which: str) -> str:
    keys = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if which == "all" else [])
    return " ".join(f"{key} {logs[key]:.4f}" for key in keys if logs.get(key) is not None)
