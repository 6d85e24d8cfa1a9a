"""Shared fixtures: tiny ViT configurations so the suite stays fast on every backend.

`TINY` (the `tiny_config` fixture) is the suite's one tiny ViT, on 32x32 RGB images; the
tests that train it many times (test_training, test_recipes) use it with one encoder block,
`TINY_ONE_BLOCK`, and on Fashion-MNIST-shaped 28x28 grayscale images with 7x7-pixel
patches (the same 4x4 patch grid), `TINY_FASHION_MNIST` (the `tiny_fashion_mnist_config`
fixture). `recipe_model_args` turns them into the recipes' `--model KEY=VALUE` options.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

TINY = dict(
    image_size=32,
    patch_size=8,
    hidden_dim=32,
    num_layers=2,
    num_heads=4,
    mlp_dim=64,
    num_classes=10,
)
TINY_ONE_BLOCK = dict(TINY, num_layers=1)
TINY_FASHION_MNIST = dict(TINY_ONE_BLOCK, image_size=28, patch_size=7, num_channels=1)

# The entries of a model config that describe the architecture, not the data.
ARCHITECTURE_KEYS = ("patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_dim")


def recipe_model_args(config=None, keys=ARCHITECTURE_KEYS, **overrides):
    """["--model", "patch_size=7", "--model", "hidden_dim=32", ...]: a recipe's options for
    the `keys` of `config` (by default `TINY_FASHION_MNIST`), with `overrides` on top."""
    config = {**(TINY_FASHION_MNIST if config is None else config), **overrides}
    args = []
    for key in [k for k in keys if k in config] + [k for k in overrides if k not in keys]:
        args += ["--model", f"{key}={json.dumps(config[key])}"]
    return args


@pytest.fixture
def tiny_config():
    return dict(TINY)


@pytest.fixture
def tiny_fashion_mnist_config():
    return dict(TINY_FASHION_MNIST)


@pytest.fixture
def images():
    """A batch of 2 random 32x32 RGB images with pixel values 0..255."""
    return np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Every test starts from the float32 policy and a fresh seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
