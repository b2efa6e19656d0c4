"""`transferctl doctor DATA_PATH`: the folder audit, printed, without training or TensorFlow.

The audit itself is `transferctl.data.audit.audit_folder`; this module only words its findings.
Exit 0 whenever the folder could be read, findings or not; 2 for a missing path or no class
folders (a `UserError` from the audit).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import typer

from transferctl.data.audit import (
    EMPTY_CLASS,
    TINY_SIDE,
    FileReport,
    FolderAudit,
    audit_folder,
    split_shortfalls,
)
from transferctl.data.bundle import balanced_class_weights
from transferctl.files import paths

SHOWN = 20  # lines per finding unless --all
IMBALANCE_WORTH_WEIGHTING = 1.5
MODE_NAMES = {
    "1": "1-bit",
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGBA",
    "CMYK": "CMYK",
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I": "32-bit grayscale",
    "RGB": "RGB",
}


def run(data_path: Path, validation_split: float, test_split: float, show_all: bool) -> None:
    found = audit_folder(paths.resolved_for(data_path, "DATA_PATH"), where="DATA_PATH")
    report = Report(found, SHOWN if not show_all else None)
    report.header(validation_split, test_split)
    report.classes()
    report.problems(validation_split, test_split)
    report.skipped()
    report.duplicates()
    report.tiny()
    report.converted()
    report.warnings()
    report.summary()
    typer.echo("\n".join(report.lines))


class Report:
    """The doctor's text, section by section; paths are shown relative to the folder."""

    def __init__(self, found: FolderAudit, shown: int | None) -> None:
        self.found = found
        self.shown = shown
        self.lines: list[str] = []

    def say(self, line: str = "") -> None:
        self.lines.append(line)

    def listing(self, entries: list[str]) -> None:
        limit = len(entries) if self.shown is None else self.shown
        self.lines += [f"  {entry}" for entry in entries[:limit]]
        if len(entries) > limit:
            self.say(f"  ... and {len(entries) - limit} more (--all lists every one)")

    def relative(self, path: str) -> str:
        try:
            return str(Path(path).relative_to(self.found.root))
        except ValueError:
            return path

    def header(self, validation_split: float, test_split: float) -> None:
        found = self.found
        self.say(f"data: {found.root}")
        if found.folders["train"] == found.root:
            layout = "class folders"
        else:
            layout = " ".join(f"{split}/" for split in found.folders)
        carved = _carved(found, validation_split, test_split)
        if carved:
            fractions = ", ".join(f"{key} {value:g}" for key, value in carved.items())
            layout += f"; finetune carves {fractions} from the training images"
        self.say(f"layout: {layout}")
        rate = len(found.files) / found.seconds if found.seconds > 0 else 0.0
        self.say(f"scanned {len(found.files)} files in {found.seconds:.2f} s ({rate:,.0f} files/s)")

    def classes(self) -> None:
        found = self.found
        counts = found.counts()
        splits = list(counts)
        width = max(len(name) for name in found.class_names) + 2
        self.say()
        kept = found.kept_classes()
        with_images = (
            f", {len(kept)} with usable training images"
            if len(kept) < len(found.class_names)
            else ""
        )
        self.say(f"classes: {len(found.class_names)}{with_images} (usable images per split)")
        self.say("  " + "class".ljust(width) + "".join(split.rjust(8) for split in splits))
        for name in found.class_names:
            cells = "".join(str(counts[split][name]).rjust(8) for split in splits)
            self.say("  " + name.ljust(width) + cells)
        for split, names in found.other_classes.items():
            self.say(
                f"  {split}/ has other class folders than train/: {', '.join(names) or 'none'}"
            )
        if len(kept) < 2:
            return
        ratio = found.imbalance()
        self.say(f"imbalance (train, largest/smallest class): {ratio:.2f}")
        if ratio > IMBALANCE_WORTH_WEIGHTING:
            train = counts["train"]
            labels = np.repeat(np.arange(len(kept)), [train[name] for name in kept])
            weights = balanced_class_weights(labels, len(kept))
            listed = ", ".join(f"{name} {weights[i]:.2f}" for i, name in enumerate(kept))
            self.say(
                f"suggestion: the classes are imbalanced (ratio > {IMBALANCE_WORTH_WEIGHTING}); "
                "set train.class_weight: balanced"
            )
            self.say(f"  weights it applies: {listed}")

    def problems(self, validation_split: float, test_split: float) -> None:
        """What would stop `finetune` whatever data.on_bad_file says."""
        found = self.found
        problems = []
        kept = found.kept_classes()
        if len(kept) < 2:
            problems.append(
                f"{len(kept)} class(es) with usable images ({', '.join(kept) or 'none'}); "
                "a classifier needs >= 2"
            )
        if found.other_classes:
            problems.append("the splits have different class folders; give each the same ones")
        train = found.counts()["train"]
        carved = _carved(found, validation_split, test_split)
        problems += split_shortfalls({name: train[name] for name in kept}, carved)
        if problems:
            self.say()
            self.say(f"problems that stop finetune: {len(problems)}")
            self.listing(problems)

    def skipped(self) -> None:
        found = self.found
        ignored = [f for f in found.files if f.ignored]
        bad = [f for f in found.bad() if not f.ignored]
        self.say()
        if bad:
            self.say(
                f"bad files: {len(bad)} (data.on_bad_file: skip leaves them out; "
                "fail stops at the first)"
            )
            self.listing([f"{self.relative(f.path)}: {f.reason}" for f in bad])
        else:
            self.say("bad files: none")
        if ignored:
            self.say(f"hidden and system files: {len(ignored)} (always left out)")
            self.listing([f"{self.relative(f.path)}: {f.reason}" for f in ignored])
        dropped = found.dropped_classes()
        if dropped:
            self.say(f"empty class folders: {len(dropped)} (skip drops the class; fail stops)")
            self.listing([f"{name}: {EMPTY_CLASS}" for name in dropped])
        if found.loose_files:
            self.say(f"files outside the class folders: {len(found.loose_files)} (not used)")
            self.listing([self.relative(path) for path in found.loose_files])

    def duplicates(self) -> None:
        groups = self.found.duplicates()
        self.say()
        if not groups:
            self.say("exact duplicates: none")
            return
        across = [g for g in groups if len({f.split for f in g}) > 1]
        within = [g for g in groups if len({f.split for f in g}) == 1]
        self.say(f"exact duplicates: {len(groups)} group(s) of identical files")
        if across:
            self.say(f"  across splits (leakage: the same image trains and scores): {len(across)}")
            self.listing([self.duplicate_line(group) for group in across])
        if within:
            carves = any(split not in self.found.folders for split in ("val", "test"))
            note = " (carving splits from train may put copies on both sides)" if carves else ""
            self.say(f"  within a split{note}: {len(within)}")
            self.listing([self.duplicate_line(group) for group in within])

    def duplicate_line(self, group: list[FileReport]) -> str:
        line = " = ".join(self.relative(f.path) for f in group)
        classes = sorted({f.class_name for f in group})
        return line + (f"  (different classes: {', '.join(classes)})" if len(classes) > 1 else "")

    def tiny(self) -> None:
        tiny = self.found.tiny()
        self.say()
        self.say(f"tiny images (< {TINY_SIDE} px on a side): {len(tiny) or 'none'}")
        self.listing([f"{self.relative(f.path)}: {f.width}x{f.height}" for f in tiny])

    def converted(self) -> None:
        converted = self.found.converted()
        self.say()
        if not converted:
            self.say("converted when decoded: none (all 8-bit RGB, upright)")
            return
        kinds = Counter(_conversion(f) for f in converted)
        summary = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        self.say(f"converted to upright RGB when decoded (used, not dropped): {summary}")
        self.listing([f"{self.relative(f.path)}: {_conversion(f)}" for f in converted])

    def warnings(self) -> None:
        warned = self.found.warnings()
        if warned:
            self.say()
            self.say(f"warnings (the files are used): {len(warned)}")
            self.listing([f"{self.relative(f.path)}: {f.warning}" for f in warned])

    def summary(self) -> None:
        found = self.found
        kept = set(found.kept_classes())
        usable = [f for f in found.usable() if f.class_name in kept]
        self.say()
        self.say(
            f"usable: {len(usable)} images in {len(kept)} classes; left out: {len(found.skipped())}"
        )
        self.say(
            "labels: doctor reads files, not what they show; after a run, `transferctl report "
            "RUN_DIR` lists the training images whose class looks wrong "
            "(RUN_DIR/report/label_issues.csv)"
        )


def _carved(found: FolderAudit, validation_split: float, test_split: float) -> dict[str, float]:
    """The fractions finetune would carve from train/ (for the splits the folder lacks)."""
    carved = {}
    if "val" not in found.folders and validation_split > 0:
        carved["validation_split"] = validation_split
    if "test" not in found.folders and test_split > 0:
        carved["test_split"] = test_split
    return carved


def _conversion(report: FileReport) -> str:
    parts = []
    if report.mode != "RGB":
        parts.append(MODE_NAMES.get(report.mode or "", report.mode or "unknown mode"))
    if report.orientation != 1:
        parts.append("EXIF-rotated")
    return " + ".join(parts)
