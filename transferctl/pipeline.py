"""The one place that chains the stages: config -> data -> model -> train -> run directory.

A Python user can call `finetune(config)` directly; the CLI command is a thin wrapper.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import backbones, rundir, runtime
from transferctl.config.loader import dump_config
from transferctl.config.schema import Config
from transferctl.data import DataBundle, load_data


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict[str, Any]


def finetune(
    config: Config, *, run_dir: Path | None = None, console: Console | None = None
) -> FinetuneResult:
    """Train `config` (resolved) and leave a complete run directory.

    Example:
        config = load_config("configs/demo.yaml")
        result = finetune(config)
        print(result.run_dir, result.metrics["val"]["accuracy"])
    """
    rundir.check_writable(config.output.runs_dir if run_dir is None else run_dir)
    if run_dir is not None:
        rundir.check_available(run_dir)
    on = runtime.device()
    runtime.set_precision(runtime.precision_policy(config.train.mixed_precision, on))
    runtime.set_seed(config.seed)

    data = load_data(config.data, config.seed)
    spec = backbones.get(config.model.backbone)

    from transferctl.model.classifier import build_classifier
    from transferctl.model.freezing import check_freezes
    from transferctl.train.loop import train

    model, backbone = build_classifier(
        spec, config.image_size, config.model.weights, config.model.head, data.num_classes
    )
    check_freezes(backbone, config.model.freeze, [phase.freeze for phase in config.train.phases])
    path = rundir.create(config.output.runs_dir, config.name or "run", run_dir)
    rundir.write_text(path / rundir.CONFIG, dump_config(config))
    rundir.write_text(path / rundir.LABELS, "".join(f"{name}\n" for name in data.class_names))
    rundir.write_json(path / rundir.ENV, _environment(on, config))
    if data.bad_files:
        rundir.write_text(
            path / rundir.BAD_FILES, "".join(f"{file}\t{why}\n" for file, why in data.bad_files)
        )
        if console is not None:
            console.print(
                f"[yellow]skipped {len(data.bad_files)} unusable file(s)[/], listed in "
                f"{path / rundir.BAD_FILES}",
                highlight=False,
            )
    if console is not None:
        console.print(
            f"run directory [bold]{path}[/]\n{spec.name} at {config.image_size[0]}x"
            f"{config.image_size[1]}, weights {config.model.weights}, {data.num_classes} classes; "
            f"train {data.count('train')}, val {data.count('val')}, test {data.count('test')} "
            f"images; {on.describe()}, {runtime.keras().mixed_precision.global_policy().name}",
            highlight=False,
        )

    result = train(model, backbone, data, config.model, config.train, path, console)

    with rundir.atomic_path(path / rundir.MODEL, suffix=".keras") as temporary:
        model.save(str(temporary))
    metrics = final_metrics(model, data)
    metrics["training"] = {
        "epochs": len(result.history),
        "seconds": round(result.seconds, 2),
        "phases": [
            {
                "name": phase.name,
                "epochs_run": phase.epochs_run,
                "best_epoch": phase.best_epoch,
                "frozen_backbone_layers": phase.freeze.frozen_layers,
                "trainable_params": phase.freeze.trainable_params,
                "batchnorm_layers_recomputed": phase.batchnorm_recomputed,
            }
            for phase in result.phases
        ],
    }
    rundir.write_json(path / rundir.METRICS, metrics)
    rundir.write_json(path / rundir.CHECKPOINTS / "state.json", {"finished": True})
    return FinetuneResult(run_dir=path, metrics=metrics)


def final_metrics(model: Any, data: DataBundle) -> dict[str, Any]:
    """Accuracy, loss and top-5 accuracy of the final model on val and test, inference mode."""
    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        if not data.has(split):
            continue
        scores = model.evaluate(data.plain(split), verbose=0, return_dict=True)
        entry = {name: float(value) for name, value in scores.items()}
        if data.num_classes <= 5:
            entry.pop("top_5_accuracy", None)
        entry["num_examples"] = data.count(split)
        metrics[split] = entry
    return metrics


def _environment(on: runtime.Device, config: Config) -> dict[str, Any]:
    return {
        **runtime.versions(),
        "device": {"kind": on.kind, "names": list(on.names)},
        "precision_policy": runtime.keras().mixed_precision.global_policy().name,
        "seed": config.seed,
        "command_line": sys.argv,
        "cwd": str(Path.cwd()),
    }
