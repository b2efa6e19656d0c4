"""The backbone table (read without TensorFlow) agrees with Keras itself."""

from __future__ import annotations

import pytest

from transferctl.config import backbones


def test_every_keras_application_is_listed_once() -> None:
    import keras

    constructors = {name for name in dir(keras.applications) if name[0].isupper()}
    listed = [spec.keras_name for spec in backbones.BACKBONES]
    assert len(listed) == len(set(listed))
    assert set(listed) == constructors


@pytest.mark.parametrize("name", ["MobileNetV2", "mobilenet_v3_small", "efficientnetb0", "VGG16"])
def test_names_match_ignoring_case_and_underscores(name: str) -> None:
    assert backbones.find(name) is not None
    assert backbones.find(name.upper()) == backbones.find(name.lower())


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["mobilenet_v3_small", "efficientnet_b0", "vgg16", "resnet50", "densenet121"]
)
def test_parameter_and_layer_counts_match_keras(name: str) -> None:
    import keras

    spec = backbones.get(name)
    model = getattr(keras.applications, spec.keras_name)(
        include_top=False, weights=None, input_shape=(spec.native_size, spec.native_size, 3)
    )
    assert model.count_params() == spec.params
    assert len(model.layers) == spec.layers
