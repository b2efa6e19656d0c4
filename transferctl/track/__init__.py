"""Experiment tracking: every finetune and pretrain run (and every tune trial) as an MLflow run.

Tracking is on when the config has `tracking: {mlflow: ...}`, or has no `tracking:` and the
MLFLOW_TRACKING_URI environment variable is set (`tracking: {}` turns it off). A command wraps
the stage it runs in `tracked(config)`; a tune study wraps its trials in `parent_run`, so that
they nest under one MLflow run. MLflow is imported only when tracking is on.

Example:
    with track.tracked(config):
        result = finetune.STAGE.start(config)

    with track.parent_run(config, directory.name, directory):  # a tune study
        for trial in trials:
            with track.tracked(trial_config):
                finetune.STAGE.start(trial_config, run_dir=...)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferctl.errors import UserError, first_line
from transferctl.track.mlflow_run import PARENTS, MLflowRun, Where
from transferctl.train import listeners

INSTALL = "pip install 'transferctl[mlflow]'"

__all__ = ["MLflowRun", "Where", "listeners_for", "parent_run", "tracked", "where"]


def where(config: Any) -> Where | None:
    """Where `config`'s runs are tracked; None: they are not (module doc)."""
    if config is None:
        return None
    tracking = config.tracking
    if tracking is None:
        return Where(None, None, asked=False) if os.environ.get("MLFLOW_TRACKING_URI") else None
    if tracking.mlflow is None:
        return None
    return Where(tracking.mlflow.uri, tracking.mlflow.experiment, asked=True)


def listeners_for(config: Any) -> list[MLflowRun]:
    """The listeners that track a run of `config`: none when tracking is off, or inside a
    `parent_run` MLflow refused. Prefer `tracked`, which also ends the MLflow run of a run
    that an exception stops.

    Raises:
        UserError: the config asks for MLflow and it is not installed (checked now, before
            anything trains; MLFLOW_TRACKING_URI alone only warns).
    """
    found = where(config)
    if found is None or (PARENTS and PARENTS[-1] is None):
        return []
    try:
        import mlflow  # noqa: F401
    except ImportError as error:
        if found.asked:
            raise UserError(
                "tracking.mlflow",
                f"MLflow is not installed ({first_line(error)})",
                f"{INSTALL}, or remove tracking.mlflow from the config",
            ) from None
        print(
            "warning: MLFLOW_TRACKING_URI is set but MLflow is not installed; the run is not "
            f"tracked ({INSTALL}, or set tracking: {{}} in the config)",
            file=sys.stderr,
        )
        return []
    return [MLflowRun(found)]


@contextlib.contextmanager
def tracked(config: Any) -> Iterator[None]:
    """Every run started in the block is tracked as `config` says (nothing when tracking is
    off); a run that an exception stops ends KILLED (Ctrl-C, a pruned trial) or FAILED.

    Raises:
        UserError: as `listeners_for`, on entering.
    """
    trackers = listeners_for(config)
    with listeners.listening(*trackers):
        try:
            yield
        except BaseException as error:
            for tracker in trackers:
                tracker.close(error)
            raise
        for tracker in trackers:
            tracker.close(None)


@contextlib.contextmanager
def parent_run(config: Any, name: str, directory: Path) -> Iterator[None]:
    """Runs tracked in the block nest under one MLflow run named `name`, in `config`'s
    experiment, with `config` as its params and `directory` as its `run_dir` tag (`kind`:
    tune). Whoever opens it again for the same directory (`tune --resume`, a `--jobs` worker
    process) goes on in the same parent run. Tracking off: nothing. MLflow failing: one
    warning, and the runs in the block are not tracked.

    Raises:
        UserError: as `listeners_for`, on entering.
    """
    trackers = listeners_for(config)
    if not trackers:
        yield
        return
    parent = trackers[0]
    parent.kind, parent.name = "tune", name
    parent.started(directory, config)
    PARENTS.append(parent.run_id)
    try:
        yield
    except BaseException as error:
        parent.close(error)
        raise
    finally:
        PARENTS.pop()
    parent.close(None)
