"""Training recipes for keras_vit: `python -m recipes NAME` (see the README's "Training")."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow
