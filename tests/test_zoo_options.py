"""The zoo's architecture options (layer scale, register tokens, a class token without a
position, a norm before the encoder, a norm after pooling, quick GELU, per-channel
normalisation, the position embedding's kinds), each against an independent NumPy forward
pass, saved and reloaded."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit import ViT
from tiny import randomised, reference_case

BASE = dict(image_size=16, patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32,
            num_classes=3)
OPTIONS = {
    "layer_scale_and_registers": dict(layer_scale_init=1e-5, num_register_tokens=3,
                                      image_mean=(0.485, 0.456, 0.406),
                                      image_std=(0.229, 0.224, 0.225), gelu_approximate=False),
    "class_token_without_position": dict(class_token_position=False, layer_scale_init=0.1),
    "pre_norm_quick_gelu": dict(pre_norm=True, mlp_activation="quick_gelu",
                                layer_norm_epsilon=1e-5, image_std=0.25),
    "gap_with_pooled_norm_and_registers": dict(pooling="gap", pooled_norm=True,
                                               num_register_tokens=2, layer_scale_init=1e-6),
    "learned_2d_position": dict(position_embedding="learned_2d", num_register_tokens=1),
    "sincos_2d_position_and_gap": dict(position_embedding="sincos_2d", pooling="gap"),
    "sincos_2d_position_class_token": dict(position_embedding="sincos_2d"),
    "no_position": dict(position_embedding="none"),
    "class_token_with_gap_pooled_norm_and_registers": dict(  # EVA-02's features
        pooling="gap", class_token=True, pooled_norm=True, num_register_tokens=2),
}


@pytest.mark.parametrize("name", OPTIONS)
def test_options_match_the_numpy_reference_and_round_trip(name, tmp_path):
    model, images, expected = reference_case({**BASE, **OPTIONS[name]})
    ours = ops.convert_to_numpy(model(images)).astype("float64")
    assert np.max(np.abs(ours - expected)) / np.max(np.abs(expected)) < 1e-4
    assert ViT.from_config(model.get_config()).count_params() == model.count_params()
    model.save(tmp_path / "model.keras")
    loaded = ViT.from_preset(str(tmp_path / "model.keras"))  # through keras_vit.weights
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images)), ours, rtol=1e-5, atol=1e-5)


def test_2d_position_tables_resample_per_axis(tmp_path):
    """A "learned_2d" model loaded at another size: rows and columns linearly resampled,
    end points aligned (as the 1-D table is)."""
    model = ViT(**BASE, position_embedding="learned_2d")
    weights = randomised(model)
    model.save(tmp_path / "model.keras")
    bigger = ViT.from_preset(str(tmp_path / "model.keras"), image_size=(40, 24))
    layer = bigger.get_layer("position_embedding")
    for name, size in (("row_embedding", 5), ("column_embedding", 3)):
        table = weights[f"position_embedding/{name}"]
        coords = np.linspace(0, len(table) - 1, size)
        expected = np.stack([np.interp(coords, np.arange(len(table)), c) for c in table.T], 1)
        np.testing.assert_allclose(ops.convert_to_numpy(getattr(layer, name)), expected, atol=1e-6)
    assert bigger(np.zeros((1, 40, 24, 3), "float32")).shape == (1, 3)


def test_option_parameter_counts():
    d = BASE["hidden_dim"]
    plain = ViT(**BASE).count_params()
    assert ViT(**BASE, layer_scale_init=0.1).count_params() == plain + 2 * d * BASE["num_layers"]
    assert ViT(**BASE, num_register_tokens=4).count_params() == plain + 4 * d
    assert ViT(**BASE, class_token_position=False).count_params() == plain - d
    assert ViT(**BASE, pre_norm=True).count_params() == plain + 2 * d
    gap = ViT(**{**BASE, "pooling": "gap"}).count_params()
    assert ViT(**{**BASE, "pooling": "gap"}, pooled_norm=True).count_params() == gap
    assert gap == plain - d - d  # no class token, no class-token position
    assert ViT(**{**BASE, "pooling": "gap"}, class_token=True).count_params() == plain
    assert math.isclose(plain, ViT(**BASE, image_mean=0.3, image_std=0.2).count_params())
    positions = (1 + (BASE["image_size"] // BASE["patch_size"]) ** 2) * d
    assert ViT(**BASE, position_embedding="none").count_params() == plain - positions
    assert ViT(**BASE, position_embedding="sincos_2d").count_params() == plain - positions
    # 2 rows and 2 columns of d / 2, and the class token's position
    assert ViT(**BASE, position_embedding="learned_2d").count_params() == plain - positions + 3 * d


@pytest.mark.parametrize("overrides, message", [
    (dict(mlp_activation="relu"), "mlp_activation must be one of"),
    (dict(num_register_tokens=-1), "num_register_tokens must be an integer >= 0"),
    (dict(pooled_norm=True), "pooled_norm=True needs pooling='gap'"),
    (dict(layer_scale_init="small"), "layer_scale_init must be a finite number"),
    (dict(image_mean=(0.5, 0.5)), r"image_mean needs 1 or 3 values"),
    (dict(image_std=0.0), "image_std must be positive"),
    (dict(position_embedding="2d"), "position_embedding must be one of"),
    (dict(class_token=False), "class_token must be None, True or False"),
    (dict(class_token="yes", pooling="gap"), "class_token must be None, True or False"),
    (dict(position_embedding="sincos_2d", hidden_dim=18, num_heads=2),
     "'sincos_2d' needs hidden_dim divisible by 4"),
])
def test_bad_options_fail_clearly(overrides, message):
    with pytest.raises(ValueError, match=message):
        ViT(**{**BASE, **overrides})


def test_distillation_token_round_trips_and_needs_a_class_token(tmp_path):
    model = ViT(**BASE, distillation_token=True)
    randomised(model)
    d, classes = BASE["hidden_dim"], BASE["num_classes"]
    assert model.count_params() == ViT(**BASE).count_params() + 2 * d + d * classes + classes
    images = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    model.save(tmp_path / "model.keras")
    loaded = ViT.from_preset(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images)),
                               ops.convert_to_numpy(model(images)), rtol=1e-5, atol=1e-5)
    for bad in (dict(pooling="gap"), dict(class_token_position=False), dict(num_register_tokens=1)):
        with pytest.raises(ValueError, match="distillation_token=True needs"):
            ViT(**{**BASE, **bad}, distillation_token=True)
    headless = ViT(**BASE, distillation_token=True, distillation_head=False)  # DeiT, no teacher head
    assert headless.count_params() == ViT(**BASE).count_params() + 2 * d
    assert ViT.from_config(headless.get_config()).distillation_head is False
    with pytest.raises(ValueError, match="False only with distillation_token=True"):
        ViT(**BASE, distillation_head=False)


# timm 1.0.31's counts (REFERENCE.md) for the same architectures; Hugging Face's DINOv2 with
# registers gives the class token a position (timm's reg4 models do not): one width more.
ZOO_PARAMS = {
    "dinov2_s14": (518, 22_056_192),
    "dinov2_b14": (518, 86_579_712),
    "dinov2_reg_s14": (518, 22_057_344 + 384),
    "deit_b16_distilled": (224, 87_338_192),
    "deit3_b16": (224, 86_585_320),
    "clip_b16": (224, 86_193_152 + 768),  # keras_vit's patch conv has a bias (zeros for CLIP)
    "siglip_b16": (224, 92_884_224),
    "mae_b16": (224, 85_798_656),
    "dinov3_s16": (256, 21_586_944),
    "dinov3_b16": (256, 85_641_216),
    "dinov3_l16": (256, 303_079_424),
    "siglip2_b16": (224, 92_884_224),
    "siglip2_b16_naflex": (256, 92_930_304),
    "aimv2_l14": (224, 309_197_824),
    "eva02_b14": (224, 85_758_720),
    "pe_core_b16": (224, 93_673_984),
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", ZOO_PARAMS)
def test_zoo_preset_parameter_counts(preset):
    size, expected = ZOO_PARAMS[preset]
    assert ViT.from_preset(preset, weights=None, image_size=size).count_params() == expected


def test_hub_presets_load_through_the_hub(monkeypatch, tmp_path):
    """A preset whose weights are an hf:// handle fetches them with keras_vit.hub."""
    from checkpoint_files import google_params, write_hf
    from keras_vit import hub, presets

    path = write_hf(tmp_path, google_params())
    asked = []
    monkeypatch.setattr(hub, "fetch", lambda handle: asked.append(handle) or path)
    entry = dict(presets.PRESETS["deit_b16_distilled"])
    entry.update(config=dict(patch_size=8, hidden_dim=32, mlp_dim=64, num_heads=4, num_layers=2),
                 weights={"tiny": dict(entry["weights"]["in1k"], url="hf://test/tiny")},
                 default_weights="tiny")
    monkeypatch.setitem(presets.PRESETS, "hub_tiny", entry)
    model = ViT.from_preset("hub_tiny")
    assert asked == ["hf://test/tiny"] and model.num_heads == 4


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="converts under TensorFlow in-process (the other backends export "
                    "through the same TensorFlow subprocess)")
@pytest.mark.parametrize("kind", ["learned_2d", "sincos_2d"])
def test_2d_position_embeddings_export_to_tflite(kind, tmp_path):
    from keras_vit import export

    model, images, _ = reference_case({**BASE, "position_embedding": kind})
    path = export.export_tflite(model, tmp_path / "m.tflite")
    export.check_builtin_ops(path)
    np.testing.assert_allclose(export.run_tflite(path, images)[0],
                               ops.convert_to_numpy(model(images)), rtol=1e-4, atol=1e-4)
