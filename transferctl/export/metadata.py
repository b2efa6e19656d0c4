"""`labels.txt` and `export.json` beside the exported files.

export.json holds what every export of the folder shares (the source run, `class_names`,
`input_size` [h, w] at training) and one entry per exported file, keyed by its name: format,
quantization, inputs and outputs (dtype, shape, quantization), size, versions, and the parity
gate's numbers. Exporting another format into the same folder adds its entry; exporting one
again replaces it. A folder holding another model's exports is refused.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from transferctl import files
from transferctl.errors import UserError
from transferctl.rundir import layout as rundir

EXPORT_INFO = "export.json"


def start(out_dir: Path, run_dir: Path, class_names: list[str], size: tuple[int, int]) -> dict:
    """The folder's export.json as it will be updated: the existing one, or a new one."""
    path = out_dir / EXPORT_INFO
    document: dict[str, Any] = {"exports": {}}
    if path.is_file():
        try:
            document = files.read_json(path)
        except files.NotReadable as error:
            raise UserError(
                str(path), f"cannot read it ({error.reason})", "delete it, or pass another --out"
            ) from None
        if not isinstance(document, dict) or not isinstance(document.get("exports"), dict):
            raise UserError(str(path), "is not a transferctl export.json", "pass another --out")
        mine = {"class_names": class_names, "input_size": list(size)}
        theirs = {key: document.get(key) for key in mine}
        if theirs != mine:
            raise UserError(
                "--out",
                f"{out_dir} holds exports of another model (classes {theirs['class_names']}, "
                f"input size {theirs['input_size']}"
                + (f", from {document['source_run']})" if document.get("source_run") else ")"),
                "pass an empty folder with --out",
            )
    document.update(
        {
            "source_run": str(run_dir),
            "class_names": class_names,
            "input_size": list(size),
            "labels": rundir.LABELS,
        }
    )
    document["exports"] = document.pop("exports")  # keep the entries last, for reading
    return document


def write_labels(out_dir: Path, class_names: list[str]) -> None:
    rundir.write_text(out_dir / rundir.LABELS, "".join(f"{name}\n" for name in class_names))


def record(out_dir: Path, document: dict[str, Any], name: str, entry: dict[str, Any]) -> None:
    """Add or replace the entry for the exported file `name`, and write export.json."""
    document["exports"][name] = {
        **entry,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    rundir.write_json(out_dir / EXPORT_INFO, document)


def size_in_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
