"""The pretrain stage: config -> data -> autoencoder -> train -> run directory.

The run's life is the lifecycle's (`stages/lifecycle.py`), as for finetune: resolved config.yaml,
env.json, history.csv, curves.png, checkpoints/ and resume, the run lock, atomic writes,
metrics.json. What is pretrain's own is here: the autoencoder, `reconstructions.png`, and a
`model.keras` that is the encoder (input -> preprocess -> backbone -> pooling, built-in layers
only), so the run is a `model.weights` for finetune, by path or by `{run: NAME}`. env.json and
metrics.json say `kind: pretrain`.

Example:
    config = load_config("configs/demo.yaml", ["pretrain.epochs=5"])
    result = pretrain(config)
    print(result.run_dir, result.metrics["val"]["loss"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl.config import backbones
from transferctl.config.schema import Config, Pretrain
from transferctl.data import DataBundle, load_data
from transferctl.distribute import strategy as distribution
from transferctl.errors import UserError
from transferctl.rundir import layout as rundir
from transferctl.rundir import lock as runlock
from transferctl.stages import lifecycle, worker
from transferctl.stages.lifecycle import RunResult
from transferctl.train.checkpoint import TrainState

SHOWN_IMAGES = 8
TRAINING = "a pretrain is training it"


def with_defaults(config: Config) -> Config:
    """`config` with its `pretrain` section filled in (the defaults when it is null)."""
    return config.model_copy(update={"pretrain": config.pretrain or Pretrain()})


def _check_kind(run_dir: Path, where: str) -> None:
    kind = rundir.run_kind(run_dir)
    if kind != rundir.PRETRAIN:
        raise UserError(
            where,
            f"{run_dir} is not a pretrain run (its env.json says {kind})",
            "resume a finetune run with `transferctl finetune --resume`, or pass a new folder",
        )


KIND = lifecycle.Kind(
    rundir.PRETRAIN, TRAINING, labels=False, check=_check_kind, complete=with_defaults
)


@worker.entry  # under TF_CONFIG: join the cluster; only the chief writes --run-dir
@runlock.releases_locks
def pretrain(
    config: Config,
    *,
    run_dir: Path | None = None,
    console: Console | None = None,
    unsafe: bool = False,
) -> RunResult:
    """Pretrain the configured backbone as an autoencoder's encoder, into a new run directory.

    Args:
        config: resolved (`load_config`); a null `pretrain` section means its defaults.
        run_dir: a new or empty folder. Defaults to `output.runs_dir/<name>-<timestamp>`.
        unsafe: allow `.keras` weights that run code (Lambda layers).
    """
    lifecycle.check_new(config, run_dir)
    return _train(with_defaults(config), None, run_dir, console, unsafe)


@worker.entry
@runlock.releases_locks
def resume(
    run_dir: Path,
    *,
    config: Config | None = None,
    force: bool = False,
    console: Console | None = None,
    unsafe: bool = False,
) -> RunResult:
    """Continue an unfinished pretrain run where its last checkpoint left it.

    Args:
        run_dir: a run directory that `pretrain` started.
        config: the config the caller asks for; when it differs from the run's own, resuming
            is refused (naming the changed keys) unless `force`, and then it is used.
        force: accept a changed config.
    """
    opened = lifecycle.reopen(run_dir, config, force, console, KIND)
    if isinstance(opened, RunResult):
        return opened
    return _train(opened.config, opened.state, opened.run_dir, console, unsafe)


def _train(
    config: Config,
    state: TrainState | None,
    run_dir: Path | None,
    console: Console | None,
    unsafe: bool,
) -> RunResult:
    return lifecycle.in_scope(
        config, lambda spread: _train_in_scope(config, state, run_dir, console, unsafe, spread)
    )


def _train_in_scope(
    config: Config,
    state: TrainState | None,
    run_dir: Path | None,
    console: Console | None,
    unsafe: bool,
    spread: distribution.Distribution,
) -> RunResult:
    from transferctl.model.autoencoder import build_autoencoder, encoder_model
    from transferctl.train.autoencoder import train_autoencoder

    assert config.pretrain is not None, "with_defaults() first"
    on = lifecycle.prepare(config, state, run_dir, spread)
    data = load_data(config.data, config.seed, unlabelled=True, replicas=spread.replicas)
    has_checkpoint = state is not None and state.weights is not None
    model, backbone = build_autoencoder(
        backbones.get(config.model.backbone),
        config.image_size,
        "none" if has_checkpoint else config.model.weights,  # starting weights: as finetune
        config.pretrain,
        seed=config.seed,
        safe_mode=not unsafe,
    )
    parameters = model.count_params()
    path = lifecycle.open_directory(
        config, state, run_dir, KIND, parameters, data.bad_files, on, spread
    )
    if console is not None:
        console.print(_header(path, config, data, on, spread), highlight=False)
    rate = spread.scale_rate(config.pretrain.learning_rate)  # runtime.lr_scaling
    with lifecycle.interrupted(path, KIND):
        result = train_autoencoder(
            model,
            backbone,
            data,
            config.model,
            config.pretrain.model_copy(update={"learning_rate": rate}),
            config.train,
            path,
            console,
            resume=state,
        )
    lifecycle.save_model(path, encoder_model(model))
    metrics: dict[str, Any] = {"kind": KIND.name, "objective": config.pretrain.objective}
    metrics.update(final_metrics(model, data))
    _write_reconstructions(path, model, data, config, console)
    return lifecycle.finish(path, metrics, result, console)


def _header(
    path: Path, config: Config, data: DataBundle, on: Any, spread: distribution.Distribution
) -> str:
    return (
        f"run directory [bold]{path}[/]\npretrain {backbones.get(config.model.backbone).name} "
        f"at {config.image_size[0]}x{config.image_size[1]} as an autoencoder's encoder, "
        f"weights {config.model.weights}; train {data.count('train')}, val "
        f"{data.count('val')}, test {data.count('test')} images (labels ignored); "
        f"{on.describe()}"
        + (f"; {spread.describe()}" if spread.distributed else "")
        + (f"; skipped {len(data.bad_files)} unusable file(s)" if data.bad_files else "")
    )


def final_metrics(model: Any, data: DataBundle) -> dict[str, Any]:
    """The loss (reconstruction + sparsity) and `mse` (reconstruction alone, inputs in [0, 1])
    of the final autoencoder on val and test, inference mode (no noise)."""
    from transferctl.model.autoencoder import as_reconstruction

    return lifecycle.held_out_scores(model, data, as_reconstruction)


def _write_reconstructions(
    path: Path, model: Any, data: DataBundle, config: Config, console: Console | None
) -> None:
    """reconstructions.png from the first validation (else training) images; a failure warns."""
    from transferctl.model.autoencoder import sample_reconstructions
    from transferctl.rundir.reconstructions import save_reconstructions

    assert config.pretrain is not None
    split = "val" if data.has("val") else "train"
    target = path / rundir.RECONSTRUCTIONS
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
