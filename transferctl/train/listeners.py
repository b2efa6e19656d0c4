"""Who else hears how a run goes: an experiment tracker (MLflow), a tune trial's pruner.

The run lifecycle tells every listener registered for the block (`listening`) when the run's
directory exists (`started`: its path and resolved config), after each epoch's row is in
history.csv (`epoch`: the row, whose `epoch` is the run epoch), and when the run has finished
(`finished`: its path and metrics.json). The code that trains knows none of them: a command
registers them around the stage it runs (data flows one way). A listener may raise from
`epoch` to stop the run there (a pruned trial): the run stays as a kill would leave it, its
last checkpoint committed.

Example:
    with listeners.listening(tracker):
        stage.start(config)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol


class Listener(Protocol):
    def started(self, run_dir: Path, config: Any) -> None: ...

    def epoch(self, row: dict[str, Any]) -> None: ...

    def finished(self, run_dir: Path, metrics: dict[str, Any]) -> None: ...


_LISTENING: list[Listener] = []


@contextlib.contextmanager
def listening(*listeners: Listener) -> Iterator[None]:
    """Every run started in the block is told to `listeners` (after those already listening)."""
    _LISTENING.extend(listeners)
    try:
        yield
    finally:
        for listener in listeners:
            _LISTENING.remove(listener)


def started(run_dir: Path, config: Any) -> None:
    for listener in list(_LISTENING):
        listener.started(run_dir, config)


def epoch(row: dict[str, Any]) -> None:
    for listener in list(_LISTENING):
        listener.epoch(row)


def finished(run_dir: Path, metrics: dict[str, Any]) -> None:
    for listener in list(_LISTENING):
        listener.finished(run_dir, metrics)
