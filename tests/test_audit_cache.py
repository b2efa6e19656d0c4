"""The folder audit is cached by path, size and mtime: an unchanged folder is not opened again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import make_image_folder
from transferctl.data import audit, audit_cache


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("TRANSFERCTL_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders `audit_folder` really scanned."""
    calls: list[Path] = []
    real = audit.audit_folder

    def counting(root: Path, **kwargs: object) -> audit.FolderAudit:
        calls.append(root)
        return real(root, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit, "audit_folder", counting)
    return calls


def test_an_unchanged_folder_is_read_from_the_cache(
    tmp_path: Path, cache: Path, counted: list[Path]
) -> None:
    root = make_image_folder(tmp_path / "images", per_class=4)
    first = audit_cache.cached_audit(root)
    second = audit_cache.cached_audit(root)
    assert len(counted) == 1
    assert second.files == first.files
    assert second.class_names == first.class_names
    assert second.folders == first.folders
    assert list((cache / "audit").glob("*.json"))


def test_a_changed_size_mtime_or_file_list_audits_again(
    tmp_path: Path, cache: Path, counted: list[Path]
) -> None:
    root = make_image_folder(tmp_path / "images", per_class=4)
    audit_cache.cached_audit(root)
    victim = sorted((root / "red").iterdir())[0]
    victim.write_bytes(b"not an image any more")  # size changes
    found = audit_cache.cached_audit(root)
    assert len(counted) == 2
    assert next(f for f in found.files if f.path == str(victim)).reason is not None

    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # mtime alone
    audit_cache.cached_audit(root)
    assert len(counted) == 3

    (root / "red" / "extra.png").write_bytes((root / "green").iterdir().__next__().read_bytes())
    found = audit_cache.cached_audit(root)  # a new file
    assert len(counted) == 4
    assert any(f.path.endswith("extra.png") for f in found.files)
    audit_cache.cached_audit(root)
    assert len(counted) == 4


def test_the_cache_serves_the_same_folder_spelled_differently(
    tmp_path: Path, cache: Path, counted: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_image_folder(tmp_path / "images", per_class=3)
    audit_cache.cached_audit(root)
    monkeypatch.chdir(tmp_path)
    found = audit_cache.cached_audit(Path("images"))
    assert len(counted) == 1
    assert all(f.path.startswith("images") for f in found.files)
    assert all(Path(f.path).exists() for f in found.files)


def test_a_broken_or_unwritable_cache_is_ignored(
    tmp_path: Path, cache: Path, counted: list[Path]
) -> None:
    root = make_image_folder(tmp_path / "images", per_class=3)
    first = audit_cache.cached_audit(root)
    for entry in (cache / "audit").glob("*.json"):
        entry.write_text("{not json")
    assert audit_cache.cached_audit(root).files == first.files
    assert len(counted) == 2


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSFERCTL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/xdg")
    assert audit_cache.cache_dir() == Path("/somewhere/xdg/transferctl")
    monkeypatch.setenv("TRANSFERCTL_CACHE_DIR", "/elsewhere")
    assert audit_cache.cache_dir() == Path("/elsewhere")
