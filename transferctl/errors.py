"""User-facing errors and the one place that maps failures to exit codes.

A `UserError` is a mistake the user can fix (config, data, paths, missing weights): it prints
one line, `error: <where>: <what was wrong>; <what to do>`, and exits 2, with no traceback
unless `--debug` or `TRANSFERCTL_DEBUG=1`. Anything else is a bug or an environment failure:
exit 1. Ctrl-C exits 130. `predict` exits 3 when it skipped files it could not read.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import reprlib
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_SKIPPED = 3  # predict: some files could not be read (each named on stderr) and were skipped
EXIT_INTERRUPTED = 130

# The longest value quoted in an error line, and the longest part of a line: a value the user
# gave (a YAML alias bomb, a path of 4,000 characters) is cut, never printed whole.
QUOTE_CHARS = 200
PART_CHARS = {"where": 400, "what": 2000, "fix": 600}
WORD_CHARS = 300  # longer than any sensible path


def shorten(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` cut to `limit` characters, the cut marked with an ellipsis and the full length."""
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 1, 0)]}… ({len(text):,} characters)"


def printable(text: str) -> str:
    """`text` with control characters (ESC, BEL, a newline, DEL, C1) written as escapes, so a
    name the user chose cannot move the cursor, ring or recolour the terminal, or break a line."""
    return _CONTROL.sub(lambda found: repr(found[0])[1:-1], text)


def shown(value: object) -> str:
    """A path or name for rich's console: control characters escaped, markup inert."""
    return printable(str(value)).replace("[", "\\[")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _readable(part: str, kind: str) -> str:
    """`part` with control characters escaped and every run of non-blank characters longer
    than `WORD_CHARS` cut (a value quoted whole by whoever raised), then cut to
    `PART_CHARS[kind]`."""
    part = printable(part)
    words = re.sub(
        rf"[^\s;,]{{{WORD_CHARS + 1},}}", lambda found: shorten(found[0], WORD_CHARS), part
    )
    return shorten(words, PART_CHARS[kind])


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)` for an error line, never expanding more than about `limit` characters.

    A plain `repr` of a list holding a million references to one long string is built whole
    before it could be cut; `reprlib` stops early at every level.

    Example:
        UserError("name", f"expected a plain file-name prefix; got {quote(name)}")
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{repr(value[:limit])}… ({len(value):,} characters)"
    short = reprlib.Repr()
    short.maxlevel = 4
    short.maxstring = limit
    short.maxother = limit
    short.maxlong = 40
    for attribute in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
        setattr(short, attribute, 12)
    text = short.repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (Keras and TensorFlow write pages), or its type."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class UserError(Exception):
    """A mistake in the user's input, reported as one line and exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, where: str, what: str, fix: str | None = None) -> None:
        self.where = where
        self.what = what
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        """`where: what; fix`, each part cut to a readable length (`PART_CHARS`)."""
        where, what = _readable(self.where, "where"), _readable(self.what, "what")
        return f"{where}: {what}; {_readable(self.fix, 'fix')}" if self.fix else f"{where}: {what}"


class ConfigErrors(UserError):
    """Several config mistakes found at once: one line each."""

    def __init__(self, errors: list[UserError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.where, first.what, first.fix)

    def lines(self) -> list[str]:
        return [error.line() for error in self.errors]


class Interrupted(Exception):
    """Ctrl-C during training: the last completed epoch's checkpoint is kept; exit 130."""

    def __init__(self, run_dir: object, command: str = "finetune") -> None:
        self.run_dir = run_dir
        super().__init__(
            f"interrupted; the checkpoint of the last completed epoch is kept in {run_dir}; "
            f"resume with: transferctl {command} --resume {run_dir}"
        )


class TrainingFailed(Exception):
    """Training could not go on (for example a NaN loss); exit 1, the run directory is kept."""


def debug_enabled() -> bool:
    return os.environ.get("TRANSFERCTL_DEBUG", "") not in ("", "0", "false")


def print_error(line: str) -> None:
    print(f"error: {line}", file=sys.stderr, flush=True)


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(command: F) -> F:
    """Wrap a CLI command so every failure ends in the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except ConfigErrors as error:
            _maybe_traceback()
            for line in error.lines():
                print_error(line)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except UserError as error:
            _maybe_traceback()
            print_error(error.line())
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except Interrupted as error:
            print_error(str(error))
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except TrainingFailed as error:
            _maybe_traceback()
            print_error(str(error))
            raise typer.Exit(EXIT_FAILURE) from None
        except Exception as error:  # noqa: BLE001 - the last line of defence
            if _is_link_loop(error):
                _maybe_traceback()
                print_error(_link_loop_line(error))
                raise typer.Exit(EXIT_BAD_INPUT) from None
            if debug_enabled():
                traceback.print_exc()
            print_error(
                f"unexpected failure: {type(error).__name__}: {error}; "
                "rerun with --debug for the traceback and report it"
            )
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper  # type: ignore[return-value]


def _is_link_loop(error: Exception) -> bool:
    """A symbolic link loop met anywhere (`Path.resolve` raises RuntimeError, `open` OSError
    ELOOP): bad input, whichever path the user named it through."""
    if isinstance(error, OSError):
        return error.errno == errno.ELOOP
    return isinstance(error, RuntimeError) and str(error).startswith("Symlink loop")


def _link_loop_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename:
        where = str(error.filename)
    else:
        where = str(error).removeprefix("Symlink loop from ").strip("'")
    return UserError(
        where,
        "a symbolic link loop (a link that leads back to itself)",
        "point the link at a real file or folder, or remove it",
    ).line()


def _maybe_traceback() -> None:
    if debug_enabled():
        traceback.print_exc()
