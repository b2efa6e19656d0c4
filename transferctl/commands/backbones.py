"""`transferctl backbones`: what can be used, with native input size and parameter count."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from transferctl.config import backbones
from transferctl.errors import UserError


def run(layers_of: str | None) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped or captured: never wrap the names
    if layers_of is not None:
        _print_layers(console, layers_of)
        return
    table = Table(
        title="keras.applications backbones (without the ImageNet classifier)",
        caption="also hub:PRESET_OR_DIR: a KerasHub backbone (extra \\[hub]; docs/hub.md)",
    )
    table.add_column("backbone")
    table.add_column("keras name")
    table.add_column("native size", justify="right")
    table.add_column("min size", justify="right")
    table.add_column("parameters", justify="right")
    table.add_column("layers", justify="right")
    table.add_column("input pixels")
    for spec in backbones.BACKBONES:
        table.add_row(
            spec.name,
            spec.keras_name,
            f"{spec.native_size}x{spec.native_size}",
            str(spec.min_size),
            f"{spec.params / 1e6:.1f}M",
            str(spec.layers),
            "0-255, rescaled inside" if spec.preprocess == "none" else spec.preprocess,
        )
    console.print(table)


def _print_layers(console: Console, name: str) -> None:
    try:
        spec = backbones.find(name)
    except ValueError as error:  # hub:FOLDER that is no preset folder
        raise UserError("--layers", str(error), "pass a KerasHub preset name or folder") from None
    if spec is None:
        raise UserError(
            "--layers", f"unknown backbone {name!r}", "run `transferctl backbones` for the names"
        )
    from transferctl.model.backbone import build_backbone

    backbone = build_backbone(spec, (spec.native_size, spec.native_size), weights="none")
    table = Table(title=f"{spec.name}: layers in order (freeze counts these)")
    table.add_column("index", justify="right")
    table.add_column("name")
    table.add_column("type")
    table.add_column("weights", justify="right")
    for index, layer in enumerate(backbone.layers):
        table.add_row(str(index), layer.name, type(layer).__name__, str(len(layer.weights)))
    console.print(table)
