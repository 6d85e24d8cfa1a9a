"""What tests/test_export.py and tests/test_export_onnx.py share: a tiny ViT whose logits
differ per image, and structured random pixels to feed it."""

import numpy as np

from keras_vit import ViT
from tiny import TINY  # noqa: F401  (the export tests use it from here)


def tiny_vit(**overrides):
    """A tiny ViT with exact (erf) GELU and a random head, so the logits differ per image."""
    model = ViT(**{**TINY, "gelu_approximate": False, **overrides})
    rng = np.random.default_rng(1)
    head = model.get_layer("head")
    head.kernel.assign(rng.normal(0, 0.5, head.kernel.shape).astype("float32"))
    head.bias.assign(rng.normal(0, 0.5, head.bias.shape).astype("float32"))
    return model


def pixels(count, seed=0, shape=(32, 32, 3)):
    """Random integer pixels with some structure (blocks), as float32 0..255."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, shape[0] // 8, shape[1] // 8, shape[2]))
    images = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    noise = rng.integers(-20, 21, images.shape)
    return np.clip(images + noise, 0, 255).astype("float32")
