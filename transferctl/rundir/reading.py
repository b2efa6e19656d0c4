"""Reading a finished run: the checks every reader makes (evaluate, predict, export), its labels.

A reader refuses, in this order: a path that is not there, a file, a run another process holds
(its lock), a run of another kind (a pretrain run's model.keras is an encoder, not a
classifier), and a run missing a file it needs (an unfinished run: no model.keras yet).

Example:
    run = open_run(Path("runs/flowers-20261122-101500"), verb="evaluate")
    class_names = read_labels(run.labels)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transferctl import files
from transferctl.errors import UserError
from transferctl.files import paths
from transferctl.rundir import layout
from transferctl.rundir import lock as runlock

MADE_BY_FINETUNE = "pass a run directory made by `finetune`"


@dataclass(frozen=True)
class RunFiles:
    """The files of a finished run that evaluate, predict and export read."""

    path: Path
    config: Path
    labels: Path
    model: Path

    @classmethod
    def at(cls, path: Path) -> RunFiles:
        return cls(
            path=path,
            config=path / layout.CONFIG,
            labels=path / layout.LABELS,
            model=path / layout.MODEL,
        )

    def first_missing(self) -> Path | None:
        """The first of model.keras, config.yaml and labels.txt that is not a file, if any."""
        return next(
            (file for file in (self.model, self.config, self.labels) if not file.is_file()), None
        )


def find_run(
    path: Path,
    where: str,
    verb: str,
    *,
    fix: str = MADE_BY_FINETUNE,
    folder_fix: str = "pass the run folder",
) -> RunFiles:
    """The checks before a run's files: `path` is there, is a folder, is not held by another
    process, and is a finetune run; `verb` (e.g. `evaluate`) says what the user wanted."""
    if not path.exists():
        raise UserError(where, f"{path} {paths.missing(path)}", fix)
    if not path.is_dir():
        raise UserError(where, f"{path} is a file, not a run directory", folder_fix)
    runlock.check_free(path, where)
    require_finetune(path, where, verb)
    return RunFiles.at(path)


def require_finetune(path: Path, where: str, verb: str) -> None:
    """Refuse a run whose env.json names another kind (`layout.require_kind`)."""
    layout.require_kind(
        path,
        layout.FINETUNE,
        where,
        f"a {layout.PRETRAIN} run's {layout.MODEL} is its encoder: finetune from it "
        f"(model.weights: {path}), then {verb} that run",
    )


def open_run(path: Path, where: str = "RUN_DIR", verb: str = "evaluate") -> RunFiles:
    """A finished finetune run (config, labels and model present), or a `UserError` saying
    what it is instead."""
    run = find_run(path, where, verb)
    missing = run.first_missing()
    if missing == run.model:
        if run.config.is_file():
            raise UserError(
                where,
                f"{path} has no {layout.MODEL}: its training did not finish",
                f"finish it with `transferctl finetune --resume {path}`",
            )
        raise UserError(
            where,
            f"{path} is not a run directory (no {layout.MODEL}, no {layout.CONFIG})",
            MADE_BY_FINETUNE,
        )
    if missing is not None:
        raise UserError(where, f"{path} has no {missing.name}", MADE_BY_FINETUNE)
    return run


# labels.txt is read whole: 16 MiB holds a million class names of 16 characters
LABELS_MAX_BYTES = 16 * 2**20


def read_labels(path: Path, empty_fix: str = "write one class name per line") -> list[str]:
    """Class names, one per line, in index order; `empty_fix` says what to do about a file
    that names none."""
    try:
        text = files.read_regular(path, limit=LABELS_MAX_BYTES).decode("utf-8")
    except files.NotReadable as error:
        fix = "check the file"
        raise UserError(str(path), f"cannot read the labels ({error.reason})", fix) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(str(path), f"cannot read the labels ({error})", "check the file") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise UserError(str(path), "holds no class names", empty_fix)
    return labels
