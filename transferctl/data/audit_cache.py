"""The folder audit's result, cached by path, size and modification time of every file.

`audit.audit_folder` opens and hashes every image: seconds to minutes on a large folder, and the
same answer every run while nothing changed. `cached_audit` keeps the result on disk, keyed by
the folder (and how it was audited), and uses it only while every file under the folder has the
same size and modification time and no file came or went; a listing and a `stat` per file is all
an unchanged folder costs.

Where: `$TRANSFERCTL_CACHE_DIR`, else `$XDG_CACHE_HOME/transferctl`, else
`~/.cache/transferctl`; one JSON file per folder under `audit/`. A cache that can't be read or
written is ignored (the audit runs as without it).

Example:
    found = cached_audit(Path("data/flowers"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from transferctl import files
from transferctl.data import audit

FORMAT = 1  # bump when FileReport's fields or the audit's verdicts change


def cache_dir() -> Path:
    """Where transferctl keeps caches: `$TRANSFERCTL_CACHE_DIR`, XDG's, or ~/.cache."""
    explicit = os.environ.get("TRANSFERCTL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "transferctl"


def cached_audit(root: Path, *, unlabelled: bool = False) -> audit.FolderAudit:
    """`audit.audit_folder(root)`, from the cache while the folder is unchanged.

    Args:
        root: as `audit.audit_folder`.
        unlabelled: as `audit.audit_folder`. Defaults to `False`.
    """
    audit.find_splits(root)  # a missing folder or a file: the audit's own errors, first
    resolved = root.resolve()
    path = entry_path(resolved, unlabelled)
    fingerprint = folder_fingerprint(resolved)
    if fingerprint is not None:
        found = _load(path, fingerprint, root)
        if found is not None:
            return found
    found = audit.audit_folder(root, unlabelled=unlabelled)
    if fingerprint is not None:
        _store(path, fingerprint, found)
    return found


def entry_path(resolved: Path, unlabelled: bool) -> Path:
    key = json.dumps([str(resolved), unlabelled, audit.tensorflow_reads_webp(), FORMAT])
    return cache_dir() / "audit" / f"{hashlib.sha1(key.encode()).hexdigest()}.json"


def folder_fingerprint(root: Path) -> str | None:
    """A digest of every entry under `root` (relative path, size, mtime in ns); None when a
    folder can't be read (the audit reports it; nothing is cached)."""
    digest = hashlib.sha1()
    failed = False

    def unreadable(error: OSError) -> None:
        nonlocal failed
        failed = True

    for directory, subfolders, names in os.walk(root, onerror=unreadable):
        subfolders.sort()
        here = Path(directory)
        for name in sorted(names) + [f"{entry}/" for entry in subfolders]:
            try:
                status = (here / name.rstrip("/")).stat(follow_symlinks=False)
            except OSError:
                return None
            relative = os.path.relpath(here / name, root)
            digest.update(f"{relative}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return None if failed else digest.hexdigest()


def _load(path: Path, fingerprint: str, root: Path) -> audit.FolderAudit | None:
    try:
        stored = files.read_json(path)
        if stored.get("fingerprint") != fingerprint or stored.get("format") != FORMAT:
            return None
        return _from_json(stored["audit"], root)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(path: Path, fingerprint: str, found: audit.FolderAudit) -> None:
    entry = {"format": FORMAT, "fingerprint": fingerprint, "audit": _to_json(found)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entry), encoding="utf-8")
        os.replace(temporary, path)  # a reader sees the old entry or the new, never half
    except OSError:
        pass  # a read-only home: the next run audits again


def _to_json(found: audit.FolderAudit) -> dict[str, Any]:
    """Paths relative to the root: the same folder spelled another way reads back right."""
    root = found.root

    def relative(path: str | Path) -> str:
        return os.path.relpath(path, root)

    return {
        "folders": {split: relative(folder) for split, folder in found.folders.items()},
        "class_names": found.class_names,
        "files": [
            {**dataclasses.asdict(report), "path": relative(report.path)} for report in found.files
        ],
        "other_classes": found.other_classes,
        "loose_files": [relative(path) for path in found.loose_files],
    }


def _from_json(stored: dict[str, Any], root: Path) -> audit.FolderAudit:
    def absolute(path: str) -> str:
        return str(root / path) if path != "." else str(root)

    return audit.FolderAudit(
        root=root,
        folders={split: Path(absolute(folder)) for split, folder in stored["folders"].items()},
        class_names=list(stored["class_names"]),
        files=[
            audit.FileReport(**{**report, "path": absolute(report["path"])})
            for report in stored["files"]
        ],
        other_classes={split: list(names) for split, names in stored["other_classes"].items()},
        loose_files=[absolute(path) for path in stored["loose_files"]],
        seconds=0.0,
    )
