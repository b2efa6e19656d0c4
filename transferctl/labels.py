"""Names the tool writes and reads back: class names, run names, and the split names.

labels.txt holds one class name per line and is read back with `str.splitlines` and `strip`,
so a class folder whose name holds a line break, another control character or white space at
either end (or bytes that are not UTF-8) would come back as other names, and the run would be
dead: `predict` and `evaluate` refuse a model whose labels do not match. Such names are refused
up front, as early as `validate`. Only the standard library here: `validate` stays light.

Example:
    problem = name_problem("cats\\n")   # "contains the control character U+000A (line feed)"
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from transferctl.errors import UserError, quote

SPLITS = ("train", "val", "test")  # the one definition of the split names, in data order
HELD_OUT = SPLITS[1:]  # the held-out splits, val and test
NAME_MAX_FALLBACK = 255
CONTROL_NAMES = {0x0A: "line feed", 0x0D: "carriage return", 0x09: "tab", 0x00: "NUL"}


def name_problem(name: str) -> str | None:
    """Why `name` would not survive a round trip through labels.txt, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (labels.txt is UTF-8 text)"
    if not name.strip():
        return "is blank"
    for character in name:
        if unicodedata.category(character) in ("Cc", "Zl", "Zp"):
            code = ord(character)
            label = CONTROL_NAMES.get(code)
            return f"contains the control character U+{code:04X}" + (f" ({label})" if label else "")
    if name != name.strip():
        return "starts or ends with white space, which labels.txt does not keep"
    return None


def class_folder_names(root: Path) -> list[Path]:
    """Every class folder under `root` (or under its train/ val/ test/), hidden ones excepted.

    Folders that cannot be listed are left out: reading the data reports them.
    """
    splits = [root / split for split in SPLITS if (root / split).is_dir()]
    found: list[Path] = []
    for folder in splits or [root]:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            try:
                is_folder = entry.is_dir()
            except OSError:
                continue
            if is_folder and not entry.name.startswith("."):
                found.append(Path(entry.path))
    return found


def check_class_folders(folders: list[Path], where: str) -> None:
    """A `UserError` naming the first class folder whose name cannot round-trip."""
    for folder in folders:
        problem = name_problem(folder.name)
        if problem is not None:
            raise UserError(
                where,
                f"the class folder {quote(str(folder))}: its name {problem}",
                "rename the folder (class names are written one per line to labels.txt)",
            )


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of `folder` (or its nearest existing
    parent) allows."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX_FALLBACK
