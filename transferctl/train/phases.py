"""One phase of a finetune run: its freezing, its inputs, its epochs, and what it leaves.

A phase applies its freezing, compiles again (a fresh optimizer and schedule: required after any
change of `trainable`, measured on Keras 3.15.1), trains its epochs through the epoch driver
(`train/driver.py`), one `fit` per step of gradual unfreezing, keeps the best epoch's weights
and, where BatchNorm trained, leaves its statistics exact over the training images. A resumed
run re-enters the phase it was in, at the step whose optimizer wrote the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import runtime
from transferctl.config.schema import Freeze, Model, Phase, Train
from transferctl.data import DataBundle
from transferctl.distribute import strategy as distribution
from transferctl.model.freezing import FreezeReport, apply_freeze, frozen_indices, release_top
from transferctl.rundir import layout as rundir
from transferctl.runtime import speed
from transferctl.train import driver, ema, head_start, kept, layer_rates, unfreeze
from transferctl.train.checkpoint import TrainState
from transferctl.train.head_start import PhaseInputs
from transferctl.train.optimizers import make_optimizer


@dataclass
class Run:
    """What every phase of one finetune run shares."""

    model: Any
    backbone: Any
    data: DataBundle
    model_config: Model
    train_config: Train
    run_dir: Path
    console: Console | None
    rows: list[dict[str, Any]]  # history.csv's rows so far
    sample: Any  # driver.epoch_sample: BatchNorm statistics before each validation
    class_weight: dict[int, float] | None = None
    teacher: Any = None

    @property
    def folder(self) -> Path:
        return self.run_dir / rundir.CHECKPOINTS

    @property
    def monitor(self) -> str:
        stopping = self.train_config.early_stopping
        return stopping.monitor if stopping else ("val_loss" if self.data.has("val") else "loss")


@dataclass
class Freezing:
    """A phase's freezing: the spec, gradual unfreezing's steps and the step training now."""

    freeze: Freeze
    where: str  # the config key that set `freeze`
    train_batchnorm: bool
    schedule: list[unfreeze.Step]
    step: unfreeze.Step
    report: FreezeReport
    training: set[int]  # backbone layers that train by the phase's end

    def release(self, run: Run, step: unfreeze.Step) -> None:
        """Train the layers `step` releases from the top of the frozen ones."""
        self.step = step
        self.report = apply_freeze(
            run.model, run.backbone, self.freeze, self.train_batchnorm, self.where, step.released
        )


def train_phase(run: Run, index: int, phase: Phase, state: TrainState) -> TrainState:
    """Train phase `index` from `state` (resumed within it, or at its start); the state at the
    start of the next phase, this one's summary in its `phases_done`."""
    resuming = state.weights is not None and index == state.phase_index
    freezing = _freezing(run, index, phase, state, resuming)
    backbone_frozen = freezing.report.trainable_layers == 0
    inputs = head_start.prepare(
        run.model,
        run.backbone,
        run.data,
        run.model_config,
        run.train_config,
        index,
        backbone_frozen,
        resuming,
        run.folder,
        run.console,
        run.teacher,
    )
    fit_model = inputs.fit_model  # the model itself, or its head on cached features
    validation = inputs.validation(run.data)
    factors = layer_rates.rate_factors(run.backbone, phase)
    _compile(run, fit_model, phase, factors, freezing.step)
    best_weights = None
    if not resuming:
        state = next_state(state, index)
        best_weights = _probe_as_best(run, inputs, validation, state)
    epochs = driver.start(
        fit_model,
        run.run_dir,
        state,
        _span(run, phase, state),
        resuming=resuming,
        validation=validation,
        sample=run.sample,
        batchnorm_trains=freezing.report.trainable_batchnorm_layers > 0,
        rows=run.rows,
        console=run.console,
        steps=run.data.steps("train"),
        best_weights=best_weights,
        # the one pass over the images is part of what the phase's first epoch cost
        extra_seconds=0.0 if resuming else inputs.summary["feature_cache"].get("seconds", 0.0),
        class_weight=run.class_weight,
    )
    _announce(run, phase, freezing, factors, state, resuming)
    _train_steps(run, phase, freezing, epochs, inputs, factors)
    where = f"train.phases.{index}"
    restore_best = run.train_config.restore_best
    best_epoch = epochs.end(
        where, f"{where}.learning_rate (or add label_smoothing)", restore_best is not False
    )
    state = _finish(run, phase, freezing, inputs, factors, state, best_epoch)
    kept.phase_ended(run.model, run.folder, state, _ended(run, index, phase, epochs), restore_best)
    return state


def _ended(run: Run, index: int, phase: Phase, epochs: driver.Epochs) -> kept.Kept:
    """What the phase leaves: its best epoch where it restored one, else its last."""
    best = epochs.best
    if run.train_config.restore_best is not False and best.best_epoch is not None:
        return kept.Kept(index, phase.label, best.best_epoch + 1, run.monitor, best.best)
    last = run.rows[-1] if run.rows else {}
    value = last.get(run.monitor)
    epoch = int(last["epoch"]) if "epoch" in last else None
    score = None if value is None else float(value)
    return kept.Kept(index, phase.label, epoch, run.monitor, score)


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


def next_state(state: TrainState, index: int) -> TrainState:
    """The state at the start of phase `index`, after the epochs and phases of `state`."""
    return TrainState(
        phase_index=index,
        phase_start_epoch=state.epochs_done,
        epochs_done=state.epochs_done,
        phases_done=state.phases_done,
        kept=state.kept,
    )


def _freezing(run: Run, index: int, phase: Phase, state: TrainState, resuming: bool) -> Freezing:
    """Apply the phase's freezing; gradual unfreezing: one fit per step, and a resume re-enters
    the step whose optimizer wrote the checkpoint (a later step starts from it as it would
    have without a kill)."""
    where = f"train.phases.{index}.freeze" if phase.freeze else "model.freeze"
    freeze = phase.freeze or run.model_config.freeze
    train_batchnorm = bool(run.model_config.train_batchnorm)
    report = apply_freeze(run.model, run.backbone, freeze, train_batchnorm, where)
    schedule = unfreeze.schedule(phase.epochs, phase.unfreeze, report.frozen_layers)
    frozen = frozen_indices(run.backbone, freeze, where)
    frozen_at_end = release_top(frozen, schedule[-1].released)
    training = set(range(len(run.backbone.layers))) - frozen_at_end  # by the phase's end
    freezing = Freezing(freeze, where, train_batchnorm, schedule, schedule[0], report, training)
    if resuming:
        epoch_in_phase = state.epochs_done - state.phase_start_epoch
        step = unfreeze.checkpoint_step(schedule, epoch_in_phase, state.steps_done)
        freezing.step = step
        if step.released:
            freezing.release(run, step)
    return freezing


def _compile(
    run: Run, fit_model: Any, phase: Phase, factors: dict[str, float], step: unfreeze.Step
) -> None:
    steps_per_epoch, classes = run.data.steps("train"), run.data.num_classes
    compile_step(fit_model, run.train_config, phase, steps_per_epoch, classes, factors, step)


def _probe_as_best(
    run: Run, inputs: PhaseInputs, validation: Any | None, state: TrainState
) -> list[Any] | None:
    """A head started from the linear probe: the probe's solution is the phase's first
    candidate for its best epoch (scored, and its weights, into `state`)."""
    if not inputs.probe_started or validation is None:
        return None
    scores = inputs.fit_model.evaluate(validation, verbose=0, return_dict=True)
    state.best_value = float(scores[run.monitor.removeprefix("val_")])
    state.best_epoch = state.epochs_done - 1
    weights: list[Any] = inputs.fit_model.get_weights()
    return weights


def _span(run: Run, phase: Phase, state: TrainState) -> driver.Span:
    return driver.Span(
        phase.label,
        state.phase_start_epoch,
        phase.epochs,
        sum(each.epochs for each in run.train_config.phases),
        run.monitor,
        run.train_config.early_stopping,
        run.train_config.checkpoint_every,
    )


def _announce(
    run: Run,
    phase: Phase,
    freezing: Freezing,
    factors: dict[str, float],
    state: TrainState,
    resuming: bool,
) -> None:
    """The phase's line on the console, and its method line (unfreezing, rates) when used."""
    if run.console is None:
        return
    report = freezing.report
    run.console.print(
        f"phase [bold]{phase.label}[/]: {phase.epochs} epoch(s) at learning rate "
        f"{phase.learning_rate:g}; backbone layers frozen {report.frozen_layers}, "
        f"trainable {report.trainable_layers}; " + driver.what_trains(report, state, resuming),
        highlight=False,
    )
    if len(freezing.schedule) > 1 or factors:
        line = _method_line(run.backbone, phase, freezing.schedule, freezing.training, state)
        run.console.print(line, highlight=False)
    note = ema.short_phase_note(run.train_config.ema, run.data.steps("train") * phase.epochs)
    if note is not None:
        run.console.print(f"[yellow]note:[/] {note}", highlight=False)


def _train_steps(
    run: Run,
    phase: Phase,
    freezing: Freezing,
    epochs: driver.Epochs,
    inputs: PhaseInputs,
    factors: dict[str, float],
) -> None:
    """The phase's epochs: one fit per step of gradual unfreezing (one step without it)."""
    state = epochs.state
    end_epoch = state.phase_start_epoch + phase.epochs
    for step in freezing.schedule:
        step_end = state.phase_start_epoch + step.end_epoch
        if epochs.stopped or state.epochs_done >= end_epoch:
            break
        if state.epochs_done >= step_end:
            continue  # trained before a resume
        if step != freezing.step:  # gradual unfreezing: more layers train; Keras must recompile
            newly = step.released - freezing.step.released
            freezing.release(run, step)
            _compile(run, inputs.fit_model, phase, factors, step)
            report = freezing.report
            epochs.batchnorm_trains(report.trainable_batchnorm_layers > 0)
            if run.console is not None:
                run.console.print(
                    f"unfreezing: from epoch {state.epochs_done + 1}, {newly} more "
                    f"backbone layers train ({report.trainable_layers} in all); trainable "
                    f"parameters {report.trainable_params:,}; a fresh optimizer state",
                    highlight=False,
                )
        epochs.fit(lambda done: inputs.training(run.data, done), step_end)


def _finish(
    run: Run,
    phase: Phase,
    freezing: Freezing,
    inputs: PhaseInputs,
    factors: dict[str, float],
    state: TrainState,
    best_epoch: int | None,
) -> TrainState:
    """After the phase's epochs: the model as it is saved (compiled plainly, BatchNorm exact),
    the phase's summary, and the state at the next phase's start."""
    head_start.release(inputs, run.folder)
    if inputs.fit_model is not run.model or factors or len(freezing.schedule) > 1:
        # the head trained alone (the whole model scores the splits), or the optimizer was
        # transferctl's (model.keras must hold plain Keras): compile the model plainly
        steps = run.data.steps("train") * phase.epochs
        rate, classes = phase.learning_rate, run.data.num_classes
        compile_model(run.model, run.train_config, rate, steps, classes)
    report = freezing.report
    batchnorm_trained = report.trainable_batchnorm_layers > 0
    recomputed = driver.exact_statistics(run.model, run.data, batchnorm_trained)
    state.phases_done.append(
        {
            "name": phase.label,
            "epochs_run": state.epochs_done - state.phase_start_epoch,
            "best_epoch": None if best_epoch is None else best_epoch + 1,
            "frozen_backbone_layers": report.frozen_layers,
            "trainable_params": report.trainable_params,
            "batchnorm_layers_recomputed": recomputed,
            **_method_summary(run.backbone, phase, freezing.schedule, freezing.training),
            **inputs.summary,
        }
    )
    return next_state(state, state.phase_index + 1)


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
