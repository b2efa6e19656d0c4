"""The one place that chains pretraining: config -> data -> autoencoder -> train -> run directory.

The run directory keeps finetune's guarantees (resolved config.yaml, env.json, history.csv,
curves.png, checkpoints/ and resume, the run lock, atomic writes, metrics.json) and adds
`reconstructions.png`. Its `model.keras` is the encoder (input -> preprocess -> backbone ->
pooling, built-in layers only), so the run is a `model.weights` for finetune, by path or by
`{run: NAME}`. env.json and metrics.json say `kind: pretrain`.

Example:
    config = load_config("configs/demo.yaml", ["pretrain.epochs=5"])
    result = pretrain(config)
    print(result.run_dir, result.metrics["val"]["loss"])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import runtime
from transferctl.config import backbones
from transferctl.config.loader import dump_config, load_config
from transferctl.config.schema import Config, Pretrain
from transferctl.data import DataBundle, load_data
from transferctl.distribute import strategy as distribution
from transferctl.errors import Interrupted, UserError
from transferctl.rundir import layout as rundir
from transferctl.rundir import lock as runlock
from transferctl.stages import worker

KIND = "pretrain"
RECONSTRUCTIONS = "reconstructions.png"
SHOWN_IMAGES = 8
TRAINING = "a pretrain is training it"


@dataclass
class PretrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    already_finished: bool = False


def with_defaults(config: Config) -> Config:
    """`config` with its `pretrain` section filled in (the defaults when it is null)."""
    return config.model_copy(update={"pretrain": config.pretrain or Pretrain()})


def run_kind(run_dir: Path) -> str:
    """`pretrain` or `finetune`, as the run's env.json says (finetune runs carry no kind)."""
    try:
        environment = json.loads((run_dir / rundir.ENV).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    return str(environment.get("kind", "finetune")) if isinstance(environment, dict) else "unknown"


@worker.entry  # under TF_CONFIG: join the cluster; only the chief writes --run-dir
@runlock.releases_locks
def pretrain(
    config: Config,
    *,
    run_dir: Path | None = None,
    console: Console | None = None,
    unsafe: bool = False,
) -> PretrainResult:
    """Pretrain the configured backbone as an autoencoder's encoder, into a new run directory.

    Args:
        config: resolved (`load_config`); a null `pretrain` section means its defaults.
        run_dir: a new or empty folder. Defaults to `output.runs_dir/<name>-<timestamp>`.
        unsafe: allow `.keras` weights that run code (Lambda layers).
    """
    if run_dir is None:
        rundir.check_writable(config.output.runs_dir)
    else:
        rundir.check_writable(run_dir, where="--run-dir")
        rundir.check_available(run_dir)
    return _train(with_defaults(config), None, run_dir, console, unsafe, resuming=False)


@worker.entry
@runlock.releases_locks
def resume(
    run_dir: Path,
    *,
    config: Config | None = None,
    force: bool = False,
    console: Console | None = None,
    unsafe: bool = False,
) -> PretrainResult:
    """Continue an unfinished pretrain run where its last checkpoint left it.

    Args:
        run_dir: a run directory that `pretrain` started.
        config: the config the caller asks for; when it differs from the run's own, resuming
            is refused (naming the changed keys) unless `force`, and then it is used.
        force: accept a changed config.
    """
    from transferctl.stages.finetune import changed_keys
    from transferctl.train import checkpoint

    where = "--run-dir" if config is not None else "--resume"
    run_dir = run_dir.resolve()
    if not (run_dir / rundir.CONFIG).is_file():
        raise UserError(
            where, f"{run_dir} is not a transferctl run (no config.yaml)", "check the path"
        )
    kind = run_kind(run_dir)
    if kind != KIND:
        raise UserError(
            where,
            f"{run_dir} is not a pretrain run (its env.json says {kind})",
            "resume a finetune run with `transferctl finetune --resume`, or pass a new folder",
        )
    state = checkpoint.load_state(run_dir / rundir.CHECKPOINTS)
    if not checkpoint.is_finished(run_dir, state):
        runlock.acquire(run_dir, where, TRAINING)  # one trainer at a time, then trust the files
        rundir.remove_leftovers(run_dir)
        state = checkpoint.load_state(run_dir / rundir.CHECKPOINTS)
    finished = checkpoint.is_finished(run_dir, state)
    replaced = force and config is not None and not finished
    checkpoint.verify_run_files(
        run_dir, None if finished else state, check_config=not replaced, check_labels=False
    )
    saved = load_config(run_dir / rundir.CONFIG)
    wanted = with_defaults(config) if config is not None else None
    changed = changed_keys(saved, wanted) if wanted is not None else []
    if finished:
        if changed:
            raise UserError(
                where,
                f"{run_dir} holds a finished run whose config differs in {', '.join(changed)}; "
                "runs are never overwritten",
                "pass a new or empty --run-dir, or drop it to create a new run",
            )
        metrics = json.loads((run_dir / rundir.METRICS).read_text(encoding="utf-8"))
        return PretrainResult(run_dir, metrics, already_finished=True)
    if changed and not force:
        raise UserError(
            where,
            f"the config differs from the run's own in {', '.join(changed)}",
            "resume without a config to keep the run's, or pass --force to use the new one",
        )
    chosen = wanted if wanted is not None and force else with_defaults(saved)
    checkpoint.record_config(run_dir, dump_config(chosen), state)
    if console is not None:
        where_now = "the start"
        if state is not None and state.weights is not None:
            where_now = f"epoch {state.epochs_done + 1}"
            if state.steps_done:
                where_now += f", step {state.steps_done + 1}"
        console.print(f"resuming {run_dir} at {where_now}", highlight=False)
    return _train(chosen, state, run_dir, console, unsafe, resuming=True)


def _train(
    config: Config,
    state: Any,
    run_dir: Path | None,
    console: Console | None,
    unsafe: bool,
    *,
    resuming: bool,
) -> PretrainResult:
    """Everything that builds variables or runs a model, under the distribution's one scope."""
    spread = distribution.setup(config.runtime, config.data.batch_size)  # before TF's devices
    with spread.scope():
        return _train_in_scope(config, state, run_dir, console, unsafe, resuming, spread)


def _train_in_scope(
    config: Config,
    state: Any,
    run_dir: Path | None,
    console: Console | None,
    unsafe: bool,
    resuming: bool,
    spread: distribution.Distribution,
) -> PretrainResult:
    from transferctl.model.autoencoder import build_autoencoder, encoder_model
    from transferctl.stages.finetune import check_disk_space, environment
    from transferctl.train.autoencoder import train_autoencoder

    assert config.pretrain is not None, "with_defaults() first"
    on = runtime.prepare(
        config.train.mixed_precision, config.seed, deterministic=config.train.deterministic
    )

    data = load_data(config.data, config.seed, unlabelled=True, replicas=spread.replicas)
    spec = backbones.get(config.model.backbone)
    # starting weights only when there is no checkpoint yet (as finetune)
    has_checkpoint = state is not None and state.weights is not None
    if has_checkpoint and run_dir is not None:
        distribution.check_resume(run_dir / rundir.ENV, spread)
    model, backbone = build_autoencoder(
        spec,
        config.image_size,
        "none" if has_checkpoint else config.model.weights,
        config.pretrain,
        seed=config.seed,
        safe_mode=not unsafe,
    )
    if resuming:
        assert run_dir is not None
        path = run_dir
    else:
        target = config.output.runs_dir if run_dir is None else run_dir
        check_disk_space(target, model.count_params(), "--run-dir" if run_dir else None)
        path = rundir.create(config.output.runs_dir, config.name or "run", run_dir)
        rundir.write_text(path / rundir.CONFIG, dump_config(config))
        rundir.write_json(path / rundir.ENV, {"kind": KIND, **environment(on, config, spread)})
        if data.bad_files:
            rundir.write_text(
                path / rundir.BAD_FILES, "".join(f"{f}\t{why}\n" for f, why in data.bad_files)
            )
    if console is not None:
        console.print(
            f"run directory [bold]{path}[/]\npretrain {spec.name} at {config.image_size[0]}x"
            f"{config.image_size[1]} as an autoencoder's encoder, weights "
            f"{config.model.weights}; train {data.count('train')}, val {data.count('val')}, "
            f"test {data.count('test')} images (labels ignored); {on.describe()}"
            + (f"; {spread.describe()}" if spread.distributed else "")
            + (f"; skipped {len(data.bad_files)} unusable file(s)" if data.bad_files else ""),
            highlight=False,
        )
    try:
        result = train_autoencoder(
            model,
            backbone,
            data,
            config.model,
            config.pretrain.model_copy(  # runtime.lr_scaling
                update={"learning_rate": spread.scale_rate(config.pretrain.learning_rate)}
            ),
            config.train,
            path,
            console,
            resume=state,
        )
    except KeyboardInterrupt:
        raise Interrupted(path, "pretrain") from None

    with rundir.atomic_path(path / rundir.MODEL, suffix=".keras") as temporary:
        encoder_model(model).save(str(temporary))
    metrics: dict[str, Any] = {"kind": KIND, "objective": config.pretrain.objective}
    metrics.update(final_metrics(model, data))
    metrics["training"] = {
        "epochs": len(result.history),
        "seconds_this_session": round(result.seconds, 2),
        "phases": result.phases,
    }
    rundir.write_json(path / rundir.METRICS, metrics)
    _write_reconstructions(path, model, data, config, console)
    from transferctl.rundir.curves import write_run_curves

    write_run_curves(path, console)  # a failure to draw only warns
    _mark_finished(path)
    return PretrainResult(run_dir=path, metrics=metrics)


def final_metrics(model: Any, data: DataBundle) -> dict[str, Any]:
    """The loss (reconstruction + sparsity) and `mse` (reconstruction alone, inputs in [0, 1])
    of the final autoencoder on val and test, inference mode (no noise)."""
    from transferctl.model.autoencoder import as_reconstruction

    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        if data.has(split):
            scores = model.evaluate(
                as_reconstruction(data.plain(split)), verbose=0, return_dict=True
            )
            metrics[split] = {name: float(value) for name, value in scores.items()}
            metrics[split]["num_examples"] = data.count(split)
    return metrics


def _write_reconstructions(
    path: Path, model: Any, data: DataBundle, config: Config, console: Console | None
) -> None:
    """reconstructions.png from the first validation (else training) images; a failure warns."""
    from transferctl.model.autoencoder import sample_reconstructions
    from transferctl.rundir.reconstructions import save_reconstructions

    assert config.pretrain is not None
    split = "val" if data.has("val") else "train"
    target = path / RECONSTRUCTIONS
    try:
        inputs, noisy, outputs = sample_reconstructions(
            model, data.plain(split), SHOWN_IMAGES, config.pretrain.noise, config.seed
        )
        mse = float(((inputs - outputs) ** 2).mean()) if len(inputs) else float("nan")
        shown = "images, with noise as in training," if noisy is not None else "images"
        title = f"{path.name}: {split} {shown} and their reconstructions (mse {mse:.4f})"
        save_reconstructions(target, inputs, outputs, noisy, title)
    except Exception as error:  # noqa: BLE001 - a picture never fails a finished training
        line = f"could not draw {target} ({type(error).__name__}: {error}); the run is complete"
        if console is not None:
            console.print(f"[yellow]warning[/]: {line}", highlight=False)


def _mark_finished(path: Path) -> None:
    from transferctl.train import checkpoint

    state = checkpoint.load_state(path / rundir.CHECKPOINTS) or checkpoint.TrainState()
    state.finished = True
    checkpoint.commit(path / rundir.CHECKPOINTS, state)
