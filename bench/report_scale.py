"""What `transferctl report` costs as runs grow: wall time and peak memory (the report's process,
children included) for a run with many classes and for one with many test images.

Each case generates a train/ val/ test/ folder of 16x16 colour images (one colour per class,
noise on top), trains MobileNetV3Small from scratch at 32x32 for two epochs, then times
`transferctl report RUN_DIR` in a new process. Prints a Markdown table.

    .venv/bin/python bench/report_scale.py [--cases classes-1500 test-50000 digits]

`digits` is scikit-learn's digits as a folder (1,200 train, 300 val, 297 test), for scale.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

# name: (classes, train, val, test images per class)
CASES = {
    "classes-1500": (1500, 2, 1, 1),
    "test-50000": (10, 100, 20, 5000),
}
TRANSFERCTL = [sys.executable, "-m", "transferctl"]


def colour_folder(root: Path, classes: int, counts: tuple[int, int, int]) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (classes, 3))
    for split, count in zip(("train", "val", "test"), counts, strict=True):
        for label in range(classes):
            folder = root / split / f"class_{label:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                noise = rng.normal(0, 25, (16, 16, 3))
                pixels = np.clip(base[label] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:05d}.png")
    return root


def digits_folder(root: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    for split, chosen in (
        ("train", order[:1200]),
        ("val", order[1200:1500]),
        ("test", order[1500:]),
    ):
        for index in chosen:
            folder = root / split / f"digit_{digits.target[index]}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[index] / 16 * 255).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").save(folder / f"{index:04d}.png")
    return root


def train(work: Path, data: Path) -> Path:
    config = {
        "seed": 1,
        "data": {
            "source": "folder",
            "path": str(data),
            "image_size": [32, 32],
            "batch_size": 64,
            "augment": {"flip": "none"},
        },
        "model": {
            "backbone": "mobilenet_v3_small",
            "weights": "none",
            "freeze": "none",
            "head": {"hidden": [], "dropout": 0.0},
        },
        "train": {"phases": [{"name": "one", "epochs": 2, "learning_rate": 2.0e-3}]},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = work / "run"
    subprocess.run(
        [*TRANSFERCTL, "finetune", str(path), "--run-dir", str(run), "-q"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return run


def timed_report(run: Path) -> tuple[float, float]:
    """Seconds and peak resident memory (GiB) of `transferctl report RUN_DIR`, measured by a
    process of this script whose only child is the report (the training's peak is not in it)."""
    measured = subprocess.run(
        [sys.executable, __file__, "--measure", str(run)],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds, peak_kib = measured.stdout.split()
    return float(seconds), float(peak_kib) / 2**20


def measure(run: Path) -> None:
    start = time.perf_counter()
    subprocess.run([*TRANSFERCTL, "report", str(run)], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=[*CASES, "digits"])
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        return measure(args.measure)
    print("| case | classes | test images | report seconds | peak memory (GiB) | index.html |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            if case == "digits":
                data, classes, tests = digits_folder(work / "data"), 10, 297
            else:
                classes, *counts = CASES[case]
                data = colour_folder(work / "data", classes, tuple(counts))  # type: ignore[arg-type]
                tests = classes * counts[2]
            run = train(work, data)
            seconds, peak = timed_report(run)
            size = (run / "report" / "index.html").stat().st_size / 1024
            print(f"| {case} | {classes} | {tests} | {seconds:.1f} | {peak:.2f} | {size:.0f} KB |")


if __name__ == "__main__":
    main()
