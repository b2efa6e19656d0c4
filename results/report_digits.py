"""The report on real digits with misfiled training images: where the misfiled ones rank in
label_issues.csv, and the test split's calibration before and after the temperature.

scikit-learn's digits become a train/ val/ test/ folder (1,200 / 300 / 297 images, 32x32 PNG);
10 training images (chosen by --noise-seed) are saved under a wrong class folder. For each seed
MobileNetV3Small trains from scratch for 15 epochs (light augmentation), then
`transferctl report` runs on it. Prints a Markdown table, one row per seed.

    .venv/bin/python results/report_digits.py [--seeds 42 1 2 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

MISFILED = 10
TRANSFERCTL = [sys.executable, "-m", "transferctl"]


def digits_folder(root: Path, noise_seed: int) -> set[str]:
    """The folder; the file names of the misfiled training images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(noise_seed)
    order = rng.permutation(len(digits.target))
    splits = {"train": order[:1200], "val": order[1200:1500], "test": order[1500:]}
    wrong = set(rng.choice(splits["train"], MISFILED, replace=False).tolist())
    for split, chosen in splits.items():
        for index in chosen:
            label = int(digits.target[index])
            if index in wrong:  # any other class
                label = int((label + rng.integers(1, 10)) % 10)
            folder = root / split / f"digit_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[index] / 16 * 255).astype(np.uint8)
            image = Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST)
            image.convert("RGB").save(folder / f"img_{index:04d}.png")
    return {f"img_{index:04d}.png" for index in wrong}


def config(data: Path, seed: int) -> dict:
    return {
        "name": "misfiled",
        "seed": seed,
        "data": {
            "source": "folder",
            "path": str(data),
            "image_size": [32, 32],
            "augment": {"flip": "none", "rotation": 0.1, "zoom": 0.1, "translate": 0.1},
        },
        "model": {
            "backbone": "mobilenet_v3_small",
            "weights": "none",
            "freeze": "none",
            "head": {"hidden": [], "dropout": 0.1},
        },
        "train": {
            "lr_schedule": "cosine",
            "phases": [{"name": "scratch", "epochs": 15, "learning_rate": 2.0e-3}],
        },
    }


def one_seed(work: Path, data: Path, misfiled: set[str], seed: int) -> str:
    path = work / f"seed{seed}.yaml"
    path.write_text(yaml.safe_dump(config(data, seed)))
    run = work / f"run{seed}"
    subprocess.run(
        [*TRANSFERCTL, "finetune", str(path), "--run-dir", str(run), "-q"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run([*TRANSFERCTL, "report", str(run)], check=True, capture_output=True)
    with open(run / "report" / "label_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    hits = [Path(row["path"]).name in misfiled for row in rows]
    flagged = sum(row["flagged"] == "True" for row in rows)
    numbers = json.loads((run / "report" / "report.json").read_text())
    calibration = numbers["calibration"]
    return (
        f"| {seed} | {numbers['metrics']['accuracy']:.3f} | {sum(hits[:10])} | {sum(hits[:30])} "
        f"| {flagged} | {calibration['temperature']:.3g} | {calibration['ece_before']:.4f} → "
        f"{calibration['ece_after']:.4f} | {calibration['nll_before']:.4f} → "
        f"{calibration['nll_after']:.4f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2, 3])
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        misfiled = digits_folder(work / "digits", args.noise_seed)
        print(
            f"| seed | test accuracy | misfiled in rows 1-10 | in rows 1-30 (of {MISFILED}) "
            "| flagged | temperature | test ECE | test NLL |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for seed in args.seeds:
            print(one_seed(work, work / "digits", misfiled, seed), flush=True)


if __name__ == "__main__":
    main()
