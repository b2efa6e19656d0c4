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
from transferctl.errors import UserError, shown
from transferctl.rundir import layout as rundir
from transferctl.stages import lifecycle
from transferctl.stages.lifecycle import RunResult

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


def _train(opening: lifecycle.Opening) -> RunResult:
    """Pretrain's part of training a run: unlabelled data, autoencoder, epochs, metrics."""
    from transferctl.model.autoencoder import build_autoencoder, encoder_model
    from transferctl.train.autoencoder import train_autoencoder

    config, spread = opening.config, opening.spread
    assert config.pretrain is not None, "with_defaults() first"
    on = opening.prepare()
    data = load_data(config.data, config.seed, unlabelled=True, replicas=spread.replicas)
    model, backbone = build_autoencoder(
        backbones.get(config.model.backbone),
        config.image_size,
        "none" if opening.has_checkpoint else config.model.weights,  # as finetune
        config.pretrain,
        seed=config.seed,
        safe_mode=not opening.unsafe,
    )
    path = opening.directory(model.count_params(), data.bad_files, on)
    if opening.console is not None:
        opening.console.print(_header(path, config, data, on, spread), highlight=False)
    rate = spread.scale_rate(config.pretrain.learning_rate)  # runtime.lr_scaling
    with opening.interrupted(path):
        result = train_autoencoder(
            model,
            backbone,
            data,
            config.model,
            config.pretrain.model_copy(update={"learning_rate": rate}),
            config.train,
            path,
            opening.console,
            resume=opening.state,
        )
    opening.save_model(path, encoder_model(model))
    metrics: dict[str, Any] = {"kind": rundir.PRETRAIN, "objective": config.pretrain.objective}
    metrics.update(final_metrics(model, data))
    _write_reconstructions(path, model, data, config, opening.console)
    return opening.finish(path, metrics, result)


STAGE = lifecycle.Stage(
    rundir.PRETRAIN, TRAINING, labels=False, check=_check_kind, train=_train, complete=with_defaults
)
pretrain = STAGE.start
"""Pretrain the configured backbone as an autoencoder's encoder, into a new run directory
(`config`: resolved; a null `pretrain` section means its defaults)."""
resume = STAGE.resume  # continue an unfinished pretrain run: resume(run_dir)


def _header(
    path: Path, config: Config, data: DataBundle, on: Any, spread: distribution.Distribution
) -> str:
    return (
        f"run directory [bold]{shown(path)}[/]\n"
        f"pretrain {backbones.get(config.model.backbone).name} "
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
