"""`transferctl plan`: per phase, what trains and what stays frozen; trains nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from transferctl.config.loader import load_config
from transferctl.config.schema import Config
from transferctl.plan import LayerPlan, PhasePlan, Plan, make_plan

SHOWN_CLASSES = 10


def run(
    config_path: Path, overrides: Sequence[str], show_layers: bool, estimate: bool = False
) -> None:
    config = load_config(config_path, overrides)
    plan = make_plan(config)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped or captured: never wrap the names
    console.print(
        f"[bold]plan[/] of {plan.name} ({config_path}): builds the model without weights, "
        "trains and downloads nothing",
        highlight=False,
    )
    console.print(_summary(plan), highlight=False)
    console.print(_phase_table(plan))
    if show_layers:
        console.print(_layer_table(plan))
    if estimate:
        _print_estimate(config, console)


def _print_estimate(config: Config, console: Console) -> None:
    from transferctl.plan.estimate import PROBE_STEPS
    from transferctl.plan.estimate import estimate as probe

    phases = probe(config)
    timed, batch = phases[0].timed_batch, config.data.batch_size
    scaled = f" of {timed} images, times scaled to batch {batch}" if timed < batch else ""
    console.print(
        f"[bold]estimate[/] from {PROBE_STEPS} timed training steps per phase{scaled} (after a "
        "warm-up step, whose tracing is charged once per phase) on this machine; BatchNorm "
        "statistics, checkpoints and start-up not included",
        highlight=False,
    )
    for phase in phases:
        once = f", feature cache pass {phase.cache_pass:.1f} s once" if phase.cache_pass else ""
        once += f", tracing {phase.tracing:.1f} s once"
        console.print(
            f"  phase {phase.name}: {phase.seconds_per_epoch:.1f} s/epoch x {phase.epochs}"
            f"{once} = {phase.total:.1f} s",
            highlight=False,
        )
    total = sum(phase.total for phase in phases)
    console.print(f"  total: {total:.1f} s ({total / 60:.1f} min)", highlight=False)


def _summary(plan: Plan) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "backbone",
        f"{plan.backbone}: {plan.backbone_layers} layers, {plan.backbone_params:,} parameters",
    )
    table.add_row("input", f"{plan.image_size[0]}x{plan.image_size[1]} RGB, pixels 0-255")
    table.add_row("weights", _weights(plan.weights))
    table.add_row("classes", _classes(plan))
    head = plan.head
    table.add_row(
        "head",
        f"{head.pooling} pooling, hidden {list(head.hidden)}, dropout {head.dropout:g}; "
        f"init {plan.head_init} ({plan.head_init_reason})",
    )
    if plan.lora is not None:
        table.add_row("lora", plan.lora)
    return table


def _phase_table(plan: Plan) -> Table:
    table = Table(title="phases, in order", title_justify="left")
    table.add_column("")
    for phase in plan.phases:
        table.add_column(f"{phase.index}: {phase.name}")
    count = plan.backbone_layers
    rows: list[tuple[str, list[str]]] = [
        ("epochs", [str(phase.epochs) for phase in plan.phases]),
        (
            "learning rate",
            [_rates(phase, plan.lr_schedule) for phase in plan.phases],
        ),
        ("freeze", [f"{phase.freeze} ({phase.freeze_field})" for phase in plan.phases]),
        (
            "frozen layers",
            [
                f"{phase.frozen_layers} of {count}" + _span(plan.layers, phase.frozen)
                for phase in plan.phases
            ],
        ),
        (
            "training layers",
            [
                f"{phase.trainable_layers} of {count}" + _span(plan.layers, _training(phase, count))
                for phase in plan.phases
            ],
        ),
        ("BatchNorm", [_batchnorm(phase) for phase in plan.phases]),
        (
            "trainable params",
            [f"{phase.trainable_params:,} of {phase.total_params:,}" for phase in plan.phases],
        ),
        ("feature cache", [_cache(phase) for phase in plan.phases]),
    ]
    if any(phase.unfreeze for phase in plan.phases):
        rows.insert(5, ("unfreeze", [_unfreeze(phase, count) for phase in plan.phases]))
    for label, values in rows:
        table.add_row(label, *values)
    return table


def _layer_table(plan: Plan) -> Table:
    table = Table(title=f"{plan.backbone}: every layer, and whether it trains in each phase")
    table.add_column("#", justify="right")
    table.add_column("name")
    table.add_column("type")
    table.add_column("BatchNorm")
    table.add_column("params", justify="right")
    for phase in plan.phases:
        table.add_column(phase.name)
    for layer in plan.layers:
        table.add_row(
            str(layer.index),
            layer.name,
            layer.kind,
            "yes" if layer.batchnorm else "",
            f"{layer.params:,}",
            *("yes" if trains else "no" for trains in layer.trains),
        )
    return table


def _weights(weights: str) -> str:
    if weights == "imagenet":
        return "imagenet (finetune loads them; plan does not download)"
    if weights == "none":
        return "none (from scratch)"
    if weights == "preset":
        return "preset (the KerasHub preset's weights; plan does not load them)"
    if Path(weights).is_dir():
        return f"{weights} (a transferctl run: its trained backbone)"
    return f"{weights} (a weights file)"


def _classes(plan: Plan) -> str:
    names = plan.class_names
    if names is None:
        return f"{plan.num_classes} (the class sub-folders; the head has one output per class)"
    shown = ", ".join(names[:SHOWN_CLASSES])
    more = f", ... ({len(names)} in all)" if len(names) > SHOWN_CLASSES else ""
    return f"{plan.num_classes}: {shown}{more}"


def _training(phase: PhasePlan, count: int) -> tuple[int, ...]:
    frozen = set(phase.frozen)
    return tuple(index for index in range(count) if index not in frozen)


def _span(layers: list[LayerPlan], indices: tuple[int, ...]) -> str:
    """`: #0 input_layer … #116 multiply_17`: the boundary layers of `indices`."""
    if not indices:
        return ""
    first, last = layers[indices[0]], layers[indices[-1]]
    stretches = 1 + sum(1 for a, b in zip(indices, indices[1:], strict=False) if b != a + 1)
    if first.index == last.index:
        return f": #{first.index} {first.name}"
    ends = f"#{first.index} {first.name} … #{last.index} {last.name}"
    if stretches == 1:
        return f": {ends}"
    return f" in {stretches} stretches, {ends} (--layers lists them)"


def _batchnorm(phase: PhasePlan) -> str:
    if phase.batchnorm == "trains":
        return f"trains ({phase.trainable_batchnorm_layers} layers; exact statistics)"
    if phase.batchnorm == "inference":
        return "inference (frozen)"
    return phase.batchnorm


def _rates(phase: PhasePlan, schedule: str) -> str:
    """`0.001 (cosine)`, or per group: `head 0.001, backbone 1e-05 (x0.01); cosine`."""
    rates = phase.rates
    if not rates.per_layer and rates.backbone_top == rates.head:
        return f"{phase.learning_rate:g} ({schedule})"
    return f"{rates.describe()}; {schedule}"


def _unfreeze(phase: PhasePlan, count: int) -> str:
    """`epochs 1-2: 0 layers, 5,770 params`, one line per step of gradual unfreezing."""
    if not phase.unfreeze:
        return "no"
    lines = []
    for step in phase.unfreeze:
        first, last = step.first_epoch, step.last_epoch
        epochs = f"epochs {first}-{last}" if last > first else f"epoch {first}"
        lines.append(
            f"{epochs}: {step.trainable_layers} of {count} layers, {step.trainable_params:,} params"
        )
    return "\n".join(lines)


def _cache(phase: PhasePlan) -> str:
    decision = phase.feature_cache
    return f"{'yes' if decision.use else 'no'}: {decision.reason}"
