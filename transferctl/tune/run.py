"""`transferctl tune`: start a study in a new tune directory, or resume one; trials until
`search.trials` of them completed or were pruned.

`--jobs N` runs N processes on this machine: this one and N-1 workers (`tune --resume DIR
--jobs 1`), all on the same study; more machines join by sharing `search.storage`. Each trial
this process runs prints one line: on a terminal with colour, in a log as plain text.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import track
from transferctl.config.loader import dump_config, load_config
from transferctl.config.schema import Config
from transferctl.errors import Interrupted, TrainingFailed, UserError, shown
from transferctl.files import paths
from transferctl.rundir import layout as rundir
from transferctl.rundir import lock as runlock
from transferctl.tune import report
from transferctl.tune.space import check_space, chosen
from transferctl.tune.space import shown as shown_values
from transferctl.tune.study import (
    BASE,
    fail_interrupted,
    finished_count,
    open_study,
    requeue_interrupted,
)
from transferctl.tune.trial import run_trial

TUNE_SUFFIX = "tune"


def start(
    config_path: Path, overrides: list[str], trials: int | None, jobs: int, directory: Path | None
) -> Path:
    """A new study around `config_path` (with `--set` overrides); the tune directory."""
    config = load_config(config_path, overrides)
    if config.search is None:
        raise UserError(
            str(config_path),
            "has no search: section; tune needs the space to search",
            "add e.g. search: {space: {train.phases.0.learning_rate: {log_uniform: [1e-4, 1e-2]}}}",
        )
    search = config.search
    if trials is not None:
        search = search.model_copy(update={"trials": trials})
        config = config.model_copy(update={"search": search})
    check_space(config_path, overrides, search)  # every end of every range, before training
    if directory is None:
        rundir.check_writable(config.output.runs_dir)
        target = rundir.create(config.output.runs_dir, f"{config.name}-{TUNE_SUFFIX}", None)
    else:
        rundir.check_writable(directory, where="--dir")
        rundir.check_available(directory)
        target = rundir.create(config.output.runs_dir, config.name or "tune", directory)
    rundir.write_text(target / BASE, dump_config(config))
    return run(target, jobs)


def resume(directory: Path, trials: int | None, jobs: int, worker: bool = False) -> Path:
    """Go on with the study in `directory` (after a kill, or to run more trials). A `worker`
    joins the study of the process that started it."""
    directory = paths.resolved_for(directory, "--resume")
    if not (directory / BASE).is_file():
        raise UserError(
            "--resume", f"{directory} is not a tune directory (no {BASE})", "check the path"
        )
    if worker:
        _die_with_parent()
    else:
        runlock.acquire(directory, "--resume", "tuning")  # no other tune process runs it
    if trials is not None:
        config = load_config(directory / BASE)
        assert config.search is not None
        search = config.search.model_copy(update={"trials": trials})
        updated = config.model_copy(update={"search": search})
        rundir.write_text(directory / BASE, dump_config(updated))
    return run(directory, jobs, fail_running=not worker, worker=worker)


def run(directory: Path, jobs: int, fail_running: bool = False, worker: bool = False) -> Path:
    """Trials in this process (and `jobs - 1` workers) until the study has enough;
    `fail_running`: trials left running by a killed tune are rerun now (a local study only)."""
    config = load_config(directory / BASE)
    search = config.search
    assert search is not None
    study = open_study(directory, config, seed=config.seed + os.getpid() if worker else None)
    study.set_user_attr("metric", search.metric)
    if fail_running and search.storage is None:
        for number in fail_interrupted(study):
            print(f"trial {number} was interrupted: it runs again", file=sys.stderr)
    workers = [_worker(directory) for _ in range(max(jobs, 1) - 1)]
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(
        f"tune directory [bold]{shown(directory)}[/]: {search.trials} trials of "
        f"{search.sampler} sampling, {search.pruner} pruning, {search.metric}"
    )
    try:
        _optimize(study, directory, config, console)
    finally:
        for process in workers:
            process.wait()
        report.write_all(directory, study, search.space)
    _summary(study, directory, console)
    return directory


FAILURES_IN_A_ROW = 3  # trials that fail one after another: the config, not the values


def _optimize(study: Any, directory: Path, config: Config, console: Console) -> None:
    """Trials until enough finished. A trial that fails (a NaN loss at a wild rate, bad data)
    is recorded and the study goes on; three in a row stop it with the last one's reason. A
    trial cut by Ctrl-C is queued to run again on `--resume`."""
    import optuna
    from optuna.trial import TrialState

    search = config.search
    assert search is not None
    counted = optuna.study.MaxTrialsCallback(
        search.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)
    )
    failures: list[Any] = []

    def objective(trial: Any) -> float:
        return run_trial(trial, directory, config)

    def told(study: Any, trial: Any) -> None:
        _line(console, study, trial, search.trials, search.space)
        report.write_trials(directory, study, search.space)
        failures[:] = [*failures, trial] if trial.state == TrialState.FAIL else []
        if len(failures) >= FAILURES_IN_A_ROW:
            study.stop()

    if finished_count(study) >= search.trials:
        return
    try:
        with track.parent_run(config, directory.name, directory):  # trials nest under it
            study.optimize(objective, callbacks=[counted, told], catch=(UserError, TrainingFailed))
    except KeyboardInterrupt:
        requeue_interrupted(study)
        raise Interrupted(directory, "tune") from None
    if len(failures) >= FAILURES_IN_A_ROW:
        reason = failures[-1].user_attrs.get("error", "see its run directory")
        raise UserError(
            "search",
            f"{FAILURES_IN_A_ROW} trials failed in a row; the last: {reason}",
            f"see trials.csv and the trials' run directories in {directory}",
        )


def _line(console: Console, study: Any, trial: Any, total: int, space: Any) -> None:
    done = finished_count(study)
    used = shown_values(chosen(trial.params, space), space)
    values = ", ".join(f"{key} {_compact(value)}" for key, value in used.items())
    if trial.state.name == "COMPLETE":
        outcome = f"{trial.value:.4f}"
    elif trial.state.name == "PRUNED":
        outcome = f"pruned at epoch {trial.last_step}"
    else:
        outcome = f"failed: {trial.user_attrs.get('error', 'see its run directory')}"
    best = report.best_trial(study)
    tail = f"; best {best.value:.4f} (trial {best.number})" if best is not None else ""
    console.print(f"trial {trial.number} ({done}/{total}): {values} -> {outcome}{tail}")


def _compact(value: Any) -> str:
    """A value on one line: a mapping as {key: value}."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {item}" for key, item in value.items()) + "}"
    return str(value)


def _summary(study: Any, directory: Path, console: Console) -> None:
    best = report.best_trial(study)
    if best is None:
        console.print("no trial completed; see trials.csv")
        return
    console.print(
        f"best: trial {best.number}, {best.value:.4f}; its config: {shown(directory / 'best.yaml')}"
    )


def _worker(directory: Path) -> subprocess.Popen[bytes]:
    """Another process on the same study (`tune --resume DIR --jobs 1`), its output in a log."""
    log = open(directory / f"worker-{time.time_ns()}.log", "wb")  # noqa: SIM115 - the child's
    command = [sys.executable, "-c", "from transferctl.cli import main; main()"]
    command += ["tune", "--resume", str(directory), "--jobs", "1", "--worker"]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _die_with_parent() -> None:
    """A worker ends when the tune that started it does (Linux: PR_SET_PDEATHSIG), so that a
    killed tune leaves no trial running that `--resume` would take for an interrupted one."""
    import contextlib
    import ctypes
    import signal

    # elsewhere, the heartbeat's grace period finds its trials instead
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
