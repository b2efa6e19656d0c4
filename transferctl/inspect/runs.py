"""The runs in a folder (`transferctl runs`) and one run in full (`transferctl show`).

Reads what a run directory holds as text, as `compare` does (`inspect/compare.load_run`), so
neither command loads TensorFlow, and runs copied from another machine show as well.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferctl.errors import UserError
from transferctl.files import paths
from transferctl.inspect.compare import RunSummary, load_run
from transferctl.rundir import layout as rundir

# a run folder's name ends in the UTC time it started: <name>-YYYYMMDD-HHMMSS[-N]
_STARTED = re.compile(r"-(\d{8})-(\d{6})(?:-\d+)?$")


@dataclass
class Listed:
    """One row of `runs`: a run, or a folder that looks like one but cannot be read."""

    path: Path
    started: str
    run: RunSummary | None = None
    problem: str | None = None  # why the run could not be read

    @property
    def status(self) -> str:
        return self.run.status if self.run is not None else "damaged"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"path": str(self.path), "started": self.started}
        if self.run is not None:
            body.update(self.run.to_json())
            body["name"] = self.run.config.get("name")
        else:
            body.update(status="damaged", problem=self.problem)
        return body


def list_runs(folder: Path) -> list[Listed]:
    """Every run directory directly in `folder` (a folder with config.yaml), oldest first.

    Raises:
        UserError: `folder` is not a folder.
    """
    if not folder.is_dir():
        fix = "pass the folder that holds the runs (output.runs_dir, `runs` by default)"
        what = paths.missing(folder, "does not exist") if not folder.exists() else "is not a folder"
        raise UserError(str(folder), what, fix)
    rows = []
    for path in sorted(folder.iterdir()):
        if path.is_symlink() or not path.is_dir() or not (path / rundir.CONFIG).is_file():
            continue
        try:
            rows.append(Listed(path.resolve(), started(path), run=load_run(path)))
        except UserError as error:
            rows.append(Listed(path.resolve(), started(path), problem=str(error)))
    return sorted(rows, key=lambda row: (row.started, row.path.name))


def started(run_dir: Path) -> str:
    """When the run started, UTC: from its folder's name, else when config.yaml was written."""
    found = _STARTED.search(run_dir.name)
    if found is not None:
        try:
            stamp = dt.datetime.strptime(found[1] + found[2], "%Y%m%d%H%M%S")
            return stamp.strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            pass
    written = (run_dir / rundir.CONFIG).stat().st_mtime
    return dt.datetime.fromtimestamp(written, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def run_files(run_dir: Path) -> list[tuple[str, int]]:
    """The run's files and folders at its top level with their sizes in bytes (a folder: all
    it holds), in name order."""
    found = []
    for path in sorted(run_dir.iterdir()):
        if path.name.startswith("."):
            continue  # the lock file, temporary files
        if path.is_dir() and not path.is_symlink():
            size = sum(
                p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()
            )
        else:
            size = path.lstat().st_size
        found.append((path.name + ("/" if path.is_dir() else ""), size))
    return found
