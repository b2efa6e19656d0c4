"""index.html from templates/index.html.j2 (Jinja2, autoescaped): no script, no link out."""

from __future__ import annotations

from typing import Any


def render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=PackageLoader("transferctl.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["number"] = _number
    environment.filters["short"] = _short
    return environment.get_template("index.html.j2").render(**context)


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _short(path: str) -> str:
    """A gallery caption: a file's class folder and name, not its whole path."""
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-2:])
