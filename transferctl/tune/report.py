"""What a study leaves for a person: trials.csv, best.yaml and tune.png in the tune directory.

trials.csv has one row per trial (number, state, value, seconds, run dir, params as JSON; a
rerun of a killed trial says which one it reruns); best.yaml is the best trial's config.yaml
(its resolved config, which finetune reloads to the same run); tune.png is Optuna's own
optimisation history and, once there are enough trials, its parameter importances.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any

from transferctl.rundir import layout as rundir
from transferctl.tune.space import chosen
from transferctl.tune.study import BEST, PLOT, TRIALS_CSV, retry_class
from transferctl.tune.trial import RUN_DIR_ATTR

COLUMNS = ("number", "state", "value", "seconds", "run_dir", "params", "note")


def write_all(directory: Path, study: Any, space: dict[str, Any]) -> None:
    """trials.csv, then best.yaml and tune.png when some trial completed."""
    write_trials(directory, study, space)
    best = best_trial(study)
    if best is not None:
        source = Path(best.user_attrs[RUN_DIR_ATTR]) / rundir.CONFIG
        if source.is_file():
            rundir.write_text(directory / BEST, source.read_text(encoding="utf-8"))
        write_plot(directory, study)


def best_trial(study: Any) -> Any | None:
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def write_trials(directory: Path, study: Any, space: dict[str, Any]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for trial in study.get_trials(deepcopy=False):
        writer.writerow(_row(trial, space))
    rundir.write_text(directory / TRIALS_CSV, out.getvalue())


def _row(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    seconds = trial.duration.total_seconds() if trial.duration is not None else None
    rerun = retry_class().retried_trial_number(trial)
    notes = [f"rerun of trial {rerun} (interrupted)"] if rerun is not None else []
    if trial.state.name == "PRUNED" and trial.last_step is not None:
        notes.append(f"pruned at run epoch {trial.last_step}")
    if trial.state.name == "FAIL":
        notes.append(trial.user_attrs.get("error", "interrupted (killed)"))
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": "" if trial.value is None else f"{trial.value:.6g}",
        "seconds": "" if seconds is None else f"{seconds:.1f}",
        "run_dir": trial.user_attrs.get(RUN_DIR_ATTR, ""),
        "params": json.dumps(chosen(trial.params, space), sort_keys=True),
        "note": "; ".join(notes),
    }


def write_plot(directory: Path, study: Any) -> None:
    """Optimisation history (and parameter importances from 3 completed trials); a failure to
    draw only warns: the study and its files are what matter."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    figure = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    _history(left, study, completed)
    _importances(right, study, completed)
    with rundir.atomic_path(directory / PLOT, suffix=".png") as temporary:
        figure.savefig(str(temporary), format="png")


def _history(axes: Any, study: Any, completed: list[Any]) -> None:
    numbers = [trial.number for trial in completed]
    values = [trial.value for trial in completed]
    best: list[float] = []
    pick = max if study.direction.name == "MAXIMIZE" else min
    for value in values:
        best.append(value if not best else pick(best[-1], value))
    axes.plot(numbers, values, "o", label="completed trial")
    axes.step(numbers, best, where="post", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(study.user_attrs.get("metric", "value"))
    axes.set_title("optimisation history")
    axes.legend(loc="best")


def _importances(axes: Any, study: Any, completed: list[Any]) -> None:
    axes.set_title("parameter importances (fANOVA)")
    if len(completed) < 3 or not completed[0].params:
        axes.text(0.5, 0.5, "from 3 completed trials", ha="center", va="center")
        axes.set_axis_off()
        return
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as error:
            axes.text(0.5, 0.5, f"not available: {error}", ha="center", va="center", wrap=True)
            axes.set_axis_off()
            return
    names = list(found)[::-1]
    axes.barh(names, [found[name] for name in names])
    axes.set_xlabel("importance")
