"""Training recipes for keras_vit (see docs/training.md)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow
