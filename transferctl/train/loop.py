"""Run the configured phases in order on a built model, resumable after any kill.

Each phase: apply its freezing, compile again (a fresh optimizer and schedule: required after
any change of `trainable`, measured on Keras 3.15.1), commit a checkpoint, fit, keep the best
epoch's weights, and, where BatchNorm trained, leave its statistics exact over the training
images. A resumed run re-enters the phase it was in, with the optimizer state, the schedule's
position (the optimizer's step count), the best epoch so far and early stopping's count.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import runtime
from transferctl.config.schema import Model, Phase, Train
from transferctl.data import DataBundle
from transferctl.distribute import strategy as distribution
from transferctl.errors import TrainingFailed
from transferctl.model.batchnorm import (
    EPOCH_STATISTICS_IMAGES,
    PHASE_STATISTICS_IMAGES,
    recompute_statistics,
    statistics_images,
)
from transferctl.model.freezing import apply_freeze, frozen_indices, release_top
from transferctl.rundir import layout as rundir
from transferctl.runtime import speed
from transferctl.train import callbacks as cb
from transferctl.train import checkpoint, head_start, layer_rates, unfreeze
from transferctl.train.checkpoint import TrainState
from transferctl.train.optimizers import make_optimizer


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def compile_model(
    model: Any,
    train: Train,
    learning_rate: float,
    steps: int,
    classes: int,
    rate_factors: dict[str, float] | None = None,
    step_offset: int = 0,
) -> None:
    """Compile for a phase (`make_optimizer` documents `rate_factors` and `step_offset`)."""
    keras = runtime.keras()
    model.compile(
        optimizer=make_optimizer(train, learning_rate, steps, rate_factors, step_offset),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=min(5, classes), name="top_5_accuracy"),
        ],
        jit_compile=speed.jit_compile(runtime.device(), distribution.distributed_now()),
    )


def compile_step(
    model: Any,
    train: Train,
    phase: Phase,
    steps_per_epoch: int,
    classes: int,
    rate_factors: dict[str, float],
    step: unfreeze.Step,
) -> None:
    """Compile for one step of a phase and build the optimizer: the schedule spans the whole
    phase, so a later step of gradual unfreezing starts it where the step before left it."""
    steps = steps_per_epoch * phase.epochs
    offset = step.first_epoch * steps_per_epoch
    compile_model(model, train, phase.learning_rate, steps, classes, rate_factors, offset)
    model.optimizer.build(model.trainable_variables)


def train(
    model: Any,
    backbone: Any,
    data: DataBundle,
    model_config: Model,
    train_config: Train,
    run_dir: Path,
    console: Console | None,
    resume: TrainState | None = None,
    class_weight: dict[int, float] | None = None,
    teacher: Any = None,
) -> TrainResult:
    """The training stage. Writes history.csv, checkpoints/ and tensorboard/ as it goes.

    With a `teacher` (`distill.load_teacher`), every phase distils from it.
    """
    folder = run_dir / rundir.CHECKPOINTS
    state = resume or TrainState()
    result = TrainResult(history=read_history(run_dir / rundir.HISTORY, state.epochs_done))
    result.phases = list(state.phases_done)
    started = time.perf_counter()
    has_val = data.has("val")
    stopping = train_config.early_stopping
    monitor = stopping.monitor if stopping else ("val_loss" if has_val else "loss")
    total_epochs = sum(phase.epochs for phase in train_config.phases)
    # where BatchNorm trains, its statistics before each validation: one fixed sample, decoded once
    epoch_images = statistics_images(data, EPOCH_STATISTICS_IMAGES, cache=True)
    on, spread = runtime.device(), distribution.distributed_now()

    def fed(
        dataset: Any,
    ) -> Any:  # prefetched to the GPU where runtime.speed decides so
        return speed.feed(dataset, on, spread, class_weighted=class_weight is not None)

    for index, phase in enumerate(train_config.phases):
        if index < state.phase_index:
            continue
        resuming_here = state.weights is not None and index == state.phase_index
        where = f"train.phases.{index}.freeze" if phase.freeze else "model.freeze"
        freeze = phase.freeze or model_config.freeze
        train_batchnorm = bool(model_config.train_batchnorm)
        report = apply_freeze(model, backbone, freeze, train_batchnorm, where)
        # gradual unfreezing: one fit per step; a resume re-enters the step whose optimizer
        # wrote the checkpoint (a later step starts from it as it would have without a kill)
        schedule = unfreeze.schedule(phase.epochs, phase.unfreeze, report.frozen_layers)
        step = schedule[0]
        frozen_at_end = release_top(frozen_indices(backbone, freeze, where), schedule[-1].released)
        training = set(range(len(backbone.layers))) - frozen_at_end  # by the phase's end
        if resuming_here:
            epoch_in_phase = state.epochs_done - state.phase_start_epoch
            step = unfreeze.checkpoint_step(schedule, epoch_in_phase, state.steps_done)
            if step.released:
                report = apply_freeze(
                    model, backbone, freeze, train_batchnorm, where, step.released
                )
        inputs = head_start.prepare(
            model,
            backbone,
            data,
            model_config,
            train_config,
            index,
            report.trainable_layers == 0,
            resuming_here,
            folder,
            console,
            teacher,
        )
        fit_model = inputs.fit_model  # the model itself, or its head on cached features
        validation = inputs.validation(data)
        steps_per_epoch = data.steps("train")
        steps = steps_per_epoch * phase.epochs
        factors = layer_rates.rate_factors(backbone, phase)

        compile_step(
            fit_model, train_config, phase, steps_per_epoch, data.num_classes, factors, step
        )
        best_weights = None
        if resuming_here:
            if state.best_weights is not None:
                load_model_weights(fit_model, folder / state.best_weights)
                best_weights = fit_model.get_weights()
            assert state.weights is not None
            fit_model.load_weights(str(folder / state.weights))  # model + optimizer state
        else:
            state = TrainState(
                phase_index=index,
                phase_start_epoch=state.epochs_done,
                epochs_done=state.epochs_done,
                phases_done=state.phases_done,
            )
            if inputs.probe_started and validation is not None:
                # the probe's solution is the phase's first candidate for its best epoch
                scores = fit_model.evaluate(validation, verbose=0, return_dict=True)
                state.best_value = float(scores[monitor.removeprefix("val_")])
                state.best_epoch = state.epochs_done - 1
                best_weights = fit_model.get_weights()
            checkpoint.save(fit_model, folder, state, best_model_weights=best_weights is not None)
        batchnorm_trains = report.trainable_batchnorm_layers > 0

        def batchnorm_images() -> Any:
            return epoch_images

        best = cb.BestWeights(monitor, state.best_value, state.best_epoch, best_weights)
        best.set_model(fit_model)  # restore() may run with no fit: killed right after a phase
        guard = cb.NaNGuard()
        early: cb.ResumableEarlyStopping | None = None
        if stopping is not None:
            early = cb.ResumableEarlyStopping(
                monitor=stopping.monitor,
                patience=stopping.patience,
                min_delta=stopping.min_delta,
                wait=state.early_stopping_wait,
                best=state.early_stopping_best,
            )
        validating = cb.EpochValidation(
            validation, batchnorm_images if batchnorm_trains and has_val else None
        )
        callbacks: list[Any] = [
            guard,
            validating,
            best,
            *([early] if early is not None else []),
            cb.HistoryWriter(
                run_dir / rundir.HISTORY,
                phase.label,
                result.history,
                # the one pass over the images is part of what the phase's first epoch cost
                extra_seconds=0.0
                if resuming_here
                else inputs.summary["feature_cache"].get("seconds", 0.0),
            ),
            cb.EpochCheckpoint(
                folder,
                state,
                best,
                guard,
                early,
                train_config.checkpoint_every,
                state.steps_done if resuming_here else 0,
            ),
            cb.tensorboard(run_dir / rundir.TENSORBOARD / phase.label),
        ]
        end_epoch = state.phase_start_epoch + phase.epochs
        if console is not None:
            console.print(
                f"phase [bold]{phase.label}[/]: {phase.epochs} epoch(s) at learning rate "
                f"{phase.learning_rate:g}; backbone layers frozen {report.frozen_layers}, "
                f"trainable {report.trainable_layers}; trainable parameters "
                f"{report.trainable_params:,}"
                + (" (BatchNorm trains)" if batchnorm_trains else "")
                + (f"; resuming at epoch {state.epochs_done + 1}" if resuming_here else ""),
                highlight=False,
            )
            if len(schedule) > 1 or factors:
                console.print(
                    _method_line(backbone, phase, schedule, training, state), highlight=False
                )
            callbacks.append(
                cb.ProgressDisplay(
                    console,
                    phase.label,
                    state.phase_start_epoch,
                    phase.epochs,
                    total_epochs,
                    data.steps("train"),
                )
            )
        for next_step in schedule:
            step_end = state.phase_start_epoch + next_step.end_epoch
            if guard.failure is not None or state.phase_stopped or state.epochs_done >= end_epoch:
                break
            if state.epochs_done >= step_end:
                continue  # trained before a resume
            if next_step != step:  # gradual unfreezing: more layers train; Keras must recompile
                newly, step = next_step.released - step.released, next_step
                report = apply_freeze(
                    model, backbone, freeze, train_batchnorm, where, step.released
                )
                compile_step(
                    fit_model, train_config, phase, steps_per_epoch, data.num_classes, factors, step
                )
                batchnorm_trains = report.trainable_batchnorm_layers > 0
                validating.batchnorm_images = (
                    batchnorm_images if batchnorm_trains and has_val else None
                )
                if console is not None:
                    console.print(
                        f"unfreezing: from epoch {state.epochs_done + 1}, {newly} more "
                        f"backbone layers train ({report.trainable_layers} in all); trainable "
                        f"parameters {report.trainable_params:,}; a fresh optimizer state",
                        highlight=False,
                    )
            if state.steps_done:
                # killed mid-epoch after a step checkpoint: train the rest of that epoch first
                fit_model.fit(
                    fed(inputs.training(data, state.epochs_done).skip(state.steps_done)),
                    epochs=state.epochs_done + 1,
                    initial_epoch=state.epochs_done,
                    callbacks=callbacks,
                    class_weight=class_weight,
                    verbose=0,
                )
                if early is not None:
                    early.initial_wait, early.initial_best = early.wait, early.best
            if guard.failure is None and not state.phase_stopped and state.epochs_done < step_end:
                fit_model.fit(
                    fed(inputs.training(data, state.epochs_done)),
                    epochs=step_end,
                    initial_epoch=state.epochs_done,
                    callbacks=callbacks,
                    class_weight=class_weight,
                    verbose=0,
                )
                if early is not None:
                    early.initial_wait, early.initial_best = early.wait, early.best
        if guard.failure is not None:
            epoch, batch, loss = guard.failure
            raise TrainingFailed(
                f"train.phases.{index}: the loss became {loss} in epoch {epoch + 1}, batch "
                f"{batch + 1}; training stopped and the last good checkpoint is kept in "
                f"{folder}; lower train.phases.{index}.learning_rate (or add label_smoothing) "
                "and start again, or resume with a changed config and --force"
            )
        best_epoch = best.restore() if train_config.restore_best else None
        head_start.release(inputs, folder)
        if fit_model is not model or factors or len(schedule) > 1:
            # the head trained alone (the whole model scores the splits), or the optimizer was
            # transferctl's (model.keras must hold plain Keras): compile the model plainly
            compile_model(model, train_config, phase.learning_rate, steps, data.num_classes)
        recomputed = 0
        if batchnorm_trains:  # the saved model's: over more images than each epoch's
            images = statistics_images(data, PHASE_STATISTICS_IMAGES)
            recomputed = recompute_statistics(model, images)
        state.phases_done.append(
            {
                "name": phase.label,
                "epochs_run": state.epochs_done - state.phase_start_epoch,
                "best_epoch": None if best_epoch is None else best_epoch + 1,
                "frozen_backbone_layers": report.frozen_layers,
                "trainable_params": report.trainable_params,
                "batchnorm_layers_recomputed": recomputed,
                **_method_summary(backbone, phase, schedule, training),
                **inputs.summary,
            }
        )
        result.phases = list(state.phases_done)
        state = TrainState(
            phase_index=index + 1,
            phase_start_epoch=state.epochs_done,
            epochs_done=state.epochs_done,
            phases_done=state.phases_done,
        )
    result.seconds = time.perf_counter() - started
    return result


def load_model_weights(model: Any, path: Path) -> None:
    """Load weights saved with an optimizer state that may not fit the model's optimizer now
    (the best epoch of an earlier step of gradual unfreezing): the model's weights load, the
    optimizer's are skipped, which is what is wanted here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(str(path))


def _method_line(
    backbone: Any, phase: Phase, schedule: list[unfreeze.Step], training: set[int], state: Any
) -> str:
    """The console's line on the phase's gradual unfreezing and learning rates."""
    parts = []
    if len(schedule) > 1:
        start = state.phase_start_epoch
        parts.append(
            "gradual unfreezing, frozen layers released (from the top) by epoch: "
            + ", ".join(f"{start + s.first_epoch + 1}: {s.released}" for s in schedule)
        )
    if layer_rates.scales_rates(phase):
        parts.append(
            "learning rates " + layer_rates.phase_rates(backbone, phase, training).describe()
        )
    return "; ".join(parts)


def _method_summary(
    backbone: Any, phase: Phase, schedule: list[unfreeze.Step], training: set[int]
) -> dict[str, Any]:
    """What metrics.json records of the phase's unfreezing and rates (nothing when unused);
    the rates over the backbone layers `training` by the phase's end."""
    summary: dict[str, Any] = {}
    if len(schedule) > 1:
        summary["unfreeze"] = [
            {"from_epoch": s.first_epoch + 1, "layers_released": s.released} for s in schedule
        ]
    if layer_rates.scales_rates(phase):
        rates = layer_rates.phase_rates(backbone, phase, training)
        summary["learning_rates"] = rates.describe()
    return summary


def read_history(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """The rows of an existing history.csv up to `upto_epoch` (a resumed run drops the rest)."""
    if upto_epoch <= 0 or not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= upto_epoch]
    for row in rows:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"):
            value = row.get(key)
            row[key] = float(value) if value not in (None, "") else None
        row["epoch"] = int(row["epoch"])
        count = row.get("trainable_params")
        row["trainable_params"] = int(count) if count not in (None, "") else None
        if isinstance(row["loss"], float) and not math.isfinite(row["loss"]):
            row["loss"] = None
    return rows
