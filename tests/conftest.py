"""Shared fixtures: tiny ViT configurations so the suite stays fast on every backend.

`TINY` (tests/tiny.py; the `tiny_config` fixture) is the suite's one tiny ViT, on 32x32 RGB images; the
tests that train it many times (test_training, test_recipes) use it with one encoder block,
`TINY_ONE_BLOCK`, and on Fashion-MNIST-shaped 28x28 grayscale images with 7x7-pixel
patches (the same 4x4 patch grid), `TINY_FASHION_MNIST` (the `tiny_fashion_mnist_config`
fixture). `recipe_model_args` turns them into the recipes' `--model KEY=VALUE` options.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from tiny import TINY, TINY_FASHION_MNIST


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
