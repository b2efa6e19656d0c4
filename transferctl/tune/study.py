"""A tune directory and its Optuna study: where things are, and how the study is opened.

    DIR/base.yaml     the resolved config the study searches around (search section included);
                      every trial is it with the trial's values applied; `tune --resume` reads it
    DIR/study.db      the Optuna study (SQLite), unless `search.storage` names a database
    DIR/trials/<n>/   trial n's run directory
    DIR/trials.csv    number, state, value, seconds, run dir, params (rewritten after each trial)
    DIR/best.yaml     the best trial's resolved config, reloadable by finetune
    DIR/tune.png      optimisation history and parameter importances

A killed trial: the study's storage runs a heartbeat for every running trial; one whose
heartbeat stopped (SIGKILL, a lost machine) is marked failed when the next trial starts, and
Optuna's `RetryFailedTrialCallback` queues its values again, so it is rerun once and counted
once. `MaxTrialsCallback` ends the study when `trials` trials completed or were pruned, however
many processes or machines share it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from transferctl.config.schema import Config
from transferctl.config.search import Search
from transferctl.errors import UserError
from transferctl.tune.space import grid_values

BASE = "base.yaml"
STUDY_DB = "study.db"
TRIALS = "trials"
TRIALS_CSV = "trials.csv"
BEST = "best.yaml"
PLOT = "tune.png"
STUDY_NAME = "transferctl"
HEARTBEAT_SECONDS = 5  # a running trial writes its heartbeat this often
GRACE_SECONDS = 20  # a trial silent this long is stale (killed): failed, then rerun
# completed trials the median pruner waits for: 2 (small studies prune too), a quarter of a
# larger study (a median of two trials prunes nearly everything below the luckier one)
STARTUP_TRIALS = 2
WARMUP_EPOCHS = 2  # no trial is pruned on its first run epoch: one epoch says little


def storage_url(directory: Path, search: Search) -> str:
    return search.storage or f"sqlite:///{(directory / STUDY_DB).resolve()}"


def open_study(directory: Path, config: Config, seed: int | None = None) -> Any:
    """The study of `directory` (created on the first call, loaded on later ones); `seed`:
    the sampler's (`config.seed` by default; each process of one study needs its own, or they
    all suggest the same values).

    Raises:
        UserError: the storage cannot be opened (a bad `search.storage` URL, a database down).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # tune says what happened, a line a trial
    # the heartbeat and its retry callback are marked experimental (since Optuna 2.8)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    search = config.search
    assert search is not None
    url = storage_url(directory, search)
    try:
        storage = optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            **{_retry_argument(): retry_callback()},
        )
        return optuna.create_study(
            storage=storage,
            study_name=STUDY_NAME,
            direction="maximize" if search.metric == "val_accuracy" else "minimize",
            sampler=_sampler(search, config.seed if seed is None else seed),
            pruner=_pruner(search, config),
            load_if_exists=True,
        )
    except (ImportError, ValueError, OSError, RuntimeError) as error:
        raise UserError(
            "search.storage",
            f"cannot open the study's storage {url} ({type(error).__name__}: {error})",
            "check the database URL (e.g. sqlite:///tune.db, postgresql://user@host/db)",
        ) from None


def retry_class() -> Any:
    """Optuna's callback that queues a stale trial's values again (renamed in Optuna 4.9)."""
    import optuna

    found = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    return found or optuna.storages.RetryFailedTrialCallback


def retry_callback() -> Any:
    return retry_class()(max_retry=2)


def _retry_argument() -> str:
    import optuna

    renamed = hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
    return "heartbeat_stale_trial_callback" if renamed else "failed_trial_callback"


def _sampler(search: Search, seed: int) -> Any:
    import optuna

    if search.sampler == "grid":
        return optuna.samplers.GridSampler(grid_values(search.space), seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, search.trials // 2 + 1))


def _pruner(search: Search, config: Config) -> Any:
    import optuna

    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "hyperband":
        epochs = sum(phase.epochs for phase in config.train.phases)
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.MedianPruner(
        n_startup_trials=max(STARTUP_TRIALS, search.trials // 4),
        n_warmup_steps=warmup_epochs(config),
    )


def warmup_epochs(config: Config) -> int:
    """Run epochs no trial is pruned in: the first phase of a multi-phase run (a frozen
    backbone's head says little about how the fine-tuning goes), else `WARMUP_EPOCHS`."""
    phases = config.train.phases
    return max(WARMUP_EPOCHS, phases[0].epochs + 1 if len(phases) > 1 else 0)


def finished_count(study: Any) -> int:
    """Trials that completed or were pruned: what `search.trials` counts."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def fail_interrupted(study: Any) -> list[int]:
    """Trials left running by a process that is gone, failed now (and queued again by the retry
    callback) instead of after the heartbeat's grace period: for `tune --resume` on a local
    study whose directory no live tune process holds. Their numbers."""
    from optuna.trial import TrialState

    storage = study._storage  # the RDBStorage `open_study` made (Optuna has no public handle)
    retry = retry_callback()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            failed.append(trial.number)
            retry(study, storage.get_trial(trial._trial_id))
    return failed


def requeue_interrupted(study: Any) -> None:
    """The trial Ctrl-C cut (Optuna marks it failed) queued to run again, like a killed one."""
    from optuna.trial import TrialState

    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if failed and failed[-1].user_attrs.get("error") == "interrupted (Ctrl-C)":
        retry_callback()(study, failed[-1])
