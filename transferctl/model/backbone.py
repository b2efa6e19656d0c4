"""Build a `keras.applications` backbone and load its starting weights.

`weights` is `imagenet` (Keras's download and cache, bounded and explained offline), `none`,
`preset` (a KerasHub backbone's own weights, `model/hub.py`),
a `.weights.h5`/`.h5` file, a `.keras` file, or a transferctl run directory (its trained
backbone). Loading a file or run never needs the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferctl import runtime
from transferctl.config import hub
from transferctl.config.backbones import BackboneSpec
from transferctl.errors import UserError
from transferctl.files import bounded_yaml
from transferctl.rundir.layout import MODEL
from transferctl.rundir.model_file import LoadFailure, load_model_file
from transferctl.runtime.downloads import bounded_download

BACKBONE_LAYER_NAME = "backbone"


def build_backbone(
    spec: BackboneSpec, image_size: tuple[int, int], weights: str, *, safe_mode: bool = True
) -> Any:
    """The backbone without its classifier, with `weights` loaded."""
    if spec.family == hub.FAMILY:  # a KerasHub preset (model/hub.py)
        from transferctl.model.hub import build_hub_backbone

        backbone = build_hub_backbone(spec, image_size, weights)
        if weights not in ("preset", "none"):
            load_backbone_weights(backbone, spec, Path(weights), safe_mode=safe_mode)
        return backbone
    keras = runtime.keras()
    constructor = getattr(keras.applications, spec.keras_name)
    kwargs: dict[str, Any] = {
        "include_top": False,
        "input_shape": (image_size[0], image_size[1], 3),
        "weights": "imagenet" if weights == "imagenet" else None,
        "name": BACKBONE_LAYER_NAME,
    }
    if spec.has_preprocessing_switch:
        kwargs["include_preprocessing"] = True
    try:
        if weights == "imagenet":
            with bounded_download("model.weights", "models"):
                backbone = constructor(**kwargs)
        else:
            backbone = constructor(**kwargs)
    except ValueError as error:
        raise UserError(
            "data.image_size",
            f"{spec.name} cannot be built at {list(image_size)}: {_first_line(error)}",
            f"try its native size [{spec.native_size}, {spec.native_size}]",
        ) from None
    if weights not in ("imagenet", "none"):
        load_backbone_weights(backbone, spec, Path(weights), safe_mode=safe_mode)
    return backbone


def load_backbone_weights(
    backbone: Any, spec: BackboneSpec, source: Path, *, safe_mode: bool = True
) -> None:
    """Copy weights from a file or an earlier run into `backbone` (same architecture)."""
    if source.is_dir():
        _check_run_backbone(source, spec)
        source_model = _load_keras_file(source / MODEL, safe_mode)
        _copy_from(_find_backbone(source_model) or source_model, backbone, source)
    elif source.name.endswith(".keras"):
        source_model = _load_keras_file(source, safe_mode)
        _copy_from(_find_backbone(source_model) or source_model, backbone, source)
    else:
        try:
            backbone.load_weights(str(source))
        except Exception as error:
            raise UserError(
                "model.weights",
                f"{source} does not fit {spec.name}: {_first_line(error)}",
                "use weights saved from the same backbone (include_top=False)",
            ) from None


def _check_run_backbone(run_dir: Path, spec: BackboneSpec) -> None:
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        return
    saved = bounded_yaml.load_file(config_file) or {}  # a run's file: bounded like any config
    if not isinstance(saved, dict):
        raise UserError(str(config_file), "is not a transferctl config", "check the run directory")
    used = str((saved.get("model") or {}).get("backbone", ""))
    if used and used != spec.name:
        raise UserError(
            "model.weights",
            f"the run {run_dir} trained backbone {used}, this config asks for {spec.name}",
            f"set model.backbone: {used}, or start from another run",
        )


def _load_keras_file(path: Path, safe_mode: bool) -> Any:
    """Load a .keras file; `safe_mode` refuses code from Lambda layers (Keras's safety switch)."""
    from transferctl.model import preprocess  # noqa: F401 - registers the custom layer

    return load_model_file(path, safe_mode=safe_mode, explain=_weights_not_loaded)


def _weights_not_loaded(failure: LoadFailure) -> UserError:
    fix = "check the file"
    if failure.runs_code:
        fix = "it runs code from a Lambda layer: pass --unsafe only if you trust its source"
    return UserError(
        "model.weights", f"cannot load {failure.path}: {_first_line(failure.error)}", fix
    )


def _find_backbone(model: Any) -> Any:
    for layer in model.layers:
        if layer.name == BACKBONE_LAYER_NAME and hasattr(layer, "layers"):
            return layer
    return None


def _copy_from(source: Any, target: Any, origin: Path) -> None:
    source_weights = source.get_weights()
    target_shapes = [tuple(w.shape) for w in target.weights]
    source_shapes = [tuple(w.shape) for w in source_weights]
    if source_shapes != target_shapes:
        raise UserError(
            "model.weights",
            f"the backbone in {origin} does not match this backbone "
            f"({len(source_shapes)} weight tensors there, {len(target_shapes)} here)",
            "start from a run or file with the same backbone",
        )
    target.set_weights(source_weights)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
