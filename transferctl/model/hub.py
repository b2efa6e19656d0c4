"""KerasHub backbones (`model.backbone: hub:PRESET_OR_DIR`) as transferctl backbones.

KerasHub is imported here only, lazily, and only for a `hub:` backbone (extra `[hub]`). The
preset is loaded with `keras_hub.models.Backbone.from_preset` (a name through KerasHub's own
download and cache, bounded in time and explained offline; a folder from disk) and rebuilt as
a functional model named `backbone` that the rest of transferctl takes like a
`keras.applications` backbone:

- its first layer scales 0-255 pixels as the preset's image converter does (`x * scale +
  offset`; [0, 1] when the preset has no converter), so the classifier's own preprocessing is
  the identity and an exported model still takes plain pixels;
- a ViT is laid out block by block (patch embedding, `transformer_block_1`, ..., the final
  `ln` last), so the freeze specs (`{last_trainable: N}`, ...), gradual unfreezing and layer decay
  count transformer blocks; another backbone is one layer;
- a token sequence becomes a feature map: the class token is dropped (`Cropping1D`) and the
  patch tokens laid out on their grid (`Reshape`), so the head's pooling (`avg`: the mean patch
  token) and the feature cache work unchanged.

The layers are KerasHub's own and Keras built-ins, with the weights shared, so `model.keras`
loads with Keras and KerasHub installed, without transferctl (Keras imports `keras_hub`
modules itself when it deserialises their layers).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

from transferctl import runtime
from transferctl.config.backbones import BackboneSpec
from transferctl.config.hub import EXTRA_HINT, looks_like_folder
from transferctl.errors import UserError
from transferctl.runtime import hub_fixes
from transferctl.runtime.downloads import timeout_seconds

BACKBONE_LAYER_NAME = "backbone"
MAX_PREFIX_TOKENS = 8  # a class token, a distillation token, registers (DINOv2/v3: 4)
RESCALING_NAME = "hub_rescaling"
DEFAULT_SCALE = 1.0 / 255.0  # a preset without an image converter: pixels in [0, 1]


def import_keras_hub() -> Any:
    """`keras_hub`, or a one-line `UserError` naming the extra to install."""
    try:
        import keras_hub
    except ImportError:
        raise UserError(
            "model.backbone",
            "KerasHub backbones (hub:...) need the keras-hub package, which is not installed",
            EXTRA_HINT,
        ) from None
    return keras_hub


def build_hub_backbone(spec: BackboneSpec, image_size: tuple[int, int], weights: str) -> Any:
    """The preset's backbone as a functional model `backbone` taking 0-255 RGB pixels.

    Args:
        weights: `preset` loads the preset's weights; anything else builds the preset's
            architecture at `image_size` with random weights (a file or a run is loaded into
            it afterwards by `model.backbone.load_backbone_weights`).
    """
    keras_hub = import_keras_hub()
    hub_fixes.fix_vit_layer_configs()
    preset = spec.keras_name
    load_weights = weights == "preset"
    overrides = {} if load_weights else {"image_shape": (image_size[0], image_size[1], 3)}
    with _bounded_preset(preset):
        try:
            source = keras_hub.models.Backbone.from_preset(
                preset, load_weights=load_weights, **overrides
            )
        except (ValueError, TypeError) as error:
            sized = not load_weights and "divisible" in str(error)
            raise UserError(
                "data.image_size" if sized else "model.backbone",
                f"cannot build the KerasHub backbone {preset} at {list(image_size)}: "
                f"{_first_line(error).rstrip('.')}",
                "use a multiple of the patch size"
                if sized
                else "check the preset name (keras_hub.models.Backbone.presets) or folder",
            ) from None
        scale, offset = _pixel_scaling(keras_hub, preset)
    _check_input_size(source, image_size, preset)
    return _rebuilt(source, image_size, scale, offset)


def _check_input_size(source: Any, image_size: tuple[int, int], preset: str) -> None:
    shape = tuple(source.inputs[0].shape[1:3]) if source.inputs else (None, None)
    if None not in shape and shape != tuple(image_size):
        raise UserError(
            "data.image_size",
            f"the weights of the KerasHub preset {preset} need the size {list(shape)}; "
            f"got {list(image_size)}",
            f"set data.image_size: {list(shape)}, or model.weights: none",
        )


def _pixel_scaling(keras_hub: Any, preset: str) -> tuple[Any, Any]:
    """`scale` and `offset` of the preset's image converter (0-255 pixels in); [0, 1] without."""
    from keras_hub.src.utils import preset_utils

    if not preset_utils.check_file_exists(preset, preset_utils.IMAGE_CONVERTER_CONFIG_FILE):
        return DEFAULT_SCALE, 0.0
    settings = preset_utils.load_json(preset, preset_utils.IMAGE_CONVERTER_CONFIG_FILE)
    converter = settings.get("config", {}) if isinstance(settings, dict) else {}
    scale = converter.get("scale")
    offset = converter.get("offset")
    return (DEFAULT_SCALE if scale is None else scale), (0.0 if offset is None else offset)


def _rebuilt(source: Any, image_size: tuple[int, int], scale: Any, offset: Any) -> Any:
    keras = runtime.keras()
    inputs = keras.Input((image_size[0], image_size[1], 3), name="hub_image")
    x = keras.layers.Rescaling(scale, offset=offset, name=RESCALING_NAME)(inputs)
    if type(source).__name__ == "ViTBackbone":
        x = _vit_blocks(source, x, image_size)
    else:
        x = _feature_map(source, source(x), image_size)
    return keras.Model(inputs, x, name=BACKBONE_LAYER_NAME)


def _vit_blocks(source: Any, x: Any, image_size: tuple[int, int]) -> Any:
    """A ViT block by block (`ViTEncoder.call` unrolled), the final LayerNorm last: it
    normalises each token alone, so it may follow the tokens' move onto their grid, and
    `{last_trainable: 1}` is that norm."""
    encoder = source.get_layer("vit_encoder")
    x = source.get_layer("vit_patching_and_embedding")(x)
    x = encoder.dropout(x)
    for block in encoder.encoder_layers:
        x = block(x)
    return encoder.layer_norm(_feature_map(source, x, image_size))


def _feature_map(source: Any, x: Any, image_size: tuple[int, int]) -> Any:
    """A token sequence `[batch, tokens, dim]` as a feature map `[batch, rows, cols, dim]`: the
    grid of the patches (or, for a backbone that merges patches, like Swin, the square grid of
    the tokens), after the leading tokens that are no patch (a class token, DeiT's distillation
    token, DINOv2's registers) are dropped."""
    if len(x.shape) != 3:
        return x
    layers = runtime.keras().layers
    tokens, dim = int(x.shape[1]), int(x.shape[2])
    size = getattr(source, "patch_size", None)
    patch: tuple[int, int] | None = None
    if isinstance(size, list | tuple) and len(size) == 2:
        patch = (int(size[0]), int(size[1]))
    elif isinstance(size, int) and not isinstance(size, bool) and size > 0:
        patch = (size, size)
    grids = [(image_size[0] // patch[0], image_size[1] // patch[1])] if patch else []
    grids.append((math.isqrt(tokens), math.isqrt(tokens)))
    for grid in grids:
        extra = tokens - grid[0] * grid[1]
        if 0 <= extra <= MAX_PREFIX_TOKENS:
            break
    else:
        raise UserError(
            "model.backbone",
            f"the KerasHub backbone's output ({tokens} tokens) is not an image grid",
            "use a vision backbone whose output is patch tokens or a feature map",
        )
    if extra:
        x = layers.Cropping1D((extra, 0), name="drop_class_token")(x)
    return layers.Reshape((grid[0], grid[1], dim), name="token_grid")(x)


@contextlib.contextmanager
def _bounded_preset(preset: str) -> Iterator[None]:
    """Bound KerasHub's download in time; offline, name the preset and the cache folder."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_seconds())
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        if looks_like_folder(preset) or not _is_network_failure(error):
            raise
        handle, folder = _cache_place(preset)
        raise UserError(
            "model.backbone",
            f"cannot download the KerasHub preset {preset} ({_reason(error)})",
            f"with no network, put the preset's files in {folder}"
            + (f" (from {handle})" if handle else "")
            + ", or copy a folder that keras_hub's save_to_preset wrote and set "
            "model.backbone: hub:FOLDER",
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _is_network_failure(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    text = str(error)
    return bool(
        isinstance(error, OSError | socket.timeout)
        and not isinstance(error, FileNotFoundError)
        or names & {"ConnectionError", "KaggleApiHTTPError", "HfHubHTTPError", "Timeout"}
        or "Failed to resolve" in text
        or "timed out" in text
    )


def _cache_place(preset: str) -> tuple[str | None, str]:
    """The Kaggle handle of a built-in preset and the kagglehub cache folder it goes to."""
    from keras_hub.src.utils import preset_utils

    handle = preset_utils.BUILTIN_PRESETS.get(preset, {}).get("kaggle_handle", preset)
    cache = os.environ.get("KAGGLEHUB_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "kagglehub"
    )
    if not str(handle).startswith("kaggle://"):
        return (handle if "://" in str(handle) else None), cache
    parts = str(handle).removeprefix("kaggle://").split("/")
    return str(handle), os.path.join(cache, "models", *parts)


def _reason(error: BaseException) -> str:
    """`ConnectionError reaching api.kaggle.com`, or the error's first line, shortened."""
    host = re.search(r"host='([^']+)'", str(error))
    if host:
        return f"{type(error).__name__} reaching {host.group(1)}"
    text = _first_line(error)
    return text if len(text) <= 100 else text[:97] + "..."


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
