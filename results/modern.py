"""Part (e) of RESULTS.md: the modern recipe and LoRA against part (a)'s fine-tuning.

Every run here is `finetune.yaml` from the seed's source run (part a's `finetune` row) with one
change: one of the recipe's parts (`data.augment` randaugment / mixup / cutmix / erasing,
`train.ema`), all of them, or LoRA adapters instead of training every weight. Test-time
augmentation is `transferctl evaluate RUN --split test --tta` on finished runs.
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from results.report import Table
    from results.run import Run

# a recipe part -> its --set values (the part's effect alone, then all of them together)
RECIPE: dict[str, tuple[str, ...]] = {
    "ema": ("train.ema=0.9",),  # ~2 steps an epoch: an average over the last ~5 epochs
    "randaugment": ("data.augment.randaugment=true",),  # 2 ops, magnitude 0.5
    "erasing": ("data.augment.erasing=0.25",),
    "mixup": ("data.augment.mixup=0.2",),
    "cutmix": ("data.augment.cutmix=1.0",),
}
RECIPE["all"] = tuple(value for values in RECIPE.values() for value in values)
LORA = ("model.lora.rank=4",)  # every Conv2D of MobileNetV3Small (it has no Dense layer)
TTA_KINDS = ("finetune", "recipe-all")  # evaluated again with --tta
TTA = "tta"  # Table's metric: test accuracy with --tta (eval/test/metrics.json)


def _folders(runs: Sequence[Run], folders: Mapping[str, Path], kinds: Sequence[str]) -> dict:
    """The finished runs of `kinds`: name -> folder."""
    return {
        run.name: folders[run.name] for run in runs if run.kind in kinds and run.name in folders
    }


def evaluate_with_tta(runs: Sequence[Run], folders: Mapping[str, Path]) -> list[str]:
    """`transferctl evaluate RUN --split test --tta` on the finished TTA_KINDS runs that have no
    such evaluation yet; the names that failed."""
    failed = []
    for name, folder in _folders(runs, folders, TTA_KINDS).items():
        if tta_accuracy(folder) is not None:
            continue
        command = [sys.executable, "-m", "transferctl", "evaluate", str(folder)]
        done = subprocess.run(
            [*command, "--split", "test", "--tta"], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            failed.append(name)
            print(f"evaluate --tta failed for {name}: {done.stderr[-500:]}", file=sys.stderr)
    return failed


def tta_accuracy(folder: Path) -> float | None:
    """The test accuracy `evaluate --tta` measured, or None."""
    try:
        metrics = json.loads((folder / "eval" / "test" / "metrics.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return metrics.get("accuracy") if metrics.get("tta") else None


def cost(
    runs: Sequence[Run], folders: Mapping[str, Path], kind: str
) -> tuple[int | None, float | None]:
    """A kind's trainable parameters (the last epoch's) and mean seconds per epoch, over its
    seeds' history.csv files."""
    params, seconds = None, []
    for folder in _folders(runs, folders, (kind,)).values():
        with (folder / "history.csv").open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if rows:
            params = int(rows[-1]["trainable_params"])
            seconds += [float(row["seconds"]) for row in rows]
    return params, (statistics.mean(seconds) if seconds else None)


def section(table: Table, runs: Sequence[Run], folders: Mapping[str, Path]) -> list[str]:
    """The part's text and tables; nothing when none of its runs finished."""
    from results.report import Row, markdown_table, mean_std

    finetune = Row("fine-tuned: every layer, random head (part a)", "finetune")
    recipe = [finetune] + [
        Row(f"+ {part}: `{RECIPE[part][0]}`" if part != "all" else "+ all five", f"recipe-{part}")
        for part in RECIPE
    ]
    tta = [
        Row("fine-tuned, evaluated with --tta", "finetune", TTA),
        Row("all five, evaluated with --tta", "recipe-all", TTA),
    ]
    lora = Row("LoRA rank 4 on every Conv2D, random head", "lora")
    if not table.has([*recipe[1:], lora]):
        return []
    lines = [
        "## (e) The modern recipe and LoRA, against fine-tuning",
        "",
        "`finetune.yaml` from the seed's source run, as part (a)'s fine-tuning, with one change "
        "each: a part of the recipe (`--set` as shown; Keras's own RandAugment, RandomErasing, "
        "MixUp and CutMix layers, and the optimizer's EMA), all five together, or LoRA. TTA is "
        "`transferctl evaluate RUN --split test --tta` (the mean of the image and its "
        "horizontal flip) on the finished runs.",
        "",
        *markdown_table(table, recipe + tta),
        "",
        "Read with care: 25 training images of 8x8 scans upscaled to 32x32. The augmentations "
        "are made for photographs, and a digit's flip is another shape (TTA averages in a "
        "view the model never saw), so this measures what the recipe does on the demo data, "
        "not on the data it is made for.",
        "",
        "| method | mean ± std | trainable parameters | seconds per epoch |",
        "|---|---|---|---|",
    ]
    for row in (finetune, lora):
        params, seconds = cost(runs, folders, row.kind)
        shown = [f"{params:,}" if params else "–", f"{seconds:.2f}" if seconds else "–"]
        values = list(table.get(row).values())
        lines.append(f"| {row.label} | {mean_std(values)} | {shown[0]} | {shown[1]} |")
    lines += [
        "",
        f"LoRA: `--set {' '.join(LORA)}` (alpha = rank), the same phase, rate and random head; "
        "only the adapters and the head train (BatchNorm frozen, as in part a); model.keras "
        "holds them merged, with the parameter count of the fine-tuned model. Seconds per "
        "epoch are the mean of history.csv's `seconds` over every epoch and seed, with two "
        "runs at a time on this machine.",
        "",
    ]
    return lines
