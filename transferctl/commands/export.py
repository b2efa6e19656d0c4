"""`transferctl export RUN_DIR --format ...`: portable models, each checked against Keras.

One line per export on stdout: the format, the path, and how it compares with the Keras model.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from transferctl.export import check_request


def run(run_dir: Path, formats: Sequence[str], quantize: str, out: Path | None) -> None:
    request = check_request(run_dir, formats, quantize, out)
    console = Console(stderr=True, soft_wrap=True)
    console.print(
        f"exporting {request.run_dir} as {', '.join(request.formats)} to {request.out_dir}",
        highlight=False,
    )

    from transferctl.export import export_run

    with _working(console, "converting and checking against the Keras model") as paused:

        def report(result: Any) -> None:
            with paused():  # the line on stdout, not on the spinner's line
                typer.echo(result.summary())

        export_run(request, on_result=report)


@contextlib.contextmanager
def _working(
    console: Console, text: str
) -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
    """A spinner on a terminal while the exports are written (tens of seconds, silent
    otherwise); yields what pauses it. It draws on its own copy of the terminal's descriptor:
    the converters point descriptor 2 elsewhere while they run, which would swallow it."""
    if not console.is_terminal:
        yield contextlib.nullcontext
        return
    with os.fdopen(os.dup(sys.stderr.fileno()), "w") as terminal:
        spinner = Console(file=terminal, force_terminal=True, highlight=False)
        with spinner.status(text) as status:

            @contextlib.contextmanager
            def paused() -> Iterator[None]:
                status.stop()
                try:
                    yield
                finally:
                    status.start()

            yield paused
