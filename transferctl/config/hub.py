"""KerasHub backbones in the config: `model.backbone: hub:PRESET_OR_DIR`, read without TensorFlow.

A KerasHub preset is either a name KerasHub knows (`vit_base_patch16_224_imagenet`, or a
`kaggle://` / `hf://` handle), downloaded through KerasHub's own cache, or a local folder written
by `keras_hub`'s `save_to_preset` (its `config.json` names the backbone class and its settings).
A folder is read here, with the standard library alone, so that `validate` and the default
`data.image_size` know the backbone's input size without importing TensorFlow or KerasHub.

Example:
    spec = hub_spec("hub:/data/presets/tiny_vit")  # family "Hub", native_size 32, ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transferctl.config.backbones import BackboneSpec

PREFIX = "hub:"
FAMILY = "Hub"
CONFIG_FILE = "config.json"  # keras_hub's preset_utils.CONFIG_FILE
DEFAULT_SIZE = 224  # a preset name's input size is known only once KerasHub has downloaded it
EXTRA_HINT = "pip install 'transferctl[hub]'"


def is_hub(name: str) -> bool:
    """Whether `name` names a KerasHub backbone (`hub:...`)."""
    return name.strip().startswith(PREFIX)


def preset_of(name: str) -> str:
    """The preset name or folder after `hub:`."""
    return name.strip()[len(PREFIX) :].strip()


def looks_like_folder(preset: str) -> bool:
    """A local preset folder rather than a name or a `scheme://` handle."""
    if "://" in preset:
        return False
    return "/" in preset or preset.startswith((".", "~")) or Path(preset).is_dir()


def read_folder_config(folder: Path) -> dict[str, Any]:
    """The backbone's `config.json` in a preset folder.

    Raises:
        ValueError: the folder is missing, or holds no KerasHub backbone config.
    """
    if not folder.is_dir():
        raise ValueError(f"the KerasHub preset folder {folder} does not exist")
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ValueError(
            f"{folder} is not a KerasHub preset folder (it has no {CONFIG_FILE}); "
            "write one with keras_hub's `backbone.save_to_preset(FOLDER)`"
        )
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {config_file}: {error}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ValueError(f"{config_file} is not a KerasHub backbone config")
    return saved


def hub_spec(name: str) -> BackboneSpec:
    """The `BackboneSpec` of `hub:PRESET_OR_DIR` (a folder must already be an absolute path).

    Preprocessing is `none` for the classifier: the backbone scales its own pixels as the
    preset's image converter does (`model/hub.py`).
    """
    preset = preset_of(name)
    native, minimum, params = DEFAULT_SIZE, 1, 0
    if looks_like_folder(preset):
        settings = read_folder_config(Path(preset))["config"]
        shape = settings.get("image_shape") or [None]
        if isinstance(shape, list | tuple) and shape and isinstance(shape[0], int):
            native = int(shape[0])
        patch = settings.get("patch_size")
        if isinstance(patch, list | tuple) and patch:
            patch = patch[0]
        if isinstance(patch, int):
            minimum = patch
    return BackboneSpec(
        name=PREFIX + preset,
        keras_name=preset,
        family=FAMILY,
        native_size=native,
        min_size=minimum,
        preprocess="none",
        params=params,
        layers=0,
    )
