"""Train the autoencoder for `pretrain.epochs`, resumable after any kill.

The epoch driver of a finetune phase (`train/driver.py`) trains it: weights, optimizer state and
training state committed to `checkpoints/` after every epoch, history.csv rewritten atomically
(accuracy columns empty), a NaN loss stops with the last good checkpoint kept, the best epoch by
validation loss restored (`train.restore_best`), and, where BatchNorm trains, its statistics
recomputed over a fixed sample of training images before every validation and exactly at the
end, as in finetune. A resumed run re-enters at its epoch with the optimizer state and the best
epoch so far.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import runtime
from transferctl.config.schema import Freeze, Model, Pretrain, Train
from transferctl.data import DataBundle
from transferctl.model.autoencoder import as_reconstruction
from transferctl.model.freezing import FreezeReport, apply_freeze
from transferctl.rundir import layout as rundir
from transferctl.train import driver
from transferctl.train.checkpoint import TrainState
from transferctl.train.driver import TrainResult, read_history
from transferctl.train.optimizers import make_optimizer

PHASE = "pretrain"  # the phase column of history.csv, and the tensorboard/ folder


def compile_autoencoder(model: Any, train: Train, learning_rate: float, steps: int) -> None:
    """Mean squared error against the input in [0, 1]; `mse` is the reconstruction error alone
    (the loss also holds the sparsity penalty). The optimizer is `train.optimizer`'s."""
    keras = runtime.keras()
    model.compile(
        optimizer=make_optimizer(train, learning_rate, steps),
        loss=keras.losses.MeanSquaredError(),
        metrics=[keras.metrics.MeanSquaredError(name="mse")],
    )


def train_autoencoder(
    model: Any,
    backbone: Any,
    data: DataBundle,
    model_config: Model,
    pretrain: Pretrain,
    train_config: Train,
    run_dir: Path,
    console: Console | None,
    resume: TrainState | None = None,
) -> TrainResult:
    """The training stage of pretrain. Writes history.csv, checkpoints/ and tensorboard/.

    Every backbone layer trains; BatchNorm as `model.train_batchnorm` says. From `train`, only
    the optimizer settings, `restore_best` and `checkpoint_every` apply.
    """
    state = resume or TrainState()
    result = TrainResult(history=read_history(run_dir / rundir.HISTORY, state.epochs_done))
    started = time.perf_counter()
    has_val = data.has("val")
    report = apply_freeze(
        model, backbone, Freeze(mode="none"), bool(model_config.train_batchnorm), "model.freeze"
    )
    batchnorm_trains = report.trainable_batchnorm_layers > 0
    steps = data.steps("train")
    compile_autoencoder(model, train_config, pretrain.learning_rate, steps * pretrain.epochs)
    model.optimizer.build(model.trainable_variables)
    resuming = state.weights is not None
    monitor, every = "val_loss" if has_val else "loss", train_config.checkpoint_every
    span = driver.Span(PHASE, 0, pretrain.epochs, pretrain.epochs, monitor, None, every)
    epochs = driver.start(
        model,
        run_dir,
        state,
        span,
        resuming=resuming,
        validation=as_reconstruction(data.plain("val")) if has_val else None,
        sample=driver.epoch_sample(data),
        batchnorm_trains=batchnorm_trains,
        rows=result.history,
        console=console,
        steps=steps,
    )
    _announce(console, pretrain, report, state, resuming)
    epochs.fit(lambda done: _training(data, done), pretrain.epochs)
    best_epoch = epochs.end(PHASE, "pretrain.learning_rate", train_config.restore_best is not False)
    result.phases = [
        {
            "name": PHASE,
            "epochs_run": state.epochs_done,
            "best_epoch": None if best_epoch is None else best_epoch + 1,
            "trainable_params": report.trainable_params,
            "batchnorm_layers_recomputed": driver.exact_statistics(model, data, batchnorm_trains),
        }
    ]
    result.seconds = time.perf_counter() - started
    return result


def _announce(
    console: Console | None,
    pretrain: Pretrain,
    report: FreezeReport,
    state: TrainState,
    resuming: bool,
) -> None:
    if console is not None:
        console.print(
            f"{PHASE}: {pretrain.epochs} epoch(s) at learning rate {pretrain.learning_rate:g}, "
            f"sparsity {pretrain.sparsity:g}, noise {pretrain.noise:g}; "
            + driver.what_trains(report, state, resuming),
            highlight=False,
        )


def _training(data: DataBundle, epochs_done: int) -> Any:
    """Shuffled, augmented (input, target) batches; a resumed run draws a new, seeded order."""
    if epochs_done > 0:
        data = dataclasses.replace(data, seed=data.seed + 1000 * epochs_done)
    return as_reconstruction(data.training())
