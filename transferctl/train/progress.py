"""The progress display: rich bars per phase on a terminal, one plain line per epoch otherwise.

The bars keep their bar, n/N, elapsed time and ETA at 80 columns and narrower: the metrics come
last and get what is left of the width. A Ctrl-C (Keras then calls no `on_train_end`) stops them
through `stop_progress`, so the error line and the prompt land below them.
"""

from __future__ import annotations

import threading
import time
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
from rich.table import Column

from transferctl import runtime

Callback: Any = runtime.keras().callbacks.Callback


class ProgressDisplay(Callback):
    """A rich progress bar per phase on a terminal; one plain line per epoch otherwise.

    `async_safe` (see `NaNGuard`): rich's `Progress` is thread-safe, and a batch hook that
    finishes after a later one's does not move the bar back.
    """

    async_safe = True

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
        self.shown = 0  # batches the bar shows done in this epoch
        self.lock = threading.Lock()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.console.is_terminal:
            return
        self.progress = progress_bars(self.console)
        self.progress.start()
        _LIVE.add(self.progress)
        self.epoch_task = self.progress.add_task(
            f"[bold]{self.phase}[/] epochs", total=self.phase_epochs, metrics=""
        )
        self.batch_task = self.progress.add_task("  batches", total=self.steps, metrics="")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()
        if self.progress is not None:
            # a resumed phase, or a later step of gradual unfreezing, starts part-way through
            self.progress.update(self.epoch_task, completed=epoch - self.first_epoch)
            self.progress.reset(self.batch_task, total=self.steps, metrics="")
        self.shown = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.progress is None:
            return
        with self.lock:
            if batch + 1 <= self.shown:
                return
            self.shown = batch + 1
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
            _LIVE.discard(self.progress)


# the progress displays showing now: stopped by `stop_progress` when training is interrupted
_LIVE: set[Progress] = set()


def stop_progress() -> None:
    """Stop every live progress display (Ctrl-C: Keras calls no `on_train_end`), so the next
    line, and the shell's prompt, start on a clean line below the bars."""
    for progress in list(_LIVE):
        progress.stop()
    _LIVE.clear()


def progress_bars(console: Console, transient: bool = False) -> Progress:
    """Rich progress bars whose bar, n/N, elapsed time and ETA keep their place at 80 columns
    and narrower: the metrics come last and get what is left of the width, cut with an
    ellipsis (none below ~70 columns), never wrapped."""
    fixed = PROGRESS_DESCRIPTION + PROGRESS_BAR + 7 + 7 + 3 + 7 + 6  # n/N, times, "eta", gaps
    rest = max(console.width - fixed - 1, 0)
    return Progress(
        TextColumn(
            "{task.description}",
            table_column=Column(no_wrap=True, overflow="ellipsis", max_width=PROGRESS_DESCRIPTION),
        ),
        BarColumn(bar_width=PROGRESS_BAR),
        MofNCompleteColumn(table_column=Column(no_wrap=True)),
        TimeElapsedColumn(table_column=Column(no_wrap=True)),
        TextColumn("eta", table_column=Column(no_wrap=True)),
        TimeRemainingColumn(table_column=Column(no_wrap=True)),
        TextColumn(
            "{task.fields[metrics]}",
            table_column=Column(no_wrap=True, overflow="ellipsis", max_width=rest),
        ),
        console=console,
        transient=transient,
    )


PROGRESS_DESCRIPTION = 18  # "finetune epochs": longer phase names end in an ellipsis
PROGRESS_BAR = 16


def _format(logs: dict[str, Any], which: str) -> str:
    keys = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if which == "all" else [])
    return " ".join(f"{key} {logs[key]:.4f}" for key in keys if logs.get(key) is not None)
