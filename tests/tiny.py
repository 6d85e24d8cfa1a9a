"""The suite's tiny ViT configurations, in one place (conftest.py explains them), and tiny
Fashion-MNIST files."""

import json

import numpy as np
from keras import ops

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


def write_fashion_mnist(folder, train=48, test=24, gz=True, seed=0):
    """Tiny Fashion-MNIST idx files in the official format, in `folder` (made if missing)."""
    import numpy as np

    from keras_vit import data

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for split, n in (("train", train), ("test", test)):
        images, labels = data.FASHION_MNIST_FILES[split]
        data.write_idx(folder / (images + suffix),
                       rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        data.write_idx(folder / (labels + suffix), (np.arange(n) % 10).astype(np.uint8))
    return folder


def randomised(model, seed=0):
    """Assigns every variable of `model` a random value (no zeros or ones left, so each one
    matters; scales around 1); returns them by path, in float64."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        base = 1.0 if variable.path.endswith(("gamma", "_scale")) else 0.0
        variable.assign(base + rng.normal(0, 0.3, variable.shape).astype("float32"))
    return {v.path: ops.convert_to_numpy(v).astype("float64") for v in model.weights}


def reference_case(config, image_size=16):
    """(a ViT of `config` with random weights, two random images, the independent NumPy
    forward pass's outputs for them)."""
    from keras_vit import ViT
    from reference_vit import options_forward

    model = ViT(**config)
    weights = randomised(model)
    images = np.random.default_rng(1).uniform(0, 255, (2, image_size, image_size, 3)).astype("float32")
    return model, images, options_forward(weights, config, images)
