"""Finding earlier runs by name: `model.weights` or `distill.teacher: {run: NAME}`.

Reads only files (config.yaml, checkpoints/state.json, model.keras); never TensorFlow.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from transferctl.errors import UserError
from transferctl.rundir.layout import is_finished

WHERE = "model.weights"
_STAMP = re.compile(r"(?P<stamp>\d{8}-\d{6})(?:-(?P<count>\d+))?")


def run_name(run_dir: Path) -> str | None:
    """The `name` in a run's resolved config.yaml, or None when it has none or can't be read."""
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return str(saved["name"]) if isinstance(saved, dict) and saved.get("name") else None


def newest_finished_run(runs_dir: Path, name: str, where: str = WHERE) -> Path:
    """The newest finished run called `name` in `runs_dir` (by folder time stamp, then mtime).

    Example:
        source = newest_finished_run(Path("runs"), "digits-source")

    Raises:
        UserError: no finished run of that name (unfinished ones are named in the message).
    """
    candidates = []
    if runs_dir.is_dir():
        for folder in runs_dir.glob(f"{_glob_escape(name)}-*"):
            if folder.is_dir() and run_name(folder) == name:
                candidates.append(folder)
    finished = [folder for folder in candidates if is_finished(folder)]
    if not finished:
        unfinished = f" ({len(candidates)} unfinished)" if candidates else ""
        raise UserError(
            where,
            f"no finished run named {name!r} in {runs_dir.resolve()}{unfinished}",
            f"train it first (transferctl finetune with name: {name}), or check output.runs_dir",
        )
    newest = max(finished, key=lambda folder: _creation_order(folder, name))
    return newest.resolve()


def _creation_order(folder: Path, name: str) -> tuple[str, int, float]:
    """`<name>-<UTC timestamp>[-N]` sorts by the time stamp, then N (-10 after -9), then mtime."""
    found = _STAMP.fullmatch(folder.name[len(name) + 1 :])
    if found is None:
        return "", 0, folder.stat().st_mtime
    return found["stamp"], int(found["count"] or 1), folder.stat().st_mtime


def _glob_escape(text: str) -> str:
    return "".join(f"[{char}]" if char in "*?[]" else char for char in text)
