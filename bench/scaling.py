"""Seconds per epoch against the work: image count (at 32 px) and image size (at 1,000 images).

One backbone (MobileNetV3Small from scratch, `weights: none`, everything training) through the
real CLI (`transferctl finetune --quiet`) on scikit-learn's digits written as JPEG/PNG class
folders (repeated, shifted by a pixel, to reach the count). Seconds per epoch: history.csv's
`seconds` (training, validation on 10%, checkpoint, history), the median of epochs >= 2 (the
first carries tracing). Prints a table and, on its last line, one JSON object for report.py.

    .venv/bin/python bench/scaling.py [--epochs 2] [--counts 1000 4000 16000] [--sizes 32 96 224]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, scratch_config, write_digits_folder  # noqa: E402

SMALL = 32  # the size of the count axis
COUNT = 1000  # the count of the size axis
BATCH = 32


def config(folder: Path, work: Path, size: int, epochs: int) -> Path:
    path = work / f"scaling-{folder.name}-{size}.yaml"
    return scratch_config(
        path, folder, work / "runs", size=size, batch=BATCH, epochs=epochs, name=f"scaling-{size}"
    )


def measure(folder: Path, work: Path, images: int, size: int, epochs: int) -> dict:
    command = [PYTHON, "-m", "transferctl", "finetune", str(config(folder, work, size, epochs))]
    done = subprocess.run([*command, "--quiet"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"transferctl failed:\n{done.stderr[-4000:]}")
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    with open(run_dir / "history.csv") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    per_epoch = statistics.median(seconds[1:] or seconds)
    trained = round(images * 0.9)
    return {
        "images": images,
        "size": size,
        "seconds": seconds,
        "per_epoch": per_epoch,
        "images_per_second": trained / per_epoch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96, 224])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        for images in sorted(set(args.counts) | {COUNT}):
            folder = write_digits_folder(work / f"digits-{images}", side=SMALL, images=images)
            sizes = args.sizes if images == COUNT else []
            for size in sorted({*sizes, SMALL} if images in args.counts else set(sizes)):
                rows.append(measure(folder, work, images, size, args.epochs))
                print(f"measured {images} images at {size} px", file=sys.stderr, flush=True)
    print("| images | size | seconds per epoch (median of epochs >= 2) | images/s |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['images']:,} | {row['size']} px | {row['per_epoch']:.2f} | "
            f"{row['images_per_second']:.0f} |"
        )
    print(json.dumps({"epochs": args.epochs, "rows": rows}))


if __name__ == "__main__":
    main()
