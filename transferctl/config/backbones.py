"""The backbones transferctl can start from: every `keras.applications` model, by name.

This table never imports TensorFlow, so `validate` and `--help` stay instant. The parameter
and layer counts are those of the backbone without its ImageNet classifier (`include_top=False`)
at the native input size, as built by Keras 3.15; `tests/test_backbones.py` checks a sample
against Keras itself.

Names are matched ignoring case, `_` and `-`: `MobileNetV2`, `mobilenet_v2` and `mobilenetv2`
all name the same backbone. `hub:PRESET_OR_DIR` names a KerasHub backbone (`config/hub.py`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

# How the backbone expects its pixels, given 0-255 RGB input:
#   caffe: RGB->BGR, minus the ImageNet mean (VGG, ResNet v1)
#   tf:    scaled to [-1, 1] (MobileNet v1/v2, ResNet v2, Inception, Xception, NASNet)
#   torch: scaled to [0, 1], minus the ImageNet mean, over its std (DenseNet)
#   none:  the network rescales itself, it takes 0-255 (EfficientNet, EfficientNetV2,
#          MobileNetV3, ConvNeXt)
PreprocessMode = Literal["caffe", "tf", "torch", "none"]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    keras_name: str
    family: str
    native_size: int
    min_size: int
    preprocess: PreprocessMode
    params: int
    layers: int

    @property
    def has_preprocessing_switch(self) -> bool:
        """Whether the Keras constructor takes `include_preprocessing`."""
        return self.family in ("EfficientNetV2", "MobileNetV3", "ConvNeXt")


# Per family: the smallest input side Keras builds it at, and how it expects its pixels.
FAMILIES: dict[str, tuple[int, PreprocessMode]] = {
    "ConvNeXt": (32, "none"),
    "DenseNet": (32, "torch"),
    "EfficientNet": (32, "none"),
    "EfficientNetV2": (32, "none"),
    "Inception": (75, "tf"),
    "InceptionResNet": (75, "tf"),
    "MobileNet": (32, "tf"),
    "MobileNetV2": (32, "tf"),
    "MobileNetV3": (32, "none"),
    "NASNet": (32, "tf"),
    "ResNet": (32, "caffe"),
    "ResNetV2": (32, "tf"),
    "VGG": (32, "caffe"),
    "Xception": (71, "tf"),
}

# name, Keras class name, family, native input side, parameters, layers
_CATALOG: tuple[tuple[str, str, str, int, int, int], ...] = (
    ("convnext_base", "ConvNeXtBase", "ConvNeXt", 224, 87_566_464, 259),
    ("convnext_large", "ConvNeXtLarge", "ConvNeXt", 224, 196_230_336, 259),
    ("convnext_small", "ConvNeXtSmall", "ConvNeXt", 224, 49_454_688, 259),
    ("convnext_tiny", "ConvNeXtTiny", "ConvNeXt", 224, 27_820_128, 133),
    ("convnext_xlarge", "ConvNeXtXLarge", "ConvNeXt", 224, 348_147_968, 259),
    ("densenet121", "DenseNet121", "DenseNet", 224, 7_037_504, 427),
    ("densenet169", "DenseNet169", "DenseNet", 224, 12_642_880, 595),
    ("densenet201", "DenseNet201", "DenseNet", 224, 18_321_984, 707),
    ("efficientnet_b0", "EfficientNetB0", "EfficientNet", 224, 4_049_571, 237),
    ("efficientnet_b1", "EfficientNetB1", "EfficientNet", 240, 6_575_239, 339),
    ("efficientnet_b2", "EfficientNetB2", "EfficientNet", 260, 7_768_569, 339),
    ("efficientnet_b3", "EfficientNetB3", "EfficientNet", 300, 10_783_535, 384),
    ("efficientnet_b4", "EfficientNetB4", "EfficientNet", 380, 17_673_823, 474),
    ("efficientnet_b5", "EfficientNetB5", "EfficientNet", 456, 28_513_527, 576),
    ("efficientnet_b6", "EfficientNetB6", "EfficientNet", 528, 40_960_143, 666),
    ("efficientnet_b7", "EfficientNetB7", "EfficientNet", 600, 64_097_687, 813),
    ("efficientnet_v2_b0", "EfficientNetV2B0", "EfficientNetV2", 224, 5_919_312, 270),
    ("efficientnet_v2_b1", "EfficientNetV2B1", "EfficientNetV2", 240, 6_931_124, 334),
    ("efficientnet_v2_b2", "EfficientNetV2B2", "EfficientNetV2", 260, 8_769_374, 349),
    ("efficientnet_v2_b3", "EfficientNetV2B3", "EfficientNetV2", 300, 12_930_622, 409),
    ("efficientnet_v2_l", "EfficientNetV2L", "EfficientNetV2", 480, 117_746_848, 1028),
    ("efficientnet_v2_m", "EfficientNetV2M", "EfficientNetV2", 480, 53_150_388, 740),
    ("efficientnet_v2_s", "EfficientNetV2S", "EfficientNetV2", 384, 20_331_360, 513),
    ("inception_resnet_v2", "InceptionResNetV2", "InceptionResNet", 299, 54_336_736, 780),
    ("inception_v3", "InceptionV3", "Inception", 299, 21_802_784, 311),
    ("mobilenet", "MobileNet", "MobileNet", 224, 3_228_864, 86),
    ("mobilenet_v2", "MobileNetV2", "MobileNetV2", 224, 2_257_984, 154),
    ("mobilenet_v3_large", "MobileNetV3Large", "MobileNetV3", 224, 2_996_352, 187),
    ("mobilenet_v3_small", "MobileNetV3Small", "MobileNetV3", 224, 939_120, 157),
    ("nasnet_large", "NASNetLarge", "NASNet", 331, 84_916_818, 1039),
    ("nasnet_mobile", "NASNetMobile", "NASNet", 224, 4_269_716, 769),
    ("resnet101", "ResNet101", "ResNet", 224, 42_658_176, 345),
    ("resnet101_v2", "ResNet101V2", "ResNetV2", 224, 42_626_560, 377),
    ("resnet152", "ResNet152", "ResNet", 224, 58_370_944, 515),
    ("resnet152_v2", "ResNet152V2", "ResNetV2", 224, 58_331_648, 564),
    ("resnet50", "ResNet50", "ResNet", 224, 23_587_712, 175),
    ("resnet50_v2", "ResNet50V2", "ResNetV2", 224, 23_564_800, 190),
    ("vgg16", "VGG16", "VGG", 224, 14_714_688, 19),
    ("vgg19", "VGG19", "VGG", 224, 20_024_384, 22),
    ("xception", "Xception", "Xception", 299, 20_861_480, 132),
)

BACKBONES: tuple[BackboneSpec, ...] = tuple(
    BackboneSpec(name, keras_name, family, native_size, *FAMILIES[family], params, layers)
    for name, keras_name, family, native_size, params, layers in _CATALOG
)

_BY_KEY = {spec.name.replace("_", ""): spec for spec in BACKBONES}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "")


def find(name: str) -> BackboneSpec | None:
    """The backbone called `name` (any case, with or without `_`), or None.

    `hub:PRESET_OR_DIR` names a KerasHub backbone (`config/hub.py`).
    """
    from transferctl.config import hub  # imports this module: loaded on first use

    if hub.is_hub(name):
        return hub.hub_spec(name)
    return _BY_KEY.get(_key(name))


def get(name: str) -> BackboneSpec:
    spec = find(name)
    if spec is None:
        raise KeyError(name)
    return spec


def suggest(name: str) -> str | None:
    """The closest known name, for 'did you mean' hints."""
    matches = difflib.get_close_matches(_key(name), list(_BY_KEY), n=1, cutoff=0.6)
    return _BY_KEY[matches[0]].name if matches else None
