"""`.keras` files saved by keras_vit before `ViTConfig` (commit 09c8b84) still load, on
every backend, and give the outputs they gave then."""

import dataclasses
import json
import pathlib
import zipfile

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


TINY = dict(image_size=32, patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32,
            num_classes=3)


@pytest.mark.parametrize("changes", [
    {},
    {"pooling": "gap", "pooled_norm": True},
    {"pooling": "map", "include_top": False},
    {"num_register_tokens": 2, "layer_scale_init": 1.0},
    {"pooling": "gap", "num_register_tokens": 3},
    {"distillation_token": True, "image_size": (32, 48)},
    {"distillation_token": True, "distillation_head": False},
    {"class_token_position": False, "num_register_tokens": 1, "pre_norm": True},
    {"representation_size": 8, "patch_size": (4, 8)},
    {"include_top": False, "representation_size": 8},
], ids=["token", "gap_pooled_norm", "map_no_top", "registers_layer_scale", "gap_registers",
        "distilled", "distilled_no_head", "unpositioned_class_pre_norm", "pre_logits", "features"])
def test_variable_shapes_are_the_built_models(changes):
    config = keras_vit.ViTConfig(**{**TINY, **changes})
    model = keras_vit.ViT(config=config)
    assert config.variable_shapes == {v.path: tuple(v.shape) for v in model.weights}
    position = model.get_layer("position_embedding").embedding.shape[1]
    assert position == len(config.positioned_prefix_tokens) + config.num_patches
    tokens = model.get_layer("encoder_block_0").output.shape[1]
    assert tokens == config.sequence_length


def test_prefix_tokens_have_one_name_each():
    config = keras_vit.ViTConfig(**TINY, num_register_tokens=2, class_token_position=False)
    assert config.prefix_tokens == ("class", "register", "register")
    assert config.positioned_prefix_tokens == ()
    assert config.num_tokens_before_patches == 3 and config.grid_size == (4, 4)
    distilled = keras_vit.ViTConfig(**TINY, distillation_token=True)
    assert distilled.prefix_tokens == distilled.positioned_prefix_tokens == ("class", "distillation")
    assert keras_vit.ViTConfig(**TINY, pooling="map").prefix_tokens == ()


def test_config_and_keyword_arguments_build_the_same_model():
    config = keras_vit.ViTConfig(**TINY, pooling="gap", num_register_tokens=1)
    from_kwargs = keras_vit.ViT(**TINY, pooling="gap", num_register_tokens=1)
    from_config = keras_vit.ViT(config=config)
    assert from_kwargs.architecture == from_config.architecture == config
    assert from_kwargs.get_config() == from_config.get_config()
    assert keras_vit.ViT(config=config, num_classes=7).architecture == config.replace(num_classes=7)


@pytest.mark.parametrize("kwargs, activation, approximate", [
    ({}, "gelu_tanh", True),
    ({"gelu_approximate": False}, "gelu", False),
    ({"mlp_activation": None, "gelu_approximate": False}, "gelu", False),
    ({"mlp_activation": "quick_gelu", "gelu_approximate": True}, "quick_gelu", False),
    ({"mlp_activation": "gelu_tanh", "gelu_approximate": False}, "gelu_tanh", True),
])
def test_the_mlp_activation_is_resolved_once(kwargs, activation, approximate):
    model = keras_vit.ViT(**TINY, **kwargs)
    assert model.architecture.mlp_activation == activation
    assert model.get_layer("encoder_block_1").mlp_activation == activation
    config = model.get_config()
    assert (config["mlp_activation"], config["gelu_approximate"]) == (activation, approximate)
    assert keras_vit.ViT.from_config(config).architecture == model.architecture


def test_get_config_keeps_the_flat_keys_of_saved_files():
    with zipfile.ZipFile(FIXTURES / "tiny_distilled_main.keras") as archive:
        saved = json.loads(archive.read("config.json"))["config"]
    model = keras_vit.ViT(**{k: v for k, v in saved.items() if k != "trainable"})
    # Every key a saved file has, and newer ViTConfig fields (issue 24) besides.
    assert set(saved) <= set(model.get_config())
    assert set(model.get_config()) - set(saved) <= set(keras_vit.ViTConfig.field_names())
    assert model.get_config()["image_mean"] == saved["image_mean"]


@pytest.mark.parametrize("changes, message", [
    ({"image_size": 30}, r"image_size \(30, 30\) must be divisible by patch_size \(8, 8\)"),
    ({"num_heads": 3}, r"hidden_dim \(16\) must be divisible by num_heads \(3\)"),
    ({"pooling": "cls"}, r"pooling must be one of \('token', 'gap', 'map', 'probe'\)"),
    ({"pooled_norm": True}, r"pooled_norm=True needs pooling='gap'"),
    ({"distillation_token": True, "num_register_tokens": 1}, r"distillation_token=True needs"),
    ({"image_mean": (0.5, 0.5)}, r"image_mean needs 1 or 3 values"),
])
def test_config_checks_its_fields(changes, message):
    with pytest.raises(ValueError, match=message):
        keras_vit.ViTConfig(**{**TINY, **changes})
    with pytest.raises(ValueError, match=message):
        keras_vit.ViT(**{**TINY, **changes})


def test_config_is_frozen_and_normalised():
    config = keras_vit.ViTConfig(**TINY, image_mean=0.4)
    assert config.image_size == (32, 32) and config.image_mean == (0.4, 0.4, 0.4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_layers = 3
    with pytest.raises(TypeError, match="config must be a keras_vit.ViTConfig"):
        keras_vit.ViT(config=dict(TINY))
