"""Where one transferctl epoch's time goes: wall and CPU seconds of each part, in-process.

Runs `transferctl finetune` on the versus_plain.py job (the digits folder, MobileNetV2 from
scratch, 64 px, batch 32) inside this process, `--runs` times, with timers around the parts of
an epoch: the training batches (from the first callback's `on_epoch_begin` to the first
`on_epoch_end`), the BatchNorm statistics pass, validation, best weights, history, checkpoint
and TensorBoard. CPU seconds are the process's (both cores count). A training part whose wall
time exceeds half its CPU time by far was spent idle, not computing: that is how the
tf.data iterator wait (bench/README.md, "Idle epochs") was found. Prints a Markdown table.

    .venv/bin/python bench/epoch_parts.py [--runs 2] [--epochs 4]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_digits_folder  # noqa: E402
from versus_plain import transferctl_config  # noqa: E402

Timings = dict[str, list[tuple[float, float]]]


def timed(parts: Timings, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            parts[name].append((time.perf_counter() - wall, time.process_time() - cpu))

    return wrapper


def instrument(parts: Timings) -> None:
    """Wrap the parts of an epoch (the callbacks' epoch hooks) with timers."""
    from transferctl.train import callbacks as cb

    cb.recompute_statistics = timed(parts, "BatchNorm statistics", cb.recompute_statistics)
    cb.EpochValidation.on_epoch_end = timed(
        parts, "statistics + validation", cb.EpochValidation.on_epoch_end
    )
    cb.BestWeights.on_epoch_end = timed(parts, "best weights", cb.BestWeights.on_epoch_end)
    cb.HistoryWriter.on_epoch_end = timed(parts, "history", cb.HistoryWriter.on_epoch_end)
    cb.EpochCheckpoint.on_epoch_end = timed(parts, "checkpoint", cb.EpochCheckpoint.on_epoch_end)
    board = cb.tensorboard

    def tensorboard(log_dir: Path) -> Any:
        callback = board(log_dir)
        callback.on_epoch_end = timed(parts, "tensorboard", callback.on_epoch_end)
        return callback

    cb.tensorboard = tensorboard
    started: list[float] = [0.0, 0.0]
    begin = cb.NaNGuard.on_epoch_begin

    def on_epoch_begin(self: Any, epoch: int, logs: Any = None) -> None:
        begin(self, epoch, logs)
        started[:] = [time.perf_counter(), time.process_time()]

    def on_epoch_end(self: Any, epoch: int, logs: Any = None) -> None:
        wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
        parts["training batches"].append((wall, cpu))

    cb.NaNGuard.on_epoch_begin = on_epoch_begin
    cb.NaNGuard.on_epoch_end = on_epoch_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    parts: Timings = defaultdict(list)
    instrument(parts)
    from transferctl.cli import app

    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        config = transferctl_config(write_digits_folder(work / "digits"), work, args)
        for _ in range(args.runs):
            app(["finetune", str(config), "--quiet"], standalone_mode=False)
    print(
        f"MobileNetV2 from scratch, {args.size} px, batch {args.batch}, {args.epochs} epochs, "
        f"{args.runs} run(s): seconds per epoch, wall / CPU (both cores), every epoch in order"
    )
    print("| part | epoch 1 (median) | later epochs: each | later: median wall / CPU |")
    print("|---|---|---|---|")
    for name, found in parts.items():
        first = [found[i] for i in range(0, len(found), args.epochs)]
        later = [found[i] for i in range(len(found)) if i % args.epochs]
        each = ", ".join(f"{wall:.2f}/{cpu:.2f}" for wall, cpu in later)
        print(
            f"| {name} | {statistics.median(w for w, _ in first):.2f} | {each} | "
            f"{statistics.median(w for w, _ in later):.2f} / "
            f"{statistics.median(c for _, c in later):.2f} |"
        )


if __name__ == "__main__":
    main()
