"""A run in a few lines of plain text: what it is, what it trained, what it kept and reached, its
files. `show` prints them; the report puts them at the top of its page."""

from __future__ import annotations

import json
from typing import Any

from transferctl.inspect.compare import RunSummary
from transferctl.inspect.runs import run_files, started
from transferctl.rundir import layout as rundir


def run_facts(run: RunSummary) -> list[tuple[str, str]]:
    """`show`'s rows, plain text: what the run is, what it trained, what it kept and reached."""
    config = run.config
    size = config.get("data.image_size") or ["?", "?"]
    data = f"{config.get('data.source')}" + (
        f" {config['data.path']}" if config.get("data.path") else ""
    )
    rows = [
        ("run", f"{run.path} ({run.kind}, {run.status})"),
        ("started", f"{started(run.path)} UTC"),
        ("data", data),
        (
            "model",
            f"{config.get('model.backbone')} at {size[0]}x{size[1]}, weights "
            f"{config.get('model.weights')}",
        ),
    ]
    rows += [("phases", line) for line in _phases(config, run.kind)]
    rows.append(("epochs", f"{run.epochs} in {run.seconds:.1f} s"))
    if run.kept:
        value = run.kept.get("value")
        score = f", {run.kept.get('monitor')} {value:.4f}" if isinstance(value, float) else ""
        rows.append(
            (
                "kept",
                f"epoch {run.kept.get('epoch')} of phase "
                f"{run.kept.get('phase')}{score} (model.keras)",
            )
        )
    for split in ("val", "test"):
        scores = getattr(run, split)
        if scores:
            rows.append((split, ", ".join(f"{key} {value:.4f}" for key, value in scores.items())))
    for name, scores in run.baselines.items():
        line = ", ".join(f"{split} accuracy {value:.4f}" for split, value in scores.items())
        rows.append((name, line))
    files = ", ".join(f"{name} {_size(size)}" for name, size in run_files(run.path))
    rows.append(("files", files))
    return rows


def _phases(config: dict[str, Any], kind: str) -> list[str]:
    if kind == rundir.PRETRAIN:
        return [
            f"pretrain: {config.get('pretrain.epochs')} epochs at "
            f"{config.get('pretrain.learning_rate')}, objective {config.get('pretrain.objective')}"
        ]
    lines, index = [], 0
    while f"train.phases.{index}.epochs" in config:
        phase = f"train.phases.{index}"
        freeze = _value(config, f"{phase}.freeze") or _value(config, "model.freeze")
        lines.append(
            f"{config.get(f'{phase}.name')}: {config.get(f'{phase}.epochs')} epochs at "
            f"{config.get(f'{phase}.learning_rate')}, freeze {_plain(freeze)}"
        )
        index += 1
    return lines


def _value(config: dict[str, Any], key: str) -> Any:
    """A flattened config's value at `key`, a mapping put together again (`{until: NAME}`)."""
    if key in config:
        return config[key]
    inner = {name[len(key) + 1 :]: v for name, v in config.items() if name.startswith(key + ".")}
    return inner or None


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"
