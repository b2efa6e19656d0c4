"""Run the configured phases in order on a built model.

Each phase: apply its freezing, compile again (a fresh optimizer and schedule: required after
any change of `trainable`, measured on Keras 3.15.1), fit, keep the best epoch's weights, and,
where BatchNorm trained, leave its statistics exact over the training images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import rundir, runtime
from transferctl.config.schema import Model, Train
from transferctl.data import DataBundle
from transferctl.model.batchnorm import recompute_statistics
from transferctl.model.freezing import FreezeReport, apply_freeze
from transferctl.train import callbacks as cb
from transferctl.train.optimizers import make_optimizer


@dataclass
class PhaseResult:
    name: str
    epochs_run: int
    best_epoch: int | None
    freeze: FreezeReport
    batchnorm_recomputed: int


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    phases: list[PhaseResult] = field(default_factory=list)
    seconds: float = 0.0


def compile_model(model: Any, train: Train, learning_rate: float, steps: int, classes: int) -> None:
    keras = runtime.keras()
    model.compile(
        optimizer=make_optimizer(train, learning_rate, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=min(5, classes), name="top_5_accuracy"),
        ],
    )


def train(
    model: Any,
    backbone: Any,
    data: DataBundle,
    model_config: Model,
    train_config: Train,
    run_dir: Path,
    console: Console | None,
) -> TrainResult:
    """The training stage. Writes history.csv, checkpoints/ and tensorboard/ as it goes."""
    keras = runtime.keras()
    result = TrainResult()
    started = time.perf_counter()
    total_epochs = sum(phase.epochs for phase in train_config.phases)
    has_val = data.has("val")
    validation = data.plain("val") if has_val else None
    monitor = (train_config.early_stopping.monitor if train_config.early_stopping else None) or (
        "val_loss" if has_val else "loss"
    )
    epoch = 0
    for index, phase in enumerate(train_config.phases):
        where = f"train.phases.{index}.freeze" if phase.freeze else "model.freeze"
        freeze = phase.freeze or model_config.freeze
        report = apply_freeze(model, backbone, freeze, bool(model_config.train_batchnorm), where)
        steps = data.steps("train") * phase.epochs
        compile_model(model, train_config, phase.learning_rate, steps, data.num_classes)

        batchnorm_trains = report.trainable_batchnorm_layers > 0

        def batchnorm_images() -> Any:
            return data.plain("train")

        best = cb.BestWeights(monitor)
        callbacks: list[Any] = [
            cb.EpochValidation(
                validation, batchnorm_images if batchnorm_trains and has_val else None
            ),
            best,
        ]
        if train_config.early_stopping is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=train_config.early_stopping.monitor,
                    patience=train_config.early_stopping.patience,
                    min_delta=train_config.early_stopping.min_delta,
                )
            )
        callbacks += [
            cb.HistoryWriter(run_dir / rundir.HISTORY, phase.name, result.history),
            cb.EpochCheckpoint(run_dir / rundir.CHECKPOINTS, index, phase.name),
            keras.callbacks.TensorBoard(
                log_dir=str(run_dir / rundir.TENSORBOARD / phase.name),
                write_graph=False,
                profile_batch=0,
            ),
        ]
        if console is not None:
            console.print(
                f"phase [bold]{phase.name}[/]: {phase.epochs} epoch(s) at learning rate "
                f"{phase.learning_rate:g}; backbone layers frozen {report.frozen_layers}, "
                f"trainable {report.trainable_layers}; trainable parameters "
                f"{report.trainable_params:,}"
                + (" (BatchNorm trains)" if batchnorm_trains else ""),
                highlight=False,
            )
            callbacks.append(
                cb.ProgressDisplay(
                    console,
                    phase.name,
                    epoch,
                    phase.epochs,
                    total_epochs,
                    data.steps("train"),
                )
            )
        fit_history = model.fit(
            data.training(),
            epochs=epoch + phase.epochs,
            initial_epoch=epoch,
            callbacks=callbacks,
            verbose=0,
        )
        epochs_run = len(fit_history.epoch)
        epoch += epochs_run
        best_epoch = best.restore() if train_config.restore_best else None
        recomputed = 0
        if batchnorm_trains and (not has_val or best_epoch is None):
            # With validation the statistics were recomputed before each scored epoch and the
            # best epoch's weights carry them; otherwise recompute now, once.
            recomputed = recompute_statistics(model, batchnorm_images())
        elif batchnorm_trains:
            recomputed = report.trainable_batchnorm_layers
        result.phases.append(
            PhaseResult(
                name=phase.name,
                epochs_run=epochs_run,
                best_epoch=None if best_epoch is None else best_epoch + 1,
                freeze=report,
                batchnorm_recomputed=recomputed,
            )
        )
    result.seconds = time.perf_counter() - started
    return result
