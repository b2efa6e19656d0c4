"""This process as one worker of a multi-worker run: where it writes, and what it does when a
peer fails. `entry` wraps the training stages' entries (`finetune`, `pretrain`, their `resume`).

Without multi-worker training (no TF_CONFIG; `runtime.distribution` none or mirrored; auto with a
one-worker TF_CONFIG) they run unchanged. Under it, on every worker:

1. Join the cluster first (`cluster.make_strategy`: every peer present, the wait bounded by
   TRANSFERCTL_PEER_TIMEOUT), before anything of `--run-dir` is read: the chief writes nothing
   while a peer is missing, so every worker then reads the same last checkpoint.
2. The chief trains in `--run-dir` itself. Another worker trains in a private folder,
   `$TMPDIR/transferctl-worker-<run>-<task>/run`, seeded with a copy of what resuming needs
   from `--run-dir` (a volume every worker mounts at the same path). Every worker's temporary
   files go to `.../tmp` beside it; the folder is removed when the worker ends: success,
   error, SIGTERM, a restart, or (after a SIGKILL) at its next start.
3. The workers check that they resume from the same point (phase, epoch, step); they differ
   when `--run-dir` is not one shared folder (exit 2).
4. A peer's failure aborts the collective ops of the others (UnavailableError within seconds,
   measured). The worker then runs its own command line again (`os.execv`): that resumes the
   unfinished `--run-dir` from its last checkpoint once every peer, the failed one restarted
   too, has joined. At most `MAX_RESTARTS` times in a row without a new checkpoint.
5. A last barrier after the run: a chief lost before it marked the run finished makes the others
   restart and finish it with the chief's replacement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from transferctl.distribute import cluster as cluster_module
from transferctl.distribute.cluster import Cluster
from transferctl.errors import UserError
from transferctl.rundir import layout as rundir
from transferctl.rundir import lock as runlock
from transferctl.runtime import native

F = TypeVar("F", bound=Callable[..., Any])

RESTARTS_VARIABLE = "TRANSFERCTL_WORKER_RESTARTS"  # set by a restart: "count:resume point"
MAX_RESTARTS = 5
SEEDED = (rundir.CONFIG, rundir.LABELS, rundir.ENV, rundir.HISTORY, rundir.BAD_FILES)
PEER_FAILURES = ("UnavailableError", "AbortedError", "CancelledError", "DeadlineExceededError")


def entry(function: F) -> F:
    """Run `function` (a pipeline entry with `run_dir` and `config` parameters) as this
    process's part of a multi-worker run when TF_CONFIG and the config ask for one."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        run_dir = bound.arguments.get("run_dir")
        joining = joins(bound.arguments.get("config"), run_dir)
        if joining is None:
            return function(*args, **kwargs)
        assert run_dir is not None
        return _as_worker(function, bound, joining, Path(run_dir).resolve())

    return wrapper  # type: ignore[return-value]


def joins(config: Any, run_dir: Path | None) -> Cluster | None:
    """This process's cluster when it trains as one of several workers, else None.

    Raises:
        UserError: a bad TF_CONFIG or TRANSFERCTL_PEER_TIMEOUT; no `--run-dir`.
    """
    found = cluster_module.from_env()
    if found is None:
        return None
    if config is None and run_dir is not None and (Path(run_dir) / rundir.CONFIG).is_file():
        from transferctl.config.loader import load_config

        config = load_config(Path(run_dir) / rundir.CONFIG)
    from transferctl.distribute import strategy as distribution

    setting = "auto" if config is None else config.runtime.distribution
    if distribution.decide(setting, 0, 1, found.num_workers).strategy != "multi_worker":
        return None
    cluster_module.peer_timeout()  # a bad value fails before TensorFlow starts
    if run_dir is None:
        raise UserError(
            "--run-dir",
            "multi-worker training needs --run-dir: the same folder on every worker, on a "
            "volume they all share (the chief writes it; the others resume from it)",
            "pass --run-dir DIR with the same DIR on every worker",
        )
    if _finished(Path(run_dir)):
        return None  # nothing to train: no peer needed
    return found


def _finished(run_dir: Path) -> bool:
    from transferctl.train import checkpoint

    if not (run_dir / rundir.CHECKPOINTS).is_dir():
        return False
    return checkpoint.is_finished(run_dir, checkpoint.load_state(run_dir / rundir.CHECKPOINTS))


def _as_worker(function: Callable[..., Any], bound: Any, cluster: Cluster, run_dir: Path) -> Any:
    own = own_folder(run_dir, cluster)
    try:
        with _temporary_files_in(own / "tmp"), contextlib.ExitStack() as stack:
            strategy = cluster_module.make_strategy(cluster)
            stack.enter_context(_sigterm_exits())  # after TensorFlow took SIGTERM over
            where = run_dir if cluster.is_chief else seed(run_dir, own / "run")
            cluster_module.agree(
                strategy, resume_point(where), "where training resumes (phase, epoch, step)"
            )
            bound.arguments["run_dir"] = where
            if not cluster.is_chief and "console" in bound.arguments:
                bound.arguments["console"] = None  # the chief alone shows progress
            result = function(*bound.args, **bound.kwargs)
            cluster_module.barrier(strategy)
    except BaseException as error:
        _remove(own)
        if peer_failure(error):
            restart(cluster, run_dir, error)
        raise
    _remove(own)
    return result if cluster.is_chief else dataclasses.replace(result, run_dir=run_dir)


def own_folder(run_dir: Path, cluster: Cluster) -> Path:
    """This worker's private folder, `$TMPDIR/transferctl-worker-<run>-<task>`: `tmp/` for every
    temporary file of the process (TensorFlow's autograph sources among them), `run/` where a
    worker other than the chief writes its run. One name per run and task, so that a folder
    left by a SIGKILL is found and removed at the next start.

    Raises:
        UserError: a process on this machine still trains in it (the same task started twice).
    """
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / (
        f"transferctl-worker-{digest}-{cluster.task_type}-{cluster.task_index}"
    )
    if folder.exists():
        pid = runlock.holder(folder)
        if pid is not None:
            raise UserError(
                "TF_CONFIG",
                f"{cluster.name()} of {run_dir} already runs on this machine (PID {pid})",
                "give every worker its own task.index",
            )
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    runlock.acquire(folder, "TF_CONFIG", "a worker of a multi-worker run")
    return folder


def _remove(folder: Path) -> None:
    runlock.release(folder)
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _temporary_files_in(folder: Path) -> Iterator[None]:
    """Python's temporary files (tempfile) go to `folder` in the block."""
    folder.mkdir(mode=0o700, exist_ok=True)
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before


def seed(run_dir: Path, private: Path) -> Path:
    """`private`, holding a copy of what resuming `run_dir` needs (nothing for a new run)."""
    private.mkdir(mode=0o700)
    if not (run_dir / rundir.CONFIG).is_file():
        return private
    for name in SEEDED:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, private / name)
    checkpoints = run_dir / rundir.CHECKPOINTS
    if checkpoints.is_dir():
        (private / rundir.CHECKPOINTS).mkdir()
        for path in checkpoints.iterdir():
            if path.is_file() and not path.name.startswith("."):
                shutil.copyfile(path, private / rundir.CHECKPOINTS / path.name)
    return private


def resume_point(run_dir: Path) -> tuple[int, int, int]:
    """(phase, epoch, step) where training in `run_dir` resumes; (0, 0, 0) from the start."""
    from transferctl.train import checkpoint

    folder = run_dir / rundir.CHECKPOINTS
    state = checkpoint.load_state(folder) if folder.is_dir() else None
    if state is None or state.weights is None:
        return (0, 0, 0)
    return (state.phase_index, state.epochs_done, state.steps_done)


def peer_failure(error: BaseException | None) -> bool:
    """A collective op aborted because a peer went away (checked along the exception chain)."""
    for _ in range(10):
        if error is None or isinstance(error, UserError):
            return False
        kind = type(error)
        if kind.__name__ in PEER_FAILURES and kind.__module__.startswith("tensorflow"):
            return True
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return False


def restart(cluster: Cluster, run_dir: Path, error: BaseException) -> None:
    """Run this process's command line again in its place (returns only when the restarts in
    a row without progress are used up: the caller then re-raises `error`)."""
    point = f"{resume_point(run_dir)}"
    count, _, before = os.environ.get(RESTARTS_VARIABLE, "").partition(":")
    count = str(int(count) + 1 if count.isdigit() and before == point else 1)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    telling = [line for line in lines if re.search(r"abort|unhealthy|connect|closed", line)]
    first = (telling or lines)[0][:200]
    if int(count) > MAX_RESTARTS:
        print(
            f"error: {cluster.name()}: peers failed {MAX_RESTARTS} times in a row without a "
            f"new checkpoint; giving up ({first})",
            file=sys.stderr,
            flush=True,
        )
        return
    print(
        f"warning: {cluster.name()}: a peer failed ({type(error).__name__}: {first}); "
        f"restarting to resume {run_dir} from its last checkpoint ({count} of {MAX_RESTARTS})",
        file=sys.stderr,
        flush=True,
    )
    os.environ[RESTARTS_VARIABLE] = f"{count}:{point}"
    sys.stdout.flush()
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    native.before_exec()
    os.execv(sys.executable, [sys.executable, *argv[1:]])


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM as SystemExit(143) in the block, so that clean-ups run. TensorFlow's
    coordination service installs its own SIGTERM handler (a preemption notice) when the
    cluster starts, which leaves the process running (measured): this one replaces it."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
