"""Train the autoencoder for `pretrain.epochs`, resumable after any kill.

The same machinery as a finetune phase (`train/loop.py`): weights, optimizer state and training
state committed to `checkpoints/` after every epoch (`EpochCheckpoint`), history.csv rewritten
atomically (`HistoryWriter`, accuracy columns empty), a NaN loss stops with the last good
checkpoint kept (`NaNGuard`), the best epoch by validation loss restored (`BestWeights`,
`train.restore_best`), and, where BatchNorm trains, its statistics recomputed exactly over the
training images before every validation and at the end (`EpochValidation`). A resumed run
re-enters at its epoch with the optimizer state and the best epoch so far.
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
from transferctl.errors import TrainingFailed
from transferctl.model.autoencoder import as_reconstruction
from transferctl.model.batchnorm import recompute_statistics
from transferctl.model.freezing import apply_freeze
from transferctl.rundir import layout as rundir
from transferctl.train import callbacks as cb
from transferctl.train import checkpoint
from transferctl.train.checkpoint import TrainState
from transferctl.train.loop import TrainResult, read_history
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
    folder = run_dir / rundir.CHECKPOINTS
    state = resume or TrainState()
    result = TrainResult(history=read_history(run_dir / rundir.HISTORY, state.epochs_done))
    started = time.perf_counter()
    has_val = data.has("val")
    monitor = "val_loss" if has_val else "loss"
    report = apply_freeze(
        model, backbone, Freeze(mode="none"), bool(model_config.train_batchnorm), "model.freeze"
    )
    batchnorm_trains = report.trainable_batchnorm_layers > 0
    validation = as_reconstruction(data.plain("val")) if has_val else None

    def batchnorm_images() -> Any:
        return data.plain("train")

    compile_autoencoder(
        model, train_config, pretrain.learning_rate, data.steps("train") * pretrain.epochs
    )
    model.optimizer.build(model.trainable_variables)
    best_weights = None
    resuming = state.weights is not None
    if resuming:
        if state.best_weights is not None:
            model.load_weights(str(folder / state.best_weights))
            best_weights = model.get_weights()
        assert state.weights is not None
        model.load_weights(str(folder / state.weights))  # model + optimizer state
    else:
        checkpoint.save(model, folder, state)
    best = cb.BestWeights(monitor, state.best_value, state.best_epoch, best_weights)
    best.set_model(model)  # restore() may run with no fit: killed right after the last epoch
    guard = cb.NaNGuard()
    callbacks: list[Any] = [
        guard,
        cb.EpochValidation(validation, batchnorm_images if batchnorm_trains and has_val else None),
        best,
        cb.HistoryWriter(run_dir / rundir.HISTORY, PHASE, result.history),
        cb.EpochCheckpoint(
            folder,
            state,
            best,
            guard,
            None,
            train_config.checkpoint_every,
            state.steps_done if resuming else 0,
        ),
        cb.tensorboard(run_dir / rundir.TENSORBOARD / PHASE),
    ]
    if console is not None:
        console.print(
            f"{PHASE}: {pretrain.epochs} epoch(s) at learning rate {pretrain.learning_rate:g}, "
            f"sparsity {pretrain.sparsity:g}, noise {pretrain.noise:g}; trainable parameters "
            f"{report.trainable_params:,}"
            + (" (BatchNorm trains)" if batchnorm_trains else "")
            + (f"; resuming at epoch {state.epochs_done + 1}" if resuming else ""),
            highlight=False,
        )
        callbacks.append(
            cb.ProgressDisplay(
                console, PHASE, 0, pretrain.epochs, pretrain.epochs, data.steps("train")
            )
        )
    if state.steps_done and state.epochs_done < pretrain.epochs:
        # killed mid-epoch after a step checkpoint: train the rest of that epoch first
        model.fit(
            _training(data, state.epochs_done).skip(state.steps_done),
            epochs=state.epochs_done + 1,
            initial_epoch=state.epochs_done,
            callbacks=callbacks,
            verbose=0,
        )
    if guard.failure is None and state.epochs_done < pretrain.epochs:
        model.fit(
            _training(data, state.epochs_done),
            epochs=pretrain.epochs,
            initial_epoch=state.epochs_done,
            callbacks=callbacks,
            verbose=0,
        )
    if guard.failure is not None:
        epoch, batch, loss = guard.failure
        raise TrainingFailed(
            f"pretrain: the loss became {loss} in epoch {epoch + 1}, batch {batch + 1}; training "
            f"stopped and the last good checkpoint is kept in {folder}; lower "
            "pretrain.learning_rate and start again, or resume with a changed config and --force"
        )
    best_epoch = best.restore() if train_config.restore_best else None
    recomputed = 0
    if batchnorm_trains and (not has_val or best_epoch is None):
        recomputed = recompute_statistics(model, batchnorm_images())
    elif batchnorm_trains:
        recomputed = report.trainable_batchnorm_layers  # exact when the best epoch was scored
    result.phases = [
        {
            "name": PHASE,
            "epochs_run": state.epochs_done,
            "best_epoch": None if best_epoch is None else best_epoch + 1,
            "trainable_params": report.trainable_params,
            "batchnorm_layers_recomputed": recomputed,
        }
    ]
    result.seconds = time.perf_counter() - started
    return result


def _training(data: DataBundle, epochs_done: int) -> Any:
    """Shuffled, augmented (input, target) batches; a resumed run draws a new, seeded order."""
    if epochs_done > 0:
        data = dataclasses.replace(data, seed=data.seed + 1000 * epochs_done)
    return as_reconstruction(data.training())
