"""Assemble the classifier: 0-255 RGB -> backbone preprocessing -> backbone -> new head."""

from __future__ import annotations

from typing import Any

from transferctl import runtime
from transferctl.config.backbones import BackboneSpec
from transferctl.config.schema import Head, Lora
from transferctl.model.backbone import build_backbone
from transferctl.model.preprocess import BackbonePreprocess, preprocess_layer

INPUT_NAME = "image"
OUTPUT_NAME = "predictions"
PREPROCESS_NAME = "preprocess"
FEATURE_NORM_NAME = "feature_norm"
FEATURE_NORM_EPSILON = 1e-6


def build_classifier(
    spec: BackboneSpec,
    image_size: tuple[int, int],
    weights: str,
    head: Head,
    num_classes: int,
    *,
    safe_mode: bool = True,
    legacy: bool = False,
    lora: Lora | None = None,
) -> tuple[Any, Any]:
    """The model and its backbone (a nested layer named `backbone`).

    The softmax runs in float32 so mixed-precision training stays numerically stable. Every
    layer is a built-in Keras layer, so the saved model loads without transferctl.

    The head standardises the pooled features (`feature_norm`, a frozen built-in
    `BatchNormalization` whose statistics are set from the training features when the backbone
    is frozen, else about the identity) before its Dense layers: unnormalised features are what
    kept Adam-trained heads far below a linear probe (docs/keras-behaviour.md).

    Args:
        legacy: build the 0.1 layout (the `BackbonePreprocess` layer, no `feature_norm`), to
            resume a run whose checkpoint holds it (`preprocess.is_legacy_checkpoint`).
        lora: low-rank adapters on the backbone (`model/lora.py`), after its weights load.
            Defaults to `None`: none.
    """
    keras = runtime.keras()
    layers = keras.layers
    backbone = build_backbone(spec, image_size, weights, safe_mode=safe_mode)
    if lora is not None:
        from transferctl.model.lora import enable

        enable(backbone, lora)
    inputs = keras.Input((image_size[0], image_size[1], 3), name=INPUT_NAME)
    if legacy:
        x = BackbonePreprocess(spec.preprocess, name=PREPROCESS_NAME)(inputs)
    else:
        x = preprocess_layer(spec.preprocess, PREPROCESS_NAME)(inputs)
    x = backbone(x)
    if head.pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    elif head.pooling == "max":
        x = layers.GlobalMaxPooling2D(name="pool")(x)
    else:
        x = layers.Flatten(name="pool")(x)
    if not legacy:
        # a frozen BatchNormalization is (x - mean) / sqrt(variance + epsilon) with plain
        # variables: it exports everywhere (Keras's `Normalization` keeps its statistics as
        # captured constants, which the ONNX converter turns into missing inputs)
        norm = layers.BatchNormalization(
            center=False,
            scale=False,
            epsilon=FEATURE_NORM_EPSILON,
            name=FEATURE_NORM_NAME,
            dtype="float32",
        )
        norm.trainable = False  # inference mode always; set from the features, never trained
        x = norm(x)
    for index, units in enumerate(head.hidden):
        x = layers.Dense(units, activation="relu", name=f"hidden_{index}")(x)
        if head.dropout > 0:
            x = layers.Dropout(head.dropout, name=f"dropout_{index}")(x)
    if not head.hidden and head.dropout > 0:
        x = layers.Dropout(head.dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(x)
    model = keras.Model(inputs, outputs, name="transferctl_classifier")
    return model, backbone
