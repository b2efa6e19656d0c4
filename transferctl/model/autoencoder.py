"""The autoencoder of `transferctl pretrain`: the configured backbone encodes, a decoder of
upsampling convolutions reconstructs the input.

    0-255 RGB -> [noise: GaussianNoise on pixels / 255, in training only] -> preprocess
    -> backbone = the code
    -> [sparsity: ActivityRegularization, L1] -> (UpSampling2D + Conv2D) per factor of 2
    -> [Resizing, when the backbone's stride does not divide the input] -> Conv2D(3, sigmoid)
    = the input scaled to [0, 1]

The loss is the mean squared error against the clean input / 255; noise reaches only the
encoder's input, and only in training. The layers named `preprocess` and `backbone` are built as
the classifier's are, so `model/batchnorm.recompute_statistics` works on this model and
`encoder_model` (input -> preprocess -> backbone -> pooling) is what a finetune run takes its
backbone from. Every layer is a built-in Keras layer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.config.backbones import BackboneSpec
from transferctl.config.schema import Pretrain
from transferctl.model.backbone import BACKBONE_LAYER_NAME, build_backbone
from transferctl.model.classifier import INPUT_NAME, PREPROCESS_NAME
from transferctl.model.preprocess import preprocess_layer

OUTPUT_NAME = "reconstruction"
NOISE_NAME = "noise"
SPARSITY_NAME = "sparsity"
POOL_NAME = "pool"
# Filters of the first decoder block (the smallest map), halved per block down to the minimum.
DECODER_WIDTH = 128
DECODER_MIN_WIDTH = 16


def build_autoencoder(
    spec: BackboneSpec,
    image_size: tuple[int, int],
    weights: str,
    pretrain: Pretrain,
    *,
    seed: int = 0,
    safe_mode: bool = True,
) -> tuple[Any, Any]:
    """The autoencoder and its backbone (a nested layer named `backbone`).

    Example:
        model, backbone = build_autoencoder(backbones.get("mobilenet_v3_small"), (32, 32),
                                            "none", Pretrain(noise=0.1))

    Args:
        weights: the backbone's starting weights, as `model.weights` (`build_backbone`).
        pretrain: the `pretrain` section: `sparsity` adds `sparsity * mean(|code|)` to the
            loss, `noise` is the standard deviation of Gaussian noise on the input, in 0-1
            pixel units.
        seed: seeds the input noise. Defaults to 0.
    """
    keras = runtime.keras()
    layers = keras.layers
    height, width = image_size
    backbone = build_backbone(spec, image_size, weights, safe_mode=safe_mode)
    inputs = keras.Input((height, width, 3), name=INPUT_NAME)
    x = inputs
    if pretrain.noise > 0:
        # GaussianNoise takes a standard deviation of at most 1: add it to pixels in [0, 1]
        x = layers.Rescaling(1.0 / 255.0, name=f"{NOISE_NAME}_scale")(x)
        x = layers.GaussianNoise(pretrain.noise, seed=seed, name=NOISE_NAME)(x)
        x = layers.Rescaling(255.0, name=f"{NOISE_NAME}_unscale")(x)
    x = preprocess_layer(spec.preprocess, PREPROCESS_NAME)(x)
    code = backbone(x)
    if pretrain.sparsity > 0:
        # Keras adds l1 * sum(|code|) / batch size: divided by the code's size, that is the mean
        size = math.prod(int(side) for side in code.shape[1:])
        code = layers.ActivityRegularization(l1=pretrain.sparsity / size, name=SPARSITY_NAME)(code)
    x = code
    code_height, code_width = int(code.shape[1]), int(code.shape[2])
    blocks = max(0, math.ceil(math.log2(max(height / code_height, width / code_width))))
    for index in range(blocks):
        filters = max(DECODER_WIDTH >> index, DECODER_MIN_WIDTH)
        x = layers.UpSampling2D(2, name=f"decoder_up_{index}")(x)
        x = layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=f"decoder_conv_{index}"
        )(x)
    if (code_height << blocks, code_width << blocks) != (height, width):
        x = layers.Resizing(height, width, name="decoder_resize")(x)
    outputs = layers.Conv2D(
        3, 3, padding="same", activation="sigmoid", dtype="float32", name=OUTPUT_NAME
    )(x)
    return keras.Model(inputs, outputs, name="transferctl_autoencoder"), backbone


def as_reconstruction(dataset: Any) -> Any:
    """(images 0-255, labels) batches -> (images 0-255, the same images in [0, 1]) batches."""
    return dataset.map(
        lambda images, _: (images, images / 255.0),
        num_parallel_calls=runtime.tf().data.AUTOTUNE,
    )


def encoder_model(autoencoder: Any) -> Any:
    """input -> preprocess -> backbone -> global average pooling, sharing the autoencoder's
    layers: what `model.keras` holds, and what finetune copies the `backbone` layer from."""
    keras = runtime.keras()
    preprocess = autoencoder.get_layer(PREPROCESS_NAME)
    backbone = autoencoder.get_layer(BACKBONE_LAYER_NAME)
    inputs = keras.Input(autoencoder.input.shape[1:], name=INPUT_NAME)
    features = keras.layers.GlobalAveragePooling2D(name=POOL_NAME)(backbone(preprocess(inputs)))
    return keras.Model(inputs, features, name="transferctl_encoder")


def sample_reconstructions(
    model: Any, dataset: Any, count: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Up to `count` images of `dataset`, in [0, 1]: the inputs, the noisy inputs the encoder
    sees (None without noise) and the model's reconstructions of them.

    Args:
        dataset: (images 0-255, anything) batches, in order.
        noise: `pretrain.noise`; the noisy inputs are drawn with `seed`, as in training.
    """
    batches = []
    taken = 0
    for images, _ in dataset:
        batches.append(np.asarray(images, dtype=np.float32))
        taken += batches[-1].shape[0]
        if taken >= count:
            break
    pixels = np.concatenate(batches)[:count] if batches else np.zeros((0, 1, 1, 3), np.float32)
    noisy = None
    seen = pixels
    if noise > 0:
        rng = np.random.default_rng(seed)
        seen = (pixels + rng.normal(0.0, noise * 255.0, pixels.shape)).astype(np.float32)
        noisy = np.clip(seen / 255.0, 0.0, 1.0)
    # the noise layer is off in inference: the noisy copies are made here
    outputs = model.predict(seen, verbose=0) if len(seen) else np.zeros_like(pixels)
    return np.clip(pixels / 255.0, 0.0, 1.0), noisy, np.asarray(outputs, dtype=np.float32)
