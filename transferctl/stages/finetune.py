"""The finetune stage: config -> data -> classifier -> phases -> run directory.

The run's life (a new run or a resume, the lock, checksums, env.json, finishing) is the
lifecycle's (`stages/lifecycle.py`); what is finetune's own is here: the classifier and its
teacher, labels.txt, the data audit's warnings, the phases, and the metrics of the final model.
A Python user can call `finetune(config)` or `resume(run_dir)` directly; the CLI command is a
thin wrapper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import runtime
from transferctl.config import backbones
from transferctl.config.schema import Config
from transferctl.data import DataBundle, load_data
from transferctl.errors import shown
from transferctl.rundir import layout as rundir
from transferctl.rundir import lock as runlock
from transferctl.stages import lifecycle
from transferctl.stages.lifecycle import RunResult


def _check_kind(run_dir: Path, where: str) -> None:
    """A pretrain run is refused (`rundir.require_kind`)."""
    rundir.require_kind(
        run_dir,
        rundir.FINETUNE,
        where,
        f"resume it with `transferctl pretrain --resume {run_dir}`, or pass a new folder",
    )


def _train(opening: lifecycle.Opening) -> RunResult:
    """Finetune's part of training a run: data, classifier (and teacher), phases, metrics."""
    from transferctl.model.preprocess import without_legacy_layer
    from transferctl.train import distill
    from transferctl.train.loop import train

    config, state = opening.config, opening.state
    on = opening.prepare()
    data = load_data(config.data, config.seed, replicas=opening.spread.replicas)
    model, backbone = _build(opening, data)
    teacher = None
    if config.distill is not None:  # before the run directory: a wrong teacher leaves none
        teacher = distill.load_teacher(config.distill, data.class_names)
    path = opening.directory(model.count_params(), data.bad_files, on)
    if state is None:
        _write_run_files(path, data, opening.console)
    _announce(opening, path, data, on, teacher)
    class_weight = data.class_weights() if config.train.class_weight == "balanced" else None
    with opening.interrupted(path):
        result = train(
            model,
            backbone,
            data,
            config.model,
            opening.spread.scaled_train(config.train),  # runtime.lr_scaling
            path,
            opening.console,
            resume=state,
            class_weight=class_weight,
            teacher=teacher,
        )
    model = without_legacy_layer(model)  # a resumed 0.1 run too ends with a portable model
    opening.save_model(path, _without_adapters(config, data, model))  # model.lora: merged
    metrics = final_metrics(model, data)
    if result.kept is not None:
        metrics["kept"] = result.kept
    probes = [phase["linear_probe"] for phase in result.phases if "linear_probe" in phase]
    if probes:
        metrics["linear_probe"] = probes[0]  # the first frozen backbone's features
    if teacher is not None and (taught := distill.teacher_metrics(teacher, data)):
        metrics["teacher"] = taught  # the teacher on the same splits
    return opening.finish(path, metrics, result)


STAGE = lifecycle.Stage(
    rundir.FINETUNE,
    runlock.TRAINING,
    labels=True,
    check=_check_kind,
    train=_train,
    config_option="--resume",
)
finetune = STAGE.start
"""Train `config` (resolved) into a new run directory and leave it complete.

Example:
    config = load_config("configs/demo.yaml")
    result = finetune(config)
    print(result.run_dir, result.metrics["val"]["accuracy"])
"""
resume = STAGE.resume  # continue an unfinished finetune run: resume(run_dir)


def _build(opening: lifecycle.Opening, data: DataBundle) -> tuple[Any, Any]:
    """The classifier and its backbone; pretrained weights only when there is no checkpoint yet
    (TF Model Garden's rule). Every freeze spec is checked against the backbone's layers."""
    from transferctl.model.classifier import build_classifier
    from transferctl.model.freezing import check_freezes
    from transferctl.model.preprocess import is_legacy_checkpoint

    config, state, legacy = opening.config, opening.state, False
    if state is not None and state.weights is not None and opening.run_dir is not None:
        legacy = is_legacy_checkpoint(opening.run_dir / rundir.CHECKPOINTS / state.weights)
    model, backbone = build_classifier(
        backbones.get(config.model.backbone),
        config.image_size,
        "none" if opening.has_checkpoint else config.model.weights,
        config.model.head,
        data.num_classes,
        safe_mode=not opening.unsafe,
        legacy=legacy,
        lora=config.model.lora,
    )
    check_freezes(backbone, config.model.freeze, [phase.freeze for phase in config.train.phases])
    return model, backbone


def _without_adapters(config: Config, data: DataBundle, model: Any) -> Any:
    """`model`, or with `model.lora` the same model built without LoRA, adapters merged."""
    from transferctl.model.classifier import build_classifier
    from transferctl.model.lora import merged_copy

    def plain() -> Any:
        spec = backbones.get(config.model.backbone)
        head = config.model.head
        return build_classifier(spec, config.image_size, "none", head, data.num_classes)[0]

    return merged_copy(model, plain)


def _announce(
    opening: lifecycle.Opening, path: Path, data: DataBundle, on: runtime.Device, teacher: Any
) -> None:
    console, config, spread = opening.console, opening.config, opening.spread
    if console is None:
        return
    spec = backbones.get(config.model.backbone)
    console.print(
        f"run directory [bold]{shown(path)}[/]\n{spec.name} at {config.image_size[0]}x"
        f"{config.image_size[1]}, weights {config.model.weights}, {data.num_classes} classes; "
        f"train {data.count('train')}, val {data.count('val')}, test {data.count('test')} "
        f"images; {on.describe()}, {runtime.keras().mixed_precision.global_policy().name}"
        + (f"; {spread.describe()}" if spread.distributed else ""),
        highlight=False,
    )
    source = Path(config.model.weights)
    if source.is_dir() and opening.state is None:
        console.print(
            f"weights: the backbone of the {rundir.run_kind(source)} run {source} (its "
            f"{rundir.MODEL}; the head starts new)",
            highlight=False,
        )
    if teacher is not None:
        console.print(
            f"distilling from the teacher {teacher.run_dir} (temperature "
            f"{teacher.temperature:g}, alpha {teacher.alpha:g})",
            highlight=False,
        )


def final_metrics(model: Any, data: DataBundle) -> dict[str, Any]:
    """Accuracy, loss and top-5 accuracy of the final model on val and test, inference mode."""
    metrics = lifecycle.held_out_scores(model, data)
    if data.num_classes <= 5:
        for entry in metrics.values():
            entry.pop("top_5_accuracy", None)
    return metrics


def _write_run_files(path: Path, data: DataBundle, console: Console | None) -> None:
    """labels.txt; and, before training, what the data audit found."""
    rundir.write_text(path / rundir.LABELS, "".join(f"{name}\n" for name in data.class_names))
    _print_audit_findings(data, console)
    if data.bad_files and console is not None:
        console.print(
            f"[yellow]skipped {len(data.bad_files)} unusable file(s)[/], listed in "
            f"{path / rundir.BAD_FILES}",
            highlight=False,
        )


def _print_audit_findings(data: DataBundle, console: Console | None) -> None:
    """Duplicates across splits leak test answers into training: say so before training."""
    found = getattr(data, "audit", None)
    if console is None or found is None:
        return
    leaks = [group for group in found.duplicates() if len({f.split for f in group}) > 1]
    if leaks:
        console.print(
            f"[yellow]warning[/]: {len(leaks)} image(s) appear in more than one split "
            "(identical files): validation/test scores will be optimistic; "
            "`transferctl doctor` lists them",
            highlight=False,
        )
    for report in found.warnings()[:5]:
        console.print(f"[yellow]warning[/]: {report.path}: {report.warning}", highlight=False)
