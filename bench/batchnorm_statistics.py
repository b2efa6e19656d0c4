"""Inference-mode accuracy with Keras's moving BatchNorm averages vs exact recomputed statistics.

Trains MobileNetV3Small from scratch on scikit-learn's digits for a few epochs (BatchNorm
training), then scores the validation split in inference mode twice: with the moving averages
Keras kept (momentum 0.99), and after `transferctl.model.batchnorm.recompute_statistics`.

With `--samples`, after every epoch it also scores the statistics measured on random samples of
the training images (several draws each), as the pass before each validation does on a fixed
sample of `EPOCH_STATISTICS_IMAGES`, and times the pass over that many images at the training
batch and at the pass's own (`FORWARD_BATCH_FACTOR` times larger).

    .venv/bin/python bench/batchnorm_statistics.py [--epochs 3] [--samples 64 256 1024]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from transferctl import runtime
from transferctl.config import backbones
from transferctl.config.schema import Data, Freeze, Head, Train
from transferctl.data import load_data
from transferctl.data.bundle import FORWARD_BATCH_FACTOR
from transferctl.model.batchnorm import EPOCH_STATISTICS_IMAGES, recompute_statistics
from transferctl.model.classifier import build_classifier
from transferctl.model.freezing import apply_freeze
from transferctl.train.loop import compile_model

DRAWS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, nargs="*", default=[])
    args = parser.parse_args()
    runtime.set_seed(0)
    data = load_data(Data(source="digits", image_size=(32, 32), validation_split=0.2), seed=0)
    model, backbone = build_classifier(
        backbones.get("mobilenet_v3_small"), (32, 32), "none", Head(hidden=[]), 10
    )
    apply_freeze(model, backbone, Freeze(mode="none"), True, "model.freeze")
    steps = data.steps("train") * args.epochs
    compile_model(model, Train(), 2e-3, steps, 10)
    rows = []
    training = data.training()
    for epoch in range(args.epochs):
        model.fit(training, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        if args.samples:
            rows.append(sample_scores(model, data, args.samples))
    train_acc = model.evaluate(data.plain("train"), verbose=0, return_dict=True)["accuracy"]
    moving = model.evaluate(data.plain("val"), verbose=0, return_dict=True)["accuracy"]
    recompute_statistics(model, data.plain("train"))
    exact = model.evaluate(data.plain("val"), verbose=0, return_dict=True)["accuracy"]
    print(f"digits, MobileNetV3Small from scratch, {args.epochs} epochs, {steps} steps")
    print(
        f"val accuracy, Keras moving averages:   {moving:.4f} (train, same stats: {train_acc:.4f})"
    )
    print(f"val accuracy, exact recomputed stats:  {exact:.4f}")
    if args.samples:
        print_samples(rows, args.samples, data.batch_size)


def sample_scores(model: Any, data: Any, sizes: list[int]) -> dict[str, Any]:
    """Val accuracy with the statistics of every training image, and of random samples."""
    weights = model.get_weights()
    images = data.plain("train").unbatch()
    scores: dict[str, Any] = {}
    for size in sizes:
        found = []
        for draw in range(DRAWS):
            sample = images.shuffle(4096, seed=draw).take(size).batch(data.batch_size)
            model.set_weights(weights)
            recompute_statistics(model, sample)
            found.append(model.evaluate(data.plain("val"), verbose=0, return_dict=True)["accuracy"])
        scores[str(size)] = found
    model.set_weights(weights)
    recompute_statistics(model, data.plain("train"))
    scores["all"] = model.evaluate(data.plain("val"), verbose=0, return_dict=True)["accuracy"]
    sample = images.take(EPOCH_STATISTICS_IMAGES).cache()
    for factor in (1, FORWARD_BATCH_FACTOR):
        batched = sample.batch(factor * data.batch_size)
        recompute_statistics(model, batched)  # decoded into the cache, traced for this shape
        started = time.perf_counter()
        recompute_statistics(model, batched)
        scores[f"seconds_batch_{factor * data.batch_size}"] = time.perf_counter() - started
    model.set_weights(weights)
    return scores


def print_samples(rows: list[dict[str, Any]], sizes: list[int], batch: int) -> None:
    print(
        f"\nval accuracy after each epoch, statistics from a random sample of N training "
        f"images ({DRAWS} draws: mean, min-max) against all of them; seconds of one pass over "
        f"{EPOCH_STATISTICS_IMAGES} images at batch {batch} and {FORWARD_BATCH_FACTOR * batch}"
    )
    head = " | ".join(f"N={size}" for size in sizes)
    print(f"| epoch | {head} | all | pass s, batch {batch} / {FORWARD_BATCH_FACTOR * batch} |")
    print("|---" * (len(sizes) + 3) + "|")
    for epoch, row in enumerate(rows, 1):
        cells = [
            f"{statistics.mean(row[str(s)]):.4f} ({min(row[str(s)]):.4f}-{max(row[str(s)]):.4f})"
            for s in sizes
        ]
        timing = (
            f"{row[f'seconds_batch_{batch}']:.3f} / "
            f"{row[f'seconds_batch_{FORWARD_BATCH_FACTOR * batch}']:.3f}"
        )
        print(f"| {epoch} | {' | '.join(cells)} | {row['all']:.4f} | {timing} |")


if __name__ == "__main__":
    main()
