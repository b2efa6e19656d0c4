"""The docs: the config reference is what the schema renders, the site builds, links resolve.

The config reference (docs/config.md) is generated from the pydantic models' field docstrings by
`transferctl.config.reference`; these tests fail when the committed page drifts from the schema,
when a key has no description, when a page the code cites is missing, and when the README grows
back into a manual.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from transferctl.config import reference
from transferctl.config.loader import dump_config, flatten
from transferctl.config.schema import Config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CITED_PAGE = re.compile(r"docs/([\w-]+\.md)")


def test_config_reference_is_what_the_schema_renders() -> None:
    committed = (DOCS / "config.md").read_text(encoding="utf-8")
    assert committed == reference.render(), (
        f"docs/config.md is stale: run `{reference.REGENERATE}` and commit docs/config.md"
    )


def test_every_key_of_the_default_config_has_an_entry() -> None:
    documented = {key.path for key in reference.config_keys()}
    defaults = flatten(Config().model_dump(mode="json"))
    for path in defaults:
        generic = re.sub(r"\.\d+\.", ".N.", path)
        generic = re.sub(r"\.freeze\..*", ".freeze", generic)  # {last_trainable: 20} is one value
        assert generic in documented, path
    assert {"distill.teacher", "pretrain.noise", "train.phases.N.unfreeze.every"} <= documented


def test_every_entry_says_type_default_and_what_it_does() -> None:
    entries = list(reference.config_keys())
    assert len(entries) > 60
    for key in entries:
        assert key.shown_type and key.default and len(key.description) > 10, key
    by_path = {key.path: key for key in entries}
    assert by_path["data.batch_size"].default == "32"
    assert by_path["data.batch_size"].shown_type == "whole number (> 0)"
    assert by_path["train.phases.N.epochs"].default == "required"
    assert "`{last_trainable: N}`" in by_path["model.freeze"].shown_type
    assert by_path["data.validation_split"].shown_type == "number (>= 0, < 1)"


def test_the_page_shows_the_defaults_the_loader_writes() -> None:
    page = reference.render()
    assert dump_config(Config()).rstrip() in page
    assert "### `train.phases.N.layer_decay` {#train.phases.N.layer_decay}" in page


def test_check_mode_names_the_command_that_regenerates(tmp_path: Path) -> None:
    page = tmp_path / "config.md"
    assert reference.main([str(page)]) == 0
    assert reference.main(["--check", str(page)]) == 0
    page.write_text(page.read_text() + "edited by hand\n")
    completed = subprocess.run(
        [sys.executable, "-m", "transferctl.config.reference", "--check", str(page)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 1
    assert reference.REGENERATE in completed.stderr


def test_pages_cited_by_code_and_tests_exist_and_are_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    cited: set[str] = set()
    for folder in ("transferctl", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            cited |= set(CITED_PAGE.findall(path.read_text(encoding="utf-8")))
    for page in sorted(cited | {"keras-behaviour.md", "run-directory.md", "config.md"}):
        assert (DOCS / page).is_file(), page
        assert f": {page}" in nav, f"{page} is not in mkdocs.yml's nav"


def test_readme_is_a_front_page_whose_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for command in ("make install", "make demo", "make test", "pip install"):
        assert command in text, command
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), link


def test_nothing_refers_to_files_outside_the_repository() -> None:
    outside = ("DES" + "IGN.md", "KERAS" + "-NOTES", "../" + "shared")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".yaml", ".yml", ".toml", ".txt", "") or not (
            path.is_file()
        ):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for target in outside:
            assert target not in text, f"{name} refers to {target}"


def test_the_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (tmp_path / "config" / "index.html").is_file()
