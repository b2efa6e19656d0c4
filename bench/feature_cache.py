"""Feature cache: seconds per epoch of a frozen-backbone head phase, cache on against off.

Trains the same config twice through the real CLI, `train.feature_cache: auto` and `off`: a
frozen backbone (VGG16 by default, 64x64, no BatchNorm, so random weights give usable features
offline), a head phase of several epochs, digits with `limit` images per split, no augmentation.
Reports the median seconds of the later epochs (history.csv's `seconds`, which counts all an
epoch costs; the cache's one pass over the images is charged to the first epoch) and the
validation/test accuracy of both runs.

    .venv/bin/python bench/feature_cache.py [--backbone vgg16] [--size 64] [--images 400]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def run(config: dict, cache: str, work: Path) -> Path:
    path = work / f"cache-{cache}.yaml"
    path.write_text(yaml.safe_dump({**config, "name": f"cache-{cache}"}))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "transferctl",
            "finetune",
            str(path),
            "--quiet",
            "--set",
            f"train.feature_cache={cache}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return Path(done.stdout.strip().splitlines()[-1])


def summary(run_dir: Path) -> dict:
    with open(run_dir / "history.csv") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "first": seconds[0],
        "later": statistics.median(seconds[1:]),
        "later_min": min(seconds[1:]),
        "later_max": max(seconds[1:]),
        "val": metrics["val"]["accuracy"],
        "test": metrics["test"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=400, help="at most this many per split")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        config = {
            "seed": 3,
            "data": {
                "source": "digits",
                "image_size": [args.size, args.size],
                "limit": args.images,
                "validation_split": 0.2,
                "test_split": 0.2,
                "augment": {"flip": "none"},
            },
            "model": {
                "backbone": args.backbone,
                "weights": "none",
                "freeze": "all",
                "head": {"hidden": [], "dropout": 0.0, "init": "random"},
            },
            "train": {"phases": [{"name": "head", "epochs": args.epochs, "learning_rate": 1e-3}]},
            "output": {"runs_dir": str(work / "runs")},
        }
        results = {cache: summary(run(config, cache, work)) for cache in ("off", "auto")}
    off, on = results["off"], results["auto"]
    print(
        f"{args.backbone} {args.size}x{args.size}, frozen, <= {args.images} images per split, "
        f"{args.epochs} epochs"
    )
    print(
        "| feature_cache | first epoch s | later epochs s, median (min-max) | val acc | test acc |"
    )
    print("|---|---|---|---|---|")
    for name, row in (("off", off), ("auto (on)", on)):
        print(
            f"| {name} | {row['first']:.2f} | {row['later']:.3f} ({row['later_min']:.3f}-"
            f"{row['later_max']:.3f}) | {row['val']:.4f} | {row['test']:.4f} |"
        )
    print(
        f"later epochs: x{off['later'] / on['later']:.1f} faster with the cache; whole phase: "
        f"x{sum_phase(off, args.epochs) / sum_phase(on, args.epochs):.1f}"
    )


def sum_phase(row: dict, epochs: int) -> float:
    return row["first"] + row["later"] * (epochs - 1)


if __name__ == "__main__":
    main()
