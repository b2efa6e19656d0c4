"""A fix for KerasHub 0.32's ViT layer configs, so that a ViT laid out block by block saves
loadably.

transferctl lays a ViT out block by block (`model/hub.py`), so its layers are saved one by one
rather than through `ViTBackbone.from_config`. In KerasHub 0.32 two of them write configs their
own constructors refuse ("Unrecognized keyword arguments"): `ViTPatchingAndEmbedding` writes
`num_patches` and `num_positions` (and leaves out `use_patch_bias` and `data_format`, which it
takes), `ViTEncoderBlock` writes `key_dim`. A file holding them does not load.

The fix makes `get_config` write the constructor's arguments exactly: keys the constructor does
not take are dropped, arguments it takes that are missing are read from the layer. It is applied
to a class only while its method's source is the one measured (as `distribute/keras_multiworker.py`
does), so a KerasHub that fixes it upstream is left alone. The file then loads with Keras and
KerasHub alone; transferctl applies the fix before anything saves such a layer (building a hub
backbone, or loading a `.keras` file that holds one).
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from typing import Any

# class name in keras_hub.src.models.vit.vit_layers -> sha256 of its get_config's source (0.32.0)
BROKEN_GET_CONFIG = {
    "ViTPatchingAndEmbedding": "9aef6a21c4276737cac2dad95821c6aaeed0f3b07d22bf065dfe22db11b03b4d",
    "ViTEncoderBlock": "385ae1de0c2eba8c64e496ef5d6470ec4906aed9a80314904addfed0fad07221",
}
LAYER_KEYS = ("name", "trainable", "dtype")  # keras.layers.Layer's own config


def fix_vit_layer_configs() -> int:
    """Apply the fix where KerasHub is imported and a method is still the broken one; how many
    classes carry it."""
    if sys.modules.get("keras_hub") is None:  # not imported (or blocked): nothing to save
        return 0
    from keras_hub.src.models.vit import vit_layers

    fixed = 0
    for class_name, digest in BROKEN_GET_CONFIG.items():
        layer_class = getattr(vit_layers, class_name, None)
        if layer_class is None:
            continue
        original = layer_class.get_config
        if getattr(original, "_transferctl_fix", False):
            fixed += 1
        elif _digest(original) == digest:
            layer_class.get_config = _constructor_config(layer_class, original)
            fixed += 1
    return fixed


def _constructor_config(layer_class: Any, original: Any) -> Any:
    arguments = [
        name
        for name, parameter in inspect.signature(layer_class.__init__).parameters.items()
        if name != "self" and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
    ]

    def get_config(self: Any) -> dict[str, Any]:
        config = original(self)
        kept = {key: value for key, value in config.items() if key in (*LAYER_KEYS, *arguments)}
        for name in arguments:
            if name not in kept and hasattr(self, name):
                kept[name] = getattr(self, name)
        return kept

    get_config._transferctl_fix = True  # type: ignore[attr-defined]
    return get_config


def _digest(function: Any) -> str:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()
