"""The shape of the package holds: short modules, short functions, few loose top-level modules.

Read with `ast` from the source files (nothing is imported, so no TensorFlow): a module over
`MAX_MODULE_LINES` lines, a function or method over `MAX_FUNCTION_LINES` lines, or more than
`MAX_LOOSE_MODULES` modules beside the packages at transferctl/'s top level fails, naming each
offender, so that the layout keeps reading as the architecture (config, data, model, train, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "transferctl"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_LOOSE_MODULES = 4
ENTRY_POINTS = ("__init__.py", "__main__.py")  # a package's own files, never "loose"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_no_module_is_over_the_line_limit() -> None:
    long = [
        f"{_name(path)}: {count} lines"
        for path in _modules()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them):\n" + "\n".join(long)


def test_no_function_is_over_the_line_limit() -> None:
    long = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                count = node.end_lineno - node.lineno + 1
                if count > MAX_FUNCTION_LINES:
                    long.append(f"{_name(path)}:{node.lineno} {node.name}: {count} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(long)


def test_few_loose_modules_at_the_top_level() -> None:
    loose = sorted(path.name for path in PACKAGE.glob("*.py") if path.name not in ENTRY_POINTS)
    assert len(loose) <= MAX_LOOSE_MODULES, (
        f"{len(loose)} loose modules at transferctl/'s top level (at most {MAX_LOOSE_MODULES}; "
        f"move them into the package that owns them): {', '.join(loose)}"
    )


def test_the_limits_see_the_package() -> None:
    """The checks above read the real package: an empty glob would pass them all."""
    assert (PACKAGE / "__init__.py").is_file()
    assert len(_modules()) > 20
