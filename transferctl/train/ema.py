"""`train.ema`: an exponential moving average of the weights, which validation, the best epoch,
the checkpoints and model.keras use.

The average is Keras's own: the optimizer's `use_ema` / `ema_momentum` keeps one average variable
per trainable variable and updates it after every step (`average = ema * average + (1 - ema) *
weights`; Keras's first step copies the weights). `Averaging`, one callback, swaps the averages
into the model at the end of each epoch, before anything looks at it: BatchNorm statistics and
validation (`EpochValidation`), the best epoch's copy (`BestWeights`), the checkpoint
(`EpochCheckpoint`). The raw weights wait in the average variables meanwhile, and go back into
the model before the next epoch trains.

So between epochs, and in every checkpoint, the model holds the average and the optimizer's
average variables the raw weights. A resumed run loads both (they are the optimizer's state in
the weights file) and swaps them back when `fit` begins: it continues with the same average and
the same raw weights, bit for bit. A step checkpoint (`train.checkpoint_every`) is written in
the same state (`Averaging.averaged`).

What Keras's `SwapEMAWeights` does differently, and why it is not used as is: it swaps by adding
and subtracting (`a + b - b` loses the low bits of a small weight beside a large one), and at the
end of `fit` Keras's `finalize_variable_values` overwrites the model with the average variables,
which after a swap hold the raw weights (and an epoch that early stopping ends is not its last).
Here the swap copies, and `finalize_variable_values` is turned off for the optimizer, since the
model already holds the average.

A fresh optimizer (each phase, each step of gradual unfreezing) starts a new average from the
model as it is (the previous average, or the phase's best epoch).

Example:
    optimizer = keras.optimizers.Adam(1e-3, **optimizer_options(0.999))
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    model.fit(batches, epochs=5, callbacks=callbacks(model))  # model now holds the average
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from transferctl import runtime

keras = runtime.keras()
Callback: Any = keras.callbacks.Callback


def optimizer_options(decay: float | None) -> dict[str, Any]:
    """The optimizer's keyword arguments for `train.ema` (none when it is off)."""
    if decay is None:
        return {}
    if not 0.0 < decay < 1.0:
        raise ValueError(f"`decay` must be between 0 and 1. Received: decay={decay}")
    return {"use_ema": True, "ema_momentum": decay}


def short_phase_note(decay: float | None, steps: int) -> str | None:
    """A line for the console when a phase's `steps` are too few for the average to move far
    from where the phase started (the start still weighs `decay ** steps`), else None."""
    if decay is None or steps * (1.0 - decay) >= 1.0:
        return None
    return (
        f"train.ema {decay:g} averages over about {1.0 / (1.0 - decay):.0f} steps and this phase "
        f"has {steps}: at its end the phase's starting weights still make "
        f"{decay**steps:.0%} of the average; a smaller ema follows training closer"
    )


def averaging_optimizer(model: Any) -> Any | None:
    """The optimizer of `model` that keeps a moving average (inside a loss-scale optimizer
    too), or None."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return optimizer if getattr(optimizer, "use_ema", False) else None


def callbacks(model: Any) -> list[Any]:
    """`[Averaging()]` when `model`'s optimizer averages, else `[]`."""
    return [Averaging()] if averaging_optimizer(model) is not None else []


class Averaging(Callback):
    """Swap the moving average into the model at each epoch's end; the raw weights back in
    before the next epoch trains (see the module docstring).

    Put it before the callbacks that validate, keep or save the model at an epoch's end. It
    follows `self.model.optimizer`, which may change between two `fit` calls (a recompile).
    """

    def __init__(self) -> None:
        super().__init__()
        self.raw_in_model = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = self._optimizer()
        optimizer.finalize_variable_values = _keep_the_model  # the model holds the average
        if int(optimizer.iterations.numpy()) == 0:
            # a fresh optimizer: the average starts as the weights are (Keras's first step
            # would copy them too); a checkpoint written now must hold them on both sides
            for variable, average in _pairs(optimizer):
                average.assign(variable)
        else:
            _swap(optimizer)  # a resumed or continued fit: the raw weights back in
        self.raw_in_model = True

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.raw_in_model:
            _swap(self._optimizer())
            self.raw_in_model = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.raw_in_model:
            _swap(self._optimizer())
            self.raw_in_model = False

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.on_epoch_end(-1)  # stopped mid-epoch (a NaN loss): the average in, as always

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The average in the model for the block (a step checkpoint mid-epoch)."""
        swapped = self.raw_in_model
        if swapped:
            _swap(self._optimizer())
        try:
            yield
        finally:
            if swapped:
                _swap(self._optimizer())

    def _optimizer(self) -> Any:
        optimizer = averaging_optimizer(self.model)
        if optimizer is None:
            raise ValueError("`Averaging` needs a model compiled with an optimizer using `use_ema`")
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        return optimizer


def _keep_the_model(var_list: Any) -> None:
    """The optimizer's `finalize_variable_values`, turned off (see the module docstring)."""


def _pairs(optimizer: Any) -> list[tuple[Any, Any]]:
    """(trainable variable, its average), for the variables the optimizer was built with."""
    averages = optimizer._model_variables_moving_average
    variables = optimizer._trainable_variables
    return [(v, a) for v, a in zip(variables, averages, strict=True) if a is not None]


def _swap(optimizer: Any) -> None:
    """Exchange the model's trainable weights and their averages, by copy (exact)."""
    for variable, average in _pairs(optimizer):
        raw = keras.ops.convert_to_numpy(variable)
        variable.assign(average)
        average.assign(raw)
