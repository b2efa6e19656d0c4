"""`transferctl tune CONFIG` / `tune --resume DIR`: an Optuna study whose trials are runs; the
tune directory is the last line on stdout."""

from __future__ import annotations

from pathlib import Path

import typer

from transferctl.errors import UserError


def run(
    config_path: Path | None,
    overrides: list[str],
    trials: int | None,
    jobs: int,
    directory: Path | None,
    resume: Path | None,
    worker: bool = False,
) -> None:
    if trials is not None and trials < 1:
        raise UserError("--trials", f"expected a whole number >= 1; got {trials}", "e.g. 20")
    if not 1 <= jobs <= 64:
        raise UserError("--jobs", f"expected 1 to 64 processes; got {jobs}", "e.g. --jobs 2")
    from transferctl.tune import run as tune

    if resume is not None:
        if config_path is not None or overrides or directory is not None:
            raise UserError(
                "--resume", "takes no config, --set or --dir", "the study's config is in it"
            )
        found = tune.resume(resume, trials, jobs, worker)
    elif config_path is None:
        raise UserError("CONFIG", "missing", "pass a config with a search: section, or --resume")
    else:
        found = tune.start(config_path, overrides, trials, jobs, directory)
    typer.echo(str(found))
