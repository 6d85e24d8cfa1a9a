"""`ViT.from_preset` on a folder (the layout `hf download`, `save_pretrained` and timm's
`save_for_hf` leave) and on checkpoints without a classification head, which load as the
features model unless `num_classes=` asks for a new head: every format."""

import json
import shutil

import numpy as np
import pytest

from checkpoint_files import (
    D, HEADS, google_params, randomised_hf, write_big_vision, write_hf, write_timm, write_vit_jax)
from tiny import TINY
from keras_vit import ViT

IMAGES = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")


def write_timm_config(folder, num_classes, mean=None):
    """timm's config.json (as `save_for_hf` writes it) for the tiny ViT."""
    config = {"architecture": "vit_tiny_test", "num_classes": num_classes,
              "model_args": {"num_heads": HEADS}}
    if mean:
        config["pretrained_cfg"] = {"mean": mean, "std": [0.4, 0.5, 0.6]}
    (folder / "config.json").write_text(json.dumps(config))


def headless_file(fmt, folder):
    """A tiny checkpoint without a head in format `fmt`, written into `folder`."""
    if fmt == "vit_jax":
        return write_vit_jax(folder / "m.npz", google_params(classes=None))
    if fmt == "big_vision":
        return write_big_vision(folder / "m.npz", google_params(classes=None))
    if fmt == "timm":
        write_timm_config(folder, num_classes=0)
        return write_timm(folder / "model.safetensors", google_params(classes=None))
    if fmt == "hf":
        return randomised_hf("ViTModel", folder)[1]
    path = folder / "m.keras"
    ViT(**{**TINY, "include_top": False}).save(path)
    return str(path)


@pytest.mark.parametrize("fmt", ["vit_jax", "big_vision", "timm", "hf", "keras"])
def test_a_file_without_a_head_loads_as_the_features_model(fmt, tmp_path):
    path = headless_file(fmt, tmp_path)
    features = ViT.from_preset(path)
    assert not features.include_top and features.output_shape == (None, D)
    explicit = ViT.from_preset(path, include_top=False)
    np.testing.assert_array_equal(features.predict(IMAGES, verbose=0),
                                  explicit.predict(IMAGES, verbose=0))
    assert not ViT.from_preset(path, weights=None).include_top

    classifier = ViT.from_preset(path, num_classes=5)  # a new head, zero-initialised
    assert classifier.include_top and classifier.output_shape == (None, 5)
    np.testing.assert_array_equal(classifier.predict(IMAGES, verbose=0), 0.0)
    assert ViT.from_preset(path, weights=None, num_classes=5).output_shape == (None, 5)
    with pytest.raises(ValueError, match="has no classification head: pass num_classes="):
        ViT.from_preset(path, include_top=True)


def test_a_file_with_a_head_keeps_it(tmp_path):
    path = write_vit_jax(tmp_path / "m.npz", google_params())
    assert ViT.from_preset(path).output_shape == (None, TINY["num_classes"])


@pytest.mark.parametrize("fmt", ["hf", "timm"])
def test_a_folder_loads_its_model_safetensors_with_its_config(fmt, tmp_path):
    folder = tmp_path / "download"
    folder.mkdir()
    if fmt == "hf":
        write_hf(folder, google_params(seed=1))
    else:
        write_timm(folder / "model.safetensors", google_params(seed=1))
        write_timm_config(folder, TINY["num_classes"], mean=[0.1, 0.2, 0.3])
    (folder / "README.md").write_text("a model card")
    from_folder = ViT.from_preset(folder)
    from_file = ViT.from_preset(folder / "model.safetensors")
    assert from_folder.get_config() == from_file.get_config()
    np.testing.assert_array_equal(from_folder.predict(IMAGES, verbose=0),
                                  from_file.predict(IMAGES, verbose=0))
    if fmt == "timm":  # config.json beside the file was read: its mean and std
        np.testing.assert_allclose(from_folder.image_mean, [0.1, 0.2, 0.3])


def test_a_folder_with_one_checkpoint_of_another_name(tmp_path):
    write_vit_jax(tmp_path / "ViT-Ti_16.npz", google_params())
    assert ViT.from_preset(tmp_path).output_shape == (None, TINY["num_classes"])


def test_a_folder_without_one_checkpoint_fails_clearly(tmp_path):
    (tmp_path / "notes.txt").write_text("no weights here")
    with pytest.raises(FileNotFoundError, match=r"No checkpoint in the folder .*notes\.txt"):
        ViT.from_preset(tmp_path)
    write_vit_jax(tmp_path / "a.npz", google_params())
    shutil.copy(tmp_path / "a.npz", tmp_path / "b.npz")
    with pytest.raises(ValueError, match=r"several checkpoints \(a\.npz, b\.npz\)"):
        ViT.from_preset(tmp_path)
