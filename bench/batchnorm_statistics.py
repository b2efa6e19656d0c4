"""Inference-mode accuracy with Keras's moving BatchNorm averages vs exact recomputed statistics.

Trains MobileNetV3Small from scratch on scikit-learn's digits for a few epochs (BatchNorm
training), then scores the validation split in inference mode twice: with the moving averages
Keras kept (momentum 0.99), and after `transferctl.model.batchnorm.recompute_statistics`.

    .venv/bin/python bench/batchnorm_statistics.py [--epochs 3]
"""

from __future__ import annotations

import argparse

from transferctl import backbones, runtime
from transferctl.config.schema import Data, Freeze, Head, Train
from transferctl.data import load_data
from transferctl.model.batchnorm import recompute_statistics
from transferctl.model.classifier import build_classifier
from transferctl.model.freezing import apply_freeze
from transferctl.train.loop import compile_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    runtime.set_seed(0)
    data = load_data(Data(source="digits", image_size=(32, 32), validation_split=0.2), seed=0)
    model, backbone = build_classifier(
        backbones.get("mobilenet_v3_small"), (32, 32), "none", Head(hidden=[]), 10
    )
    apply_freeze(model, backbone, Freeze(mode="none"), True, "model.freeze")
    steps = data.steps("train") * args.epochs
    compile_model(model, Train(), 2e-3, steps, 10)
    model.fit(data.training(), epochs=args.epochs, verbose=0)
    train_acc = model.evaluate(data.plain("train"), verbose=0, return_dict=True)["accuracy"]
    moving = model.evaluate(data.plain("val"), verbose=0, return_dict=True)["accuracy"]
    recompute_statistics(model, data.plain("train"))
    exact = model.evaluate(data.plain("val"), verbose=0, return_dict=True)["accuracy"]
    print(f"digits, MobileNetV3Small from scratch, {args.epochs} epochs, {steps} steps")
    print(
        f"val accuracy, Keras moving averages:   {moving:.4f} (train, same stats: {train_acc:.4f})"
    )
    print(f"val accuracy, exact recomputed stats:  {exact:.4f}")


if __name__ == "__main__":
    main()
