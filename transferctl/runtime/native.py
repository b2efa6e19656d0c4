"""What native code prints straight to file descriptors 1 and 2, kept off the terminal.

TensorFlow's C++ logs, libjpeg's decoder warnings, the TFLite converter's MLIR passes and the
multi-worker coordination agent write to the process's file descriptors, below Python's
`sys.stderr`, so no Python filter sees them. `native_output` points the descriptors elsewhere
for the length of a block and decides what comes back: nothing, the lines a filter keeps, or
everything when the block failed (a real error keeps its explanation). `--debug` (or
`TRANSFERCTL_DEBUG=1`) lets everything through.

Example:
    with native_output(streams=(1, 2), replay="on failure"):
        converter.convert()
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO, Literal

from transferctl.errors import debug_enabled

STDOUT = 1
STDERR = 2

# TensorFlow's native start-up lines: absl-formatted logs and the CPU-instructions notice.
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} \d\d:\d\d:\d\d"
    r"|To enable the following instructions|.*rebuild TensorFlow with the appropriate compiler)"
)

Replay = Literal["never", "always", "on failure"]


@contextlib.contextmanager
def native_output(
    *,
    streams: tuple[int, ...] = (STDERR,),
    replay: Replay = "never",
    keep: Callable[[str], bool] = lambda line: True,
) -> Iterator[None]:
    """Send what native code writes to `streams` elsewhere while the block runs.

    Args:
        streams: the file descriptors to redirect (2 for stderr, 1 for stdout).
        replay: when the captured lines are printed on stderr afterwards: `never` (they go
            to /dev/null), `always`, or `on failure` (the block raised).
        keep: which captured lines to print when they are replayed.
    """
    if debug_enabled():
        yield
        return
    _flush()
    saved = {descriptor: os.dup(descriptor) for descriptor in streams}
    with _sink(capture=replay != "never") as sink:
        for descriptor in saved:
            os.dup2(sink.fileno(), descriptor)
        failed = True
        try:
            yield
            failed = False
        finally:
            _flush()
            for descriptor, original in saved.items():
                os.dup2(original, descriptor)
                os.close(original)
            if replay == "always" or (replay == "on failure" and failed):
                sink.seek(0)
                lines = sink.read().decode("utf-8", "replace").splitlines()
                text = "\n".join(line for line in lines if keep(line)).strip()
                if text:
                    print(text, file=sys.stderr)


def quiet_native_stderr() -> contextlib.AbstractContextManager[None]:
    """TensorFlow's native log lines on stderr dropped; every other line printed after."""
    return native_output(replay="always", keep=lambda line: not _TF_NOISE.match(line))


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """For a whole command (a training run): TensorFlow's native log lines are dropped as they
    come, and every other native line passes at once, so nothing is held back from the
    progress display. Descriptor 2 goes into a pipe that a thread reads line by line; Python's
    own `sys.stderr`, where it is descriptor 2, moves to a copy of the real one, so rich's
    output never takes the detour. `--debug` lets everything through."""
    if debug_enabled():
        yield
        return
    _flush()
    original = os.dup(STDERR)
    read_end, write_end = os.pipe()
    swapped = sys.stderr if _is_descriptor(sys.stderr, STDERR) else None
    if swapped is not None:
        sys.stderr = os.fdopen(os.dup(original), "w", buffering=1, encoding=swapped.encoding)
    os.dup2(write_end, STDERR)
    os.close(write_end)
    forward = threading.Thread(target=_forward, args=(read_end, original), daemon=True)
    forward.start()
    _FILTERED.append(original)
    try:
        yield
    finally:
        _FILTERED.remove(original)
        _flush()
        # the pipe's last writer closes: the thread reads its end
        _point_stderr_at(None if _DROPPED else original)
        forward.join(timeout=5)
        if swapped is not None and not _DROPPED:  # else Python's stderr stays the real one
            sys.stderr.close()
            sys.stderr = swapped
        os.close(original)


# the real descriptor 2 of each `native_stderr_filtered` block open now
_FILTERED: list[int] = []
_DROPPED: list[bool] = []  # native stderr dropped for good: stays dropped after a filter ends


def _point_stderr_at(descriptor: int | None) -> None:
    """Descriptor 2 made a copy of `descriptor`, or of /dev/null when None."""
    if descriptor is not None:
        os.dup2(descriptor, STDERR)
        return
    nowhere = os.open(os.devnull, os.O_WRONLY)
    os.dup2(nowhere, STDERR)
    os.close(nowhere)


def before_exec() -> None:
    """The real stderr back on descriptor 2 before the process replaces itself (`os.execv`):
    the filter's thread does not survive the exec, and its pipe would then have no reader."""
    sys.stderr.flush()
    if _FILTERED:
        os.dup2(_FILTERED[0], STDERR)


def _forward(read_end: int, target: int) -> None:
    with os.fdopen(read_end, "rb") as pipe:
        for raw in pipe:
            if not _TF_NOISE.match(raw.decode("utf-8", "replace")):
                os.write(target, raw)


def _is_descriptor(stream: object, descriptor: int) -> bool:
    try:
        return stream.fileno() == descriptor  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False  # a test runner's buffer, or a closed stream


def native_stderr_dropped() -> contextlib.AbstractContextManager[None]:
    """Everything native code prints on stderr dropped (the caller reports the outcome)."""
    return native_output(replay="never")


def native_stderr_dropped_for_good() -> None:
    """File descriptor 2 to /dev/null for the rest of the process; Python's `sys.stderr` (the
    error line) keeps writing to where descriptor 2 went before. For a process about to exit
    whose native libraries still complain in their exit handlers."""
    if debug_enabled():
        return
    sys.stderr.flush()
    _DROPPED.append(True)
    if not _FILTERED:  # under a filter, Python's stderr already writes to the real one
        sys.stderr = os.fdopen(os.dup(STDERR), "w", buffering=1, encoding=sys.stderr.encoding)
    _point_stderr_at(None)


def _sink(*, capture: bool) -> IO[bytes]:
    """A temporary file to read back, or /dev/null."""
    return tempfile.TemporaryFile() if capture else open(os.devnull, "wb")  # noqa: SIM115


def _flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
