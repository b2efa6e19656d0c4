"""Finding earlier runs by name: `model.weights` or `distill.teacher: {run: NAME}`.

Reads only files (config.yaml, checkpoints/state.json, model.keras); never TensorFlow.
"""

from __future__ import annotations

import re
from pathlib import Path

from transferctl.errors import UserError
from transferctl.files import bounded_yaml
from transferctl.rundir.layout import FINETUNE, is_finished, run_kind

WHERE = "model.weights"
_STAMP = re.compile(r"(?P<stamp>\d{8}-\d{6})(?:-(?P<count>\d+))?")


def run_name(run_dir: Path) -> str | None:
    """The `name` in a run's resolved config.yaml, or None when it has none or can't be read
    (read bounded: a FIFO, a huge file or an alias bomb there is skipped, not waited on)."""
    try:
        saved = bounded_yaml.load_file(run_dir / "config.yaml")
    except (UserError, OSError, ValueError):
        return None
    return str(saved["name"]) if isinstance(saved, dict) and saved.get("name") else None


def newest_finished_run(
    runs_dir: Path, name: str, where: str = WHERE, kind: str | None = None
) -> Path:
    """The newest finished run called `name` in `runs_dir` (by folder time stamp, then mtime),
    of `kind` (finetune | pretrain) when given.

    pretrain and finetune runs of one config share its name: without a `kind`, finished runs
    of both kinds under the name are an error naming the newest of each, never a guess.

    Example:
        source = newest_finished_run(Path("runs"), "digits-source")
        encoder = newest_finished_run(Path("runs"), "digits", kind="pretrain")

    Raises:
        UserError: no finished run of that name (and kind; unfinished ones are counted in the
            message), or both kinds and no `kind`.
    """
    candidates = []
    if runs_dir.is_dir():
        for folder in runs_dir.glob(f"{_glob_escape(name)}-*"):
            if folder.is_dir() and run_name(folder) == name:
                candidates.append(folder)
    finished = [folder for folder in candidates if is_finished(folder)]
    # a run whose env.json can't be read (copied without it) counts as finetune, as one
    # without a recorded kind does
    kinds = {folder: run_kind(folder).replace("unknown", FINETUNE) for folder in finished}
    if kind is not None:
        finished = [folder for folder in finished if kinds[folder] == kind]
    if not finished:
        unfinished = f" ({len(candidates)} unfinished)" if candidates else ""
        of_kind = f" {kind}" if kind is not None else ""
        raise UserError(
            where,
            f"no finished{of_kind} run named {name!r} in {runs_dir.resolve()}{unfinished}",
            f"train it first (transferctl {kind or 'finetune'} with name: {name}), or check "
            "output.runs_dir",
        )
    newest = {
        found: max(
            (folder for folder in finished if kinds[folder] == found),
            key=lambda folder: _creation_order(folder, name),
        )
        for found in sorted({kinds[folder] for folder in finished})
    }
    if len(newest) > 1:
        named = "; ".join(f"{found}: {folder.resolve()}" for found, folder in newest.items())
        raise UserError(
            where,
            f"finished runs of {len(newest)} kinds are named {name!r} (newest {named})",
            f"say which: {{run: {name}, kind: finetune}} or {{run: {name}, kind: pretrain}}, "
            "or give the run directory",
        )
    return next(iter(newest.values())).resolve()


def _creation_order(folder: Path, name: str) -> tuple[str, int, float]:
    """`<name>-<UTC timestamp>[-N]` sorts by the time stamp, then N (-10 after -9), then mtime."""
    found = _STAMP.fullmatch(folder.name[len(name) + 1 :])
    if found is None:
        return "", 0, folder.stat().st_mtime
    return found["stamp"], int(found["count"] or 1), folder.stat().st_mtime


def _glob_escape(text: str) -> str:
    return "".join(f"[{char}]" if char in "*?[]" else char for char in text)
