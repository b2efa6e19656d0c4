"""Runs side by side: the config keys that differ, and what each run reached.

Reads only what a run directory holds as text (config.yaml, metrics.json, history.csv,
checkpoints/state.json), so comparing never loads TensorFlow and works on runs copied from
another machine. A run that has not finished is still compared, with what it has so far.

Example:
    comparison = compare_runs([Path("runs/a-20250101-120000"), Path("runs/b-20250101-130000")])
    for key, values in comparison.differences.items():
        print(key, values)
    print([run.val.get("accuracy") for run in comparison.runs])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transferctl import files
from transferctl.config.loader import flatten
from transferctl.errors import UserError
from transferctl.files import bounded_yaml, paths
from transferctl.labels import HELD_OUT as SPLITS
from transferctl.rundir import layout as rundir
from transferctl.rundir.curves import Epoch, load_history

# Config keys that say where a run was written, not how it trained.
IGNORED_PREFIXES = ("output.",)
JSON_MAX_BYTES = 64 * 2**20  # metrics.json and state.json are kilobytes
STATE = Path(rundir.CHECKPOINTS) / rundir.STATE


@dataclass
class RunSummary:
    """What one run directory holds, as `compare` shows it.

    `val` and `test` hold `accuracy` and `loss` (empty for an unfinished run); `baselines` maps
    each baseline in metrics.json (e.g. `linear_probe`) to its `val` and `test` accuracy.
    """

    path: Path
    label: str
    finished: bool
    config: dict[str, Any]
    history: list[Epoch]
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    kind: str = rundir.FINETUNE  # env.json's (pretrain runs score the reconstruction: `mse`)
    kept: dict[str, Any] | None = None  # metrics.json's: the epoch model.keras holds

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def seconds(self) -> float:
        return sum(row.seconds or 0.0 for row in self.history)

    @property
    def status(self) -> str:
        return "finished" if self.finished else "unfinished"

    def last_val_accuracy(self) -> float | None:
        scored = [row.val_accuracy for row in self.history if row.val_accuracy is not None]
        return scored[-1] if scored else None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.label,
            "path": str(self.path),
            "kind": self.kind,
            "status": self.status,
            "kept": self.kept,
            "val": self.val,
            "test": self.test,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 3),
            "baselines": self.baselines,
            "last_val_accuracy": self.last_val_accuracy(),
        }


@dataclass
class Comparison:
    """The runs in the order given, and the config keys whose values differ between them.

    `differences` maps a dotted key (e.g. `train.phases.0.learning_rate`) to each run's value,
    in run order; None where a run's config lacks the key or holds null.
    """

    runs: list[RunSummary]
    differences: dict[str, list[Any]]

    def baseline_names(self) -> list[str]:
        names: list[str] = []
        for run in self.runs:
            names += [name for name in run.baselines if name not in names]
        return names

    def to_json(self) -> dict[str, Any]:
        return {
            "differences": self.differences,
            "runs": [run.to_json() for run in self.runs],
        }


def compare_runs(paths: Sequence[Path]) -> Comparison:
    """Read every run and find the config keys that differ.

    Args:
        paths: two or more run directories made by `finetune`.

    Raises:
        UserError: fewer than two paths, a path that is not a run, or a damaged
            config.yaml / metrics.json / history.csv (naming the file).
    """
    if len(paths) < 2:
        raise UserError(
            "RUN_DIR",
            f"compare needs at least 2 runs; got {len(paths)}",
            "pass two or more run directories",
        )
    runs = [load_run(path) for path in paths]
    _unique_labels(runs)
    return Comparison(runs=runs, differences=config_differences([run.config for run in runs]))


def load_run(path: Path) -> RunSummary:
    """One run directory, finished or not.

    Raises:
        UserError: not a run directory, or a damaged file in it (naming the file).
    """
    where = str(path)
    if not (path / rundir.CONFIG).is_file():
        raise UserError(where, f"not a transferctl run (no {rundir.CONFIG})", _not_a_run_fix(path))
    run = path.resolve()
    config = _read_yaml_mapping(run / rundir.CONFIG)
    metrics = _read_json_mapping(run / rundir.METRICS)
    state = _read_json_mapping(run / STATE)
    finished = metrics is not None and (state is None or state.get("finished") is True)
    summary = RunSummary(
        path=run,
        label=run.name,
        finished=finished,
        config=flatten(config),
        history=load_history(run / rundir.HISTORY),
        kind=rundir.run_kind(run),
    )
    if finished and metrics is not None:
        for split in SPLITS:
            setattr(summary, split, _scores(metrics.get(split), summary.kind))
        summary.baselines = baselines(metrics)
        kept = metrics.get("kept")
        summary.kept = kept if isinstance(kept, dict) else None
    return summary


def config_differences(configs: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Dotted keys whose values are not the same in every config (flattened), in file order.

    `output.*` is ignored: where a run was written says nothing about how it trained.
    """
    keys: list[str] = []
    for config in configs:
        keys += [key for key in config if key not in keys]
    missing = object()
    differences = {}
    for key in keys:
        if key.startswith(IGNORED_PREFIXES):
            continue
        values = [config.get(key, missing) for config in configs]
        if any(value != values[0] for value in values[1:]):
            differences[key] = [None if value is missing else value for value in values]
    return differences


def baselines(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Every other top-level entry of metrics.json that scores val and/or test.

    A baseline looks like `linear_probe: {val: {accuracy: 0.93, ...}, test: 0.91}`: each split a
    number, or a mapping with `accuracy`. Returns `{name: {split: accuracy}}`.
    """
    found: dict[str, dict[str, float]] = {}
    for name, entry in metrics.items():
        if name in SPLITS or not isinstance(entry, Mapping):
            continue
        scores = {}
        for split in SPLITS:
            value = entry.get(split)
            if isinstance(value, Mapping):
                value = value.get("accuracy")
            number = _finite(value)
            if number is not None:
                scores[split] = number
        if scores:
            found[name] = scores
    return found


def _scores(entry: Any, kind: str = rundir.FINETUNE) -> dict[str, float]:
    """A split's scores: `accuracy` and `loss`; a pretrain run's `mse` (its loss is the
    reconstruction's, not a classifier's, and is never put beside one)."""
    if not isinstance(entry, Mapping):
        return {}
    keys = ("mse",) if kind == rundir.PRETRAIN else ("accuracy", "loss")
    scores = {key: _finite(entry.get(key)) for key in keys}
    return {key: value for key, value in scores.items() if value is not None}


def _finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        loaded = bounded_yaml.load_file(path)  # a FIFO, huge file or alias bomb: refused
    except UserError as error:
        raise UserError(str(path), f"damaged config ({error.what})", _DAMAGED) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(str(path), f"damaged config ({_first_line(error)})", _DAMAGED) from None
    if not isinstance(loaded, dict):
        raise UserError(str(path), "damaged config (not a mapping of keys)", _DAMAGED)
    return loaded


def _read_json_mapping(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        loaded = files.read_json(path, limit=JSON_MAX_BYTES)
    except (OSError, ValueError) as error:
        raise UserError(str(path), f"damaged file ({_first_line(error)})", _DAMAGED) from None
    if not isinstance(loaded, dict):
        raise UserError(str(path), "damaged file (not a JSON object)", _DAMAGED)
    return loaded


_DAMAGED = "restore it, or leave this run out of the comparison"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _not_a_run_fix(path: Path) -> str:
    if not path.exists():
        why = paths.missing(path, "does not exist")
        return f"the path {why}; pass a run directory made by finetune"
    if path.is_dir():
        inside = [child for child in path.iterdir() if (child / rundir.CONFIG).is_file()]
        if inside:
            return f"it holds {len(inside)} run(s); pass them, e.g. {path}/*"
    return "pass a run directory made by finetune"


def _unique_labels(runs: Sequence[RunSummary]) -> None:
    """Runs with the same folder name (from different places) are told apart by their parents."""
    for run in runs:
        same = [other for other in runs if other.label == run.label]
        if len(same) > 1:
            for other in same:
                other.label = f"{other.path.parent.name}/{other.path.name}"
