"""The backbones transferctl can start from: every `keras.applications` model, by name.

This table never imports TensorFlow, so `validate` and `--help` stay instant. The parameter
and layer counts are those of the backbone without its ImageNet classifier (`include_top=False`)
at the native input size, as built by Keras 3.15; `tests/test_backbones.py` checks a sample
against Keras itself.

Names are matched ignoring case, `_` and `-`: `MobileNetV2`, `mobilenet_v2` and `mobilenetv2`
all name the same backbone.
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


def _spec(
    name: str,
    keras_name: str,
    family: str,
    native_size: int,
    min_size: int,
    preprocess: PreprocessMode,
    params: int,
    layers: int,
) -> BackboneSpec:
    return BackboneSpec(name, keras_name, family, native_size, min_size, preprocess, params, layers)


BACKBONES: tuple[BackboneSpec, ...] = (
    _spec("convnext_base", "ConvNeXtBase", "ConvNeXt", 224, 32, "none", 87_566_464, 259),
    _spec("convnext_large", "ConvNeXtLarge", "ConvNeXt", 224, 32, "none", 196_230_336, 259),
    _spec("convnext_small", "ConvNeXtSmall", "ConvNeXt", 224, 32, "none", 49_454_688, 259),
    _spec("convnext_tiny", "ConvNeXtTiny", "ConvNeXt", 224, 32, "none", 27_820_128, 133),
    _spec("convnext_xlarge", "ConvNeXtXLarge", "ConvNeXt", 224, 32, "none", 348_147_968, 259),
    _spec("densenet121", "DenseNet121", "DenseNet", 224, 32, "torch", 7_037_504, 427),
    _spec("densenet169", "DenseNet169", "DenseNet", 224, 32, "torch", 12_642_880, 595),
    _spec("densenet201", "DenseNet201", "DenseNet", 224, 32, "torch", 18_321_984, 707),
    _spec("efficientnet_b0", "EfficientNetB0", "EfficientNet", 224, 32, "none", 4_049_571, 237),
    _spec("efficientnet_b1", "EfficientNetB1", "EfficientNet", 240, 32, "none", 6_575_239, 339),
    _spec("efficientnet_b2", "EfficientNetB2", "EfficientNet", 260, 32, "none", 7_768_569, 339),
    _spec("efficientnet_b3", "EfficientNetB3", "EfficientNet", 300, 32, "none", 10_783_535, 384),
    _spec("efficientnet_b4", "EfficientNetB4", "EfficientNet", 380, 32, "none", 17_673_823, 474),
    _spec("efficientnet_b5", "EfficientNetB5", "EfficientNet", 456, 32, "none", 28_513_527, 576),
    _spec("efficientnet_b6", "EfficientNetB6", "EfficientNet", 528, 32, "none", 40_960_143, 666),
    _spec("efficientnet_b7", "EfficientNetB7", "EfficientNet", 600, 32, "none", 64_097_687, 813),
    _spec(
        "efficientnet_v2_b0", "EfficientNetV2B0", "EfficientNetV2", 224, 32, "none", 5_919_312, 270
    ),
    _spec(
        "efficientnet_v2_b1", "EfficientNetV2B1", "EfficientNetV2", 240, 32, "none", 6_931_124, 334
    ),
    _spec(
        "efficientnet_v2_b2", "EfficientNetV2B2", "EfficientNetV2", 260, 32, "none", 8_769_374, 349
    ),
    _spec(
        "efficientnet_v2_b3", "EfficientNetV2B3", "EfficientNetV2", 300, 32, "none", 12_930_622, 409
    ),
    _spec(
        "efficientnet_v2_l", "EfficientNetV2L", "EfficientNetV2", 480, 32, "none", 117_746_848, 1028
    ),
    _spec(
        "efficientnet_v2_m", "EfficientNetV2M", "EfficientNetV2", 480, 32, "none", 53_150_388, 740
    ),
    _spec(
        "efficientnet_v2_s", "EfficientNetV2S", "EfficientNetV2", 384, 32, "none", 20_331_360, 513
    ),
    _spec(
        "inception_resnet_v2",
        "InceptionResNetV2",
        "InceptionResNet",
        299,
        75,
        "tf",
        54_336_736,
        780,
    ),
    _spec("inception_v3", "InceptionV3", "Inception", 299, 75, "tf", 21_802_784, 311),
    _spec("mobilenet", "MobileNet", "MobileNet", 224, 32, "tf", 3_228_864, 86),
    _spec("mobilenet_v2", "MobileNetV2", "MobileNetV2", 224, 32, "tf", 2_257_984, 154),
    _spec("mobilenet_v3_large", "MobileNetV3Large", "MobileNetV3", 224, 32, "none", 2_996_352, 187),
    _spec("mobilenet_v3_small", "MobileNetV3Small", "MobileNetV3", 224, 32, "none", 939_120, 157),
    _spec("nasnet_large", "NASNetLarge", "NASNet", 331, 32, "tf", 84_916_818, 1039),
    _spec("nasnet_mobile", "NASNetMobile", "NASNet", 224, 32, "tf", 4_269_716, 769),
    _spec("resnet101", "ResNet101", "ResNet", 224, 32, "caffe", 42_658_176, 345),
    _spec("resnet101_v2", "ResNet101V2", "ResNetV2", 224, 32, "tf", 42_626_560, 377),
    _spec("resnet152", "ResNet152", "ResNet", 224, 32, "caffe", 58_370_944, 515),
    _spec("resnet152_v2", "ResNet152V2", "ResNetV2", 224, 32, "tf", 58_331_648, 564),
    _spec("resnet50", "ResNet50", "ResNet", 224, 32, "caffe", 23_587_712, 175),
    _spec("resnet50_v2", "ResNet50V2", "ResNetV2", 224, 32, "tf", 23_564_800, 190),
    _spec("vgg16", "VGG16", "VGG", 224, 32, "caffe", 14_714_688, 19),
    _spec("vgg19", "VGG19", "VGG", 224, 32, "caffe", 20_024_384, 22),
    _spec("xception", "Xception", "Xception", 299, 71, "tf", 20_861_480, 132),
)

_BY_KEY = {spec.name.replace("_", ""): spec for spec in BACKBONES}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "")


def find(name: str) -> BackboneSpec | None:
    """The backbone called `name` (any case, with or without `_`), or None."""
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
