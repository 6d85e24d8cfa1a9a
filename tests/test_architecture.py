"""`.keras` files saved by keras_vit before `ViTConfig` (commit 09c8b84) still load, on
every backend, and give the outputs they gave then."""

import pathlib

import keras
import numpy as np
import pytest

import keras_vit  # noqa: F401  (registers the ViT classes)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["tiny_distilled_main", "tiny_map_registers_main"])
def test_keras_file_saved_by_old_main_gives_the_same_outputs(name):
    model = keras.saving.load_model(FIXTURES / f"{name}.keras")
    images = np.load(FIXTURES / "tiny_distilled_main_input.npy")
    expected = np.load(FIXTURES / f"{name}_output.npy")
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-5)
