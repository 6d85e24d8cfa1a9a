"""Feeds for tests/test_integrity.py, and its 8-device `DataParallel` run:

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python tests/integrity_helpers.py

which prints one JSON line: for each call fed a batch the 8 devices do not divide, the
error it raised, then whether the model still predicts as before, trains and saves.
"""

import json
import os
import sys
import tempfile

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny import TINY_ONE_BLOCK  # noqa: E402

from keras_vit import ViT, insight  # noqa: E402


def compiled_vit():
    model = ViT(**TINY_ONE_BLOCK)
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def pixels(count, size=32, seed=0, high=255.0):
    return np.random.default_rng(seed).uniform(0, high, (count, size, size, 3)).astype("float32")


def labels(count):
    return np.arange(count) % TINY_ONE_BLOCK["num_classes"]


class Batches(keras.utils.PyDataset):
    """A `PyDataset` of the given batches."""

    def __init__(self, *batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def generator(*batches):
    yield from batches


def usable(model, images, expected, folder):
    """Whether `model` predicts `expected` for `images`, trains a step, gives its weights
    and saves (raises if one of them fails)."""
    same = bool(np.array_equal(model.predict(images, verbose=0), expected))
    model.fit(images, labels(len(images)), verbose=0)
    assert len(model.get_weights()) == len(model.weights)
    model.save(os.path.join(folder, "model.keras"))
    return same


def data_parallel_run():
    """The calls that fed 8 devices 12 or 3 images, with their errors, and `usable`."""
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    keras.utils.set_random_seed(0)
    model = compiled_vit()
    images = pixels(16)
    model.fit(images, labels(16), batch_size=16, verbose=0)
    before = model.predict(images, batch_size=16, verbose=0)
    calls = {
        "predict 12": lambda: model.predict(pixels(12), batch_size=16, verbose=0),
        "fit 12": lambda: model.fit(pixels(12), labels(12), batch_size=12, verbose=0),
        "evaluate 12": lambda: model.evaluate(pixels(12), labels(12), verbose=0),
        "predict 3 from a generator": lambda: model.predict(generator((pixels(3),)), verbose=0),
        "fit 3 from a PyDataset": lambda: model.fit(Batches((pixels(3), labels(3))), verbose=0),
        "intermediate_model predict 12":
            lambda: insight.intermediate_model(model).predict(pixels(12), verbose=0),
    }
    errors = {}
    for name, call in calls.items():
        try:
            call()
            errors[name] = None
        except ValueError as error:  # jax's IndivisibleError is one
            errors[name] = type(error).__name__
    with tempfile.TemporaryDirectory() as folder:
        same = usable(model, images, before, folder)
    return {"devices": len(keras.distribution.list_devices()), "errors": errors, "same": same}


if __name__ == "__main__":
    print(json.dumps(data_parallel_run()))
