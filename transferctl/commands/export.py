"""`transferctl export RUN_DIR --format ...`: portable models, each checked against Keras.

One line per export on stdout: the format, the path, and how it compares with the Keras model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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

    export_run(request, on_result=lambda result: typer.echo(result.summary()))
