"""One run, one directory: created once, never overwritten, every file written atomically.

Layout (docs/run-directory.md): config.yaml, env.json, labels.txt, history.csv, metrics.json,
model.keras, checkpoints/, tensorboard/. Writes go to a temporary file in the same folder, are
fsynced and renamed over the target, so a kill at any moment leaves the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from transferctl import files
from transferctl.errors import UserError
from transferctl.files import paths
from transferctl.rundir import lock as runlock

CONFIG = "config.yaml"
ENV = "env.json"
LABELS = "labels.txt"
HISTORY = "history.csv"
METRICS = "metrics.json"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
BAD_FILES = "bad_files.txt"
CURVES = "curves.png"
RECONSTRUCTIONS = "reconstructions.png"  # a pretrain run's inputs above their reconstructions
STATE = "state.json"  # inside checkpoints/: the training state, `finished` among it
KEPT_WEIGHTS_PREFIX = "kept-phase-"  # inside checkpoints/: the kept model (train/kept.py)
EVAL = "eval"
EXPORT = "export"

FINETUNE = "finetune"
PRETRAIN = "pretrain"
KINDS = (FINETUNE, PRETRAIN)  # env.json `kind`: what trained the run (runs older than it: finetune)


SMALL_JSON_BYTES = 1 << 20  # state.json, env.json


def is_finished(run_dir: Path) -> bool:
    """A run whose training finished: its checkpoints/state.json says so and model.keras exists.

    The one definition of a finished run; reads two small files, never TensorFlow.
    """
    state = run_dir / CHECKPOINTS / STATE
    if not (run_dir / MODEL).is_file() or not state.is_file():
        return False
    try:
        return files.read_json(state, limit=SMALL_JSON_BYTES).get("finished") is True
    except (OSError, ValueError, AttributeError):
        return False


def run_kind(run_dir: Path) -> str:
    """`finetune` or `pretrain`, as the run's env.json says; a run without a kind is a finetune
    run (env.json had none before pretrain existed); `unknown` when env.json can't be read."""
    try:
        environment = files.read_json(run_dir / ENV, limit=SMALL_JSON_BYTES)
    except (OSError, ValueError):
        return "unknown"
    if not isinstance(environment, dict):
        return "unknown"
    return str(environment.get("kind", FINETUNE))


def require_kind(run_dir: Path, kind: str, where: str, instead: str) -> None:
    """Refuse a run of another kind in one line: `where`: the run is a `kind` run; `instead`.

    A run whose env.json can't be read (`unknown`) is not refused here: the checks of its
    files say what is wrong with it, and runs copied without env.json keep working.

    Example:
        require_kind(run_dir, FINETUNE, "RUN_DIR", "evaluate a finetune run trained from it")
    """
    found = run_kind(run_dir)
    if found not in (kind, "unknown"):
        raise UserError(where, f"{run_dir} is a {found} run, not a {kind} run", instead)


def check_writable(folder: Path, where: str = "output.runs_dir") -> None:
    """Fail before any work when `folder` can't be written (read-only, a file in the way).

    Args:
        folder: where results will go; it may not exist yet.
        where: the config field or option that named it, for the error.
    """
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(where, f"{probe} is a file, not a folder", "pick a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(where, f"cannot write in {probe}", "pick a folder you can write to")


def check_available(explicit: Path) -> None:
    """`--run-dir` must be new or empty: runs are never overwritten."""
    path = paths.resolved_for(explicit, "--run-dir")
    if path.exists() and (
        not path.is_dir() or any(entry.name != runlock.LOCK_FILE for entry in path.iterdir())
    ):
        raise UserError(
            "--run-dir",
            f"{path} already exists and is not empty; runs are never overwritten",
            "pass a new or empty folder",
        )


def create(runs_dir: Path, name: str, explicit: Path | None = None) -> Path:
    """A new run directory: `runs_dir/<name>-<UTC timestamp>`, or `explicit` if new or empty.

    The process holds the run's lock (`runlock`) from then on: until it ends, or until the
    caller's `runlock.scope()` closes.
    """
    if explicit is not None:
        check_available(explicit)
        path = paths.resolved_for(explicit, "--run-dir")
        path.mkdir(parents=True, exist_ok=True)
        runlock.acquire(path, "--run-dir")
        check_available(path)  # another process may have started in it meanwhile
        return path
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"-{attempt + 1}"
        path = runs_dir / f"{name}-{stamp}{suffix}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        runlock.acquire(path, "output.runs_dir")
        return path.resolve()
    raise UserError("output.runs_dir", f"too many runs named {name}-{stamp}", "wait a second")


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `target`; renamed over it when the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        if temporary.is_file():
            # mkstemp creates 0600 files; results are meant to be shared like any other file
            os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
        _fsync_dir(target.parent)
    finally:
        if temporary.exists():
            temporary.unlink()


def remove_leftovers(folder: Path) -> int:
    """Delete temporary files that a killed writer left behind (never a finished file)."""
    removed = 0
    for path in folder.rglob(".*.tmp*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(target: Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
