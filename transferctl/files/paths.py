"""Paths the user names, resolved once: a symbolic link loop is bad input, never a crash.

`Path.resolve()` raises `RuntimeError("Symlink loop from ...")` (an `OSError` with `ELOOP` on
newer Pythons) when a link leads back to itself, and `exists()` quietly says False. Every path
from a config field or an option goes through `resolved`, and every "not found" line says
whether the path is really missing or a loop (`missing`).

Example:
    path = resolved(Path(value))       # LinkLoop (a ValueError) for a loop
    raise UserError("--data", f"{path} {missing(path)}", "check the path")
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from transferctl.errors import UserError

LOOP = "is a symbolic link loop (a link that leads back to itself)"
LOOP_FIX = "point the link at a real file or folder, or remove it"


class LinkLoop(ValueError):
    """A path that cannot be resolved because its links go round in a circle."""

    def __init__(self, path: object) -> None:
        super().__init__(f"{path} {LOOP}; {LOOP_FIX}")
        self.path = path


def is_loop_error(error: BaseException) -> bool:
    """Whether `error` is what Python raises for a symbolic link loop."""
    if isinstance(error, OSError):
        return error.errno == errno.ELOOP
    return isinstance(error, RuntimeError) and str(error).startswith("Symlink loop")


def resolved(path: Path) -> Path:
    """`path` absolute, `~` expanded and every link followed.

    Raises:
        LinkLoop: the path (or a folder above it) is a symbolic link loop.
    """
    try:
        return path.expanduser().resolve()
    except (RuntimeError, OSError) as error:
        if is_loop_error(error):
            raise LinkLoop(path) from None
        raise


def resolved_for(path: Path, where: str) -> Path:
    """`resolved(path)`, a loop reported as a `UserError` naming `where` (an option, a field)."""
    try:
        return resolved(path)
    except LinkLoop:
        raise UserError(where, f"{path} {LOOP}", LOOP_FIX) from None


def missing(path: Path, absent: str = "not found") -> str:
    """Why `path` cannot be used, for a path that `exists()` says is not there: `absent`, or
    that it is a link loop."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return LOOP
    return absent
