"""Shared fixtures: tiny ViT configurations so the suite stays fast on every backend."""

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


@pytest.fixture
def tiny_config():
    return dict(TINY)


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
