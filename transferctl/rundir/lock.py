"""One trainer per run directory: an advisory lock, held for as long as training runs.

The lock is `flock` on a file in the folder (`.transferctl.lock`, holding the owner's PID for the
messages). The kernel drops it when the process ends, however it ends, so a lock left by a
killed trainer is no lock at all: the next `finetune --resume` simply takes it. A second trainer
on a held run, or `evaluate`/`export`/`predict` on a run still training, is told who holds it.
Where `fcntl` does not exist (Windows) there is no lock.

Example:
    with holding(run_dir, "--resume"):
        train(...)
    check_free(run_dir, "RUN_DIR")   # UserError "in use by PID 4242" while it trains
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from transferctl.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

F = TypeVar("F", bound=Callable[..., Any])

LOCK_FILE = ".transferctl.lock"
TRAINING = "a finetune is training it"

# folder (resolved) -> the open descriptor that holds its lock, in this process
_held: dict[Path, int] = {}


def acquire(folder: Path, where: str, activity: str = TRAINING) -> None:
    """Take the lock of `folder` for this process (again: a no-op), or raise `UserError`."""
    folder = folder.resolve()
    if fcntl is None or folder in _held:
        return
    path = folder / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise UserError(
            where,
            f"cannot create the lock file {path} ({error.strerror or error})",
            "check that you can write in the folder",
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = _read_pid(descriptor)
        os.close(descriptor)
        raise in_use(folder, where, pid, activity) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    _held[folder] = descriptor


def release(folder: Path) -> None:
    """Give back the lock of `folder` if this process holds it (the file stays)."""
    descriptor = _held.pop(folder.resolve(), None)
    if descriptor is not None:
        os.close(descriptor)  # the PID stays: it is read only while the lock is held


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Give back, at the end of the block, every lock taken inside it (e.g. by `rundir.create`)."""
    before = set(_held)
    try:
        yield
    finally:
        for taken in set(_held) - before:
            release(taken)


def releases_locks(function: F) -> F:
    """Decorate a function so that the locks it takes are given back when it returns."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with scope():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def holding(folder: Path, where: str, activity: str = TRAINING) -> Iterator[None]:
    """The lock of `folder` for the block (and any other lock taken inside it)."""
    with scope():
        acquire(folder, where, activity)
        yield


def holder(folder: Path) -> int | None:
    """The PID holding `folder`'s lock in another process (0 if it can't be read), or None."""
    folder = folder.resolve()
    path = folder / LOCK_FILE
    if fcntl is None or folder in _held or not path.is_file():
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_pid(descriptor)
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def check_free(folder: Path, where: str) -> None:
    """A `UserError` when another process is training in `folder`."""
    pid = holder(folder)
    if pid is not None:
        raise in_use(folder.resolve(), where, pid)


def in_use(folder: Path, where: str, pid: int, activity: str = TRAINING) -> UserError:
    by = f"PID {pid}" if pid else "another process"
    return UserError(
        where, f"{folder} is in use by {by} ({activity})", "wait for it to finish or stop it"
    )


def _read_pid(descriptor: int) -> int:
    try:
        text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
