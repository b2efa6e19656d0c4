"""One trial: the base config with the trial's values, trained as an ordinary finetune run.

The run goes through the same lifecycle as `transferctl finetune` (`stages.finetune.STAGE`),
into `DIR/trials/<n>/`, so evaluate, export, compare and show work on it. A listener reports
the metric after every epoch with the run epoch as the step (every phase counts), and stops the
run when the pruner says so (`optuna.TrialPruned`): the run directory then stays as a kill
would leave it. The trial's value is the kept model's metric in metrics.json (`val`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferctl import track
from transferctl.config.loader import load_config
from transferctl.config.schema import Config
from transferctl.errors import TrainingFailed, UserError
from transferctl.train import listeners
from transferctl.tune.space import suggest
from transferctl.tune.study import BASE, TRIALS

RUN_DIR_ATTR = "run_dir"  # the trial's user attribute naming its run directory
ERROR_ATTR = "error"  # why a trial failed
INTERRUPTED = "interrupted (Ctrl-C)"


@dataclass
class Pruning:
    """The listener that reports each epoch's metric to the trial and prunes it."""

    trial: Any
    metric: str

    def started(self, run_dir: Path, config: Any) -> None:
        pass

    def epoch(self, row: dict[str, Any]) -> None:
        value = row.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), step=int(row["epoch"]))
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned at run epoch {row['epoch']}")

    def finished(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        pass


def trial_config(directory: Path, values: dict[str, Any], number: int) -> Config:
    """The base config with `values` applied, as trial `number` trains it."""
    base = load_config(directory / BASE)
    return load_config(
        directory / BASE, values={**values, "search": None, "name": f"{base.name}-t{number}"}
    )


def run_trial(trial: Any, directory: Path, config: Config) -> float:
    """Train trial `trial` (an `optuna.Trial`) and return its metric.

    Raises:
        optuna.TrialPruned: the pruner stopped it.
    """
    from transferctl.runtime import keras
    from transferctl.stages import finetune

    search = config.search
    assert search is not None
    values = suggest(trial, search.space)
    run_dir = directory / TRIALS / str(trial.number)
    trial.set_user_attr(RUN_DIR_ATTR, str(run_dir))
    trial_cfg = trial_config(directory, values, trial.number)
    try:
        # the tracker first: it hears an epoch before the pruner may stop the run on it
        with track.tracked(trial_cfg), listeners.listening(Pruning(trial, search.metric)):
            result = finetune.STAGE.start(trial_cfg, run_dir=run_dir, console=None)
    except (UserError, TrainingFailed) as error:
        trial.set_user_attr(ERROR_ATTR, str(error))  # trials.csv's note; the study goes on
        raise
    except KeyboardInterrupt:
        trial.set_user_attr(ERROR_ATTR, INTERRUPTED)  # queued again (`requeue_interrupted`)
        raise
    finally:
        keras().backend.clear_session()  # the next trial builds its model in a fresh graph
    return _value(result.metrics, search.metric, run_dir)


def _value(metrics: dict[str, Any], metric: str, run_dir: Path) -> float:
    key = metric.removeprefix("val_")
    value = (metrics.get("val") or {}).get(key)
    if value is None:
        raise UserError(
            "search.metric",
            f"the trial's run {run_dir} has no validation {key} (no validation split?)",
            "keep data.validation_split above 0 when tuning",
        )
    return float(value)
