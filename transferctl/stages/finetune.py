"""The one place that chains the stages: config -> data -> model -> train -> run directory.

A Python user can call `finetune(config)` or `resume(run_dir)` directly; the CLI command is a
thin wrapper.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import runtime
from transferctl.config import backbones
from transferctl.config.loader import dump_config, load_config
from transferctl.config.schema import Config
from transferctl.data import DataBundle, load_data
from transferctl.distribute import strategy as distribution
from transferctl.errors import Interrupted, UserError
from transferctl.rundir import layout as rundir
from transferctl.rundir import lock as runlock
from transferctl.stages import worker


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict[str, Any]
    already_finished: bool = False


@worker.entry  # under TF_CONFIG: join the cluster, write where this worker should
@runlock.releases_locks
def finetune(
    config: Config,
    *,
    run_dir: Path | None = None,
    console: Console | None = None,
    unsafe: bool = False,
) -> FinetuneResult:
    """Train `config` (resolved) into a new run directory and leave it complete.

    Example:
        config = load_config("configs/demo.yaml")
        result = finetune(config)
        print(result.run_dir, result.metrics["val"]["accuracy"])
    """
    if run_dir is None:
        rundir.check_writable(config.output.runs_dir)
    else:
        rundir.check_writable(run_dir, where="--run-dir")
    if run_dir is not None:
        rundir.check_available(run_dir)
    return _train(config, None, run_dir, console, unsafe)


@worker.entry
@runlock.releases_locks
def resume(
    run_dir: Path,
    *,
    config: Config | None = None,
    force: bool = False,
    console: Console | None = None,
    unsafe: bool = False,
) -> FinetuneResult:
    """Continue an unfinished run where its last checkpoint left it.

    Args:
        run_dir: a run directory that `finetune` started.
        config: the config the caller asks for; when it differs from the run's own, resuming is
            refused (naming the changed keys) unless `force`, and then it is used.
        force: accept a changed config.
    """
    from transferctl.train import checkpoint

    run_dir = run_dir.resolve()
    if not (run_dir / rundir.CONFIG).is_file() and not (run_dir / rundir.CHECKPOINTS).is_dir():
        raise UserError(
            "--resume", f"{run_dir} is not a transferctl run (no config.yaml)", "check the path"
        )
    state = checkpoint.load_state(run_dir / rundir.CHECKPOINTS)
    if not checkpoint.is_finished(run_dir, state):
        # one trainer at a time; then check what the run relies on before trusting any of it
        runlock.acquire(run_dir, "--run-dir" if config is not None else "--resume")
        rundir.remove_leftovers(run_dir)
        state = checkpoint.load_state(run_dir / rundir.CHECKPOINTS)  # as of taking the lock
    finished = checkpoint.is_finished(run_dir, state)
    replaced = force and config is not None and not finished  # config.yaml is rewritten
    checkpoint.verify_run_files(run_dir, None if finished else state, check_config=not replaced)
    saved = config if replaced and config is not None else load_config(run_dir / rundir.CONFIG)
    changed = changed_keys(saved, config) if config is not None else []
    if finished:
        if changed:
            raise UserError(
                "--run-dir" if config is not None else "--resume",
                f"{run_dir} holds a finished run whose config differs in {', '.join(changed)}; "
                "runs are never overwritten",
                "pass a new or empty --run-dir, or drop it to create a new run",
            )
        return FinetuneResult(run_dir, _read_json(run_dir / rundir.METRICS), already_finished=True)
    if changed and not force:
        raise UserError(
            "--resume",
            f"the config differs from the run's own in {', '.join(changed)}",
            "resume without a config to keep the run's, or pass --force to use the new one",
        )
    chosen = config if config is not None and force else saved
    checkpoint.record_config(run_dir, dump_config(chosen), state)
    if console is not None:
        where = "the start"
        if state is not None and state.weights is not None:
            where = f"epoch {state.epochs_done + 1}"
            if state.steps_done:
                where += f", step {state.steps_done + 1}"
        console.print(f"resuming {run_dir} at {where}", highlight=False)
    return _train(chosen, state, run_dir, console, unsafe)


def changed_keys(before: Config, after: Config) -> list[str]:
    """Dotted keys whose values differ, ignoring where runs are written."""
    from transferctl.config.loader import flatten

    old, new = flatten(before.model_dump(mode="json")), flatten(after.model_dump(mode="json"))
    ignored = ("output.", "name")
    return sorted(
        key
        for key in set(old) | set(new)
        if old.get(key) != new.get(key) and not key.startswith(ignored)
    )


def _train(
    config: Config,
    state: Any,
    run_dir: Path | None,
    console: Console | None,
    unsafe: bool,
) -> FinetuneResult:
    """Everything that builds variables or runs a model, under the distribution's one scope."""
    spread = distribution.setup(config.runtime, config.data.batch_size)  # before TF's devices
    with spread.scope():
        return _train_in_scope(config, state, run_dir, console, unsafe, spread)


def _train_in_scope(
    config: Config,
    state: Any,
    run_dir: Path | None,
    console: Console | None,
    unsafe: bool,
    spread: distribution.Distribution,
) -> FinetuneResult:
    on = runtime.prepare(
        config.train.mixed_precision, config.seed, deterministic=config.train.deterministic
    )

    data = load_data(config.data, config.seed, replicas=spread.replicas)
    spec = backbones.get(config.model.backbone)

    from transferctl.model.classifier import build_classifier
    from transferctl.model.freezing import check_freezes
    from transferctl.model.preprocess import is_legacy_checkpoint, without_legacy_layer
    from transferctl.train import distill
    from transferctl.train.loop import train

    # Pretrained weights only when there is no checkpoint yet (TF Model Garden's rule).
    has_checkpoint = state is not None and state.weights is not None
    if has_checkpoint and run_dir is not None:
        distribution.check_resume(run_dir / rundir.ENV, spread)
    weights = "none" if has_checkpoint else config.model.weights
    legacy = has_checkpoint and is_legacy_checkpoint(
        (run_dir or Path()) / rundir.CHECKPOINTS / state.weights
    )
    model, backbone = build_classifier(
        spec,
        config.image_size,
        weights,
        config.model.head,
        data.num_classes,
        safe_mode=not unsafe,
        legacy=legacy,
    )
    check_freezes(backbone, config.model.freeze, [phase.freeze for phase in config.train.phases])
    teacher = None
    if config.distill is not None:  # before the run directory: a wrong teacher leaves none
        teacher = distill.load_teacher(config.distill, data.class_names)
    if state is None:
        target = config.output.runs_dir if run_dir is None else run_dir
        check_disk_space(target, model.count_params(), "--run-dir" if run_dir else None)
        if run_dir is not None and (run_dir / rundir.CONFIG).is_file():
            path = run_dir.resolve()  # resumed before its first checkpoint: start it again
        else:
            path = rundir.create(config.output.runs_dir, config.name or "run", run_dir)
        _write_run_files(path, config, data, on, console, spread)
    else:
        assert run_dir is not None
        path = run_dir
        rundir.write_text(path / rundir.CONFIG, dump_config(config))
    if console is not None:
        console.print(
            f"run directory [bold]{path}[/]\n{spec.name} at {config.image_size[0]}x"
            f"{config.image_size[1]}, weights {config.model.weights}, {data.num_classes} classes; "
            f"train {data.count('train')}, val {data.count('val')}, test {data.count('test')} "
            f"images; {on.describe()}, {runtime.keras().mixed_precision.global_policy().name}"
            + (f"; {spread.describe()}" if spread.distributed else ""),
            highlight=False,
        )
        if teacher is not None:
            console.print(
                f"distilling from the teacher {teacher.run_dir} (temperature "
                f"{teacher.temperature:g}, alpha {teacher.alpha:g})",
                highlight=False,
            )
    class_weight = None
    if config.train.class_weight == "balanced":
        class_weight = data.class_weights()
    try:
        result = train(
            model,
            backbone,
            data,
            config.model,
            spread.scaled_train(config.train),  # runtime.lr_scaling
            path,
            console,
            resume=state,
            class_weight=class_weight,
            teacher=teacher,
        )
    except KeyboardInterrupt:
        raise Interrupted(path) from None

    model = without_legacy_layer(model)  # a resumed 0.1 run too ends with a portable model
    with rundir.atomic_path(path / rundir.MODEL, suffix=".keras") as temporary:
        model.save(str(temporary))
    metrics = final_metrics(model, data)
    probes = [phase["linear_probe"] for phase in result.phases if "linear_probe" in phase]
    if probes:
        metrics["linear_probe"] = probes[0]  # the first frozen backbone's features
    if teacher is not None and (taught := distill.teacher_metrics(teacher, data)):
        metrics["teacher"] = taught  # the teacher on the same splits
    metrics["training"] = {
        "epochs": len(result.history),
        "seconds_this_session": round(result.seconds, 2),
        "phases": result.phases,
    }
    rundir.write_json(path / rundir.METRICS, metrics)
    from transferctl.rundir.curves import write_run_curves

    write_run_curves(path, console)  # a failure to draw only warns
    _mark_finished(path)
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


def _write_run_files(
    path: Path,
    config: Config,
    data: DataBundle,
    on: runtime.Device,
    console: Console | None,
    spread: distribution.Distribution,
) -> None:
    rundir.write_text(path / rundir.CONFIG, dump_config(config))
    rundir.write_text(path / rundir.LABELS, "".join(f"{name}\n" for name in data.class_names))
    rundir.write_json(path / rundir.ENV, environment(on, config, spread))
    _print_audit_findings(data, console)
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


def _mark_finished(path: Path) -> None:
    from transferctl.train import checkpoint

    state = checkpoint.load_state(path / rundir.CHECKPOINTS) or checkpoint.TrainState()
    state.finished = True
    checkpoint.commit(path / rundir.CHECKPOINTS, state)


def check_disk_space(target: Path, parameters: int, where: str | None = None) -> None:
    """A run keeps the model and up to three checkpoints (weights + optimizer slots).

    Args:
        where: the option that named `target`. Defaults to `output.runs_dir`.
    """
    where = where or "output.runs_dir"
    probe = target
    while not probe.exists():
        probe = probe.parent
    needed = parameters * 4 * 10 + 50 * 2**20
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise UserError(
            where,
            f"only {free / 2**20:.0f} MiB free on {probe}; this run needs about "
            f"{needed / 2**20:.0f} MiB",
            f"free some space or point {where} elsewhere",
        )


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def environment(
    on: runtime.Device, config: Config, spread: distribution.Distribution | None = None
) -> dict[str, Any]:
    """env.json: versions, device, distribution (`spread`; one device when None), and more."""
    import os
    import platform

    tf = runtime.tf()
    if spread is None:
        spread = distribution.single_device(config.data.batch_size, config.runtime.lr_scaling)
    return {
        **runtime.versions(),
        "device": {"kind": on.kind, "names": list(on.names)},
        "distribution": spread.record(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "precision_policy": runtime.keras().mixed_precision.global_policy().name,
        "seed": config.seed,
        "deterministic": config.train.deterministic,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "tf_build": {k: str(v) for k, v in tf.sysconfig.get_build_info().items()},
        "command_line": sys.argv,
        "cwd": str(Path.cwd()),
    }
