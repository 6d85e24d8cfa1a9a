"""Checkpoint loading: every format, written from random weights in its exact layout, must
give the logits an independent float64 reference computes straight from the file."""

import json
import os
import pathlib
import re

import numpy as np
import pytest
from keras import ops

import keras_vit
from keras_vit import ViT, preset_loading, presets
from keras_vit import weights as vit_weights
from checkpoint_files import (
    CLASSES, D, GRID, HEADS, LAYERS, MLP, PATCH, google_params, hf_output, randomised_hf,
    write_big_vision, write_hf, write_timm, write_vit_jax)
from reference_vit import reference_logits


def logits(model, images):
    return ops.convert_to_numpy(model(images)).astype("float64")


def assert_close(actual, expected):
    """Agreement within 1e-4 of the largest reference value (float32 vs float64)."""
    assert actual.shape == expected.shape
    err = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert err < 1e-4, f"relative error {err:.2e}"


@pytest.fixture
def images():
    return np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


FORMATS = {
    "vit_jax": lambda tmp: write_vit_jax(tmp / "vit_jax.npz", google_params()),
    "vit_jax_pre_logits": lambda tmp: write_vit_jax(
        tmp / "in21k.npz", google_params(representation=24, classes=21)),
    "vit_jax_gap": lambda tmp: write_vit_jax(tmp / "gap.npz", google_params(cls=False)),
    "big_vision": lambda tmp: write_big_vision(tmp / "bv.npz", google_params()),
    "big_vision_scanned_gap": lambda tmp: write_big_vision(
        tmp / "bv_scan.npz", google_params(cls=False), scanned=True),
    "timm": lambda tmp: write_timm(tmp / "model.safetensors", google_params()),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_matches_the_reference(fmt, tmp_path, images):
    path = FORMATS[fmt](tmp_path)
    google = not fmt.startswith("timm")
    # timm files do not record the head count; 32-wide models need it said.
    model = ViT.from_preset(path) if google else ViT.from_preset(path, num_heads=HEADS)
    assert model.hidden_dim == D and model.num_layers == LAYERS and model.patch_size == (8, 8)
    assert model.gelu_approximate is google and model.layer_norm_epsilon == 1e-6
    expected = reference_logits(path, images, num_heads=HEADS)
    assert_close(logits(model, images), expected)
    expected_format = {"vit": "vit_jax", "big": "big_vision", "timm": "timm"}[fmt.split("_")[0]]
    assert vit_weights.load_checkpoint(path).format == expected_format


def test_pre_logits_checkpoint_reads_its_head(tmp_path):
    model = ViT.from_preset(FORMATS["vit_jax_pre_logits"](tmp_path))
    assert model.representation_size == 24 and model.num_classes == 21


def test_hugging_face_classifier_matches_transformers(tmp_path, images):
    hf, path = randomised_hf("ViTForImageClassification", tmp_path)
    model = ViT.from_preset(path)
    assert model.layer_norm_epsilon == 1e-12 and model.gelu_approximate is False
    ours = logits(model, images)
    assert_close(ours, hf_output(hf, images))
    assert_close(ours, reference_logits(path, images))


def test_hugging_face_vit_model_pooler_is_pre_logits(tmp_path, images):
    hf, path = randomised_hf("ViTModel", tmp_path)
    model = ViT.from_preset(path)  # no head in the file: the features model
    assert model.representation_size == D and not model.include_top
    assert_close(logits(model, images), hf_output(hf, images, pooled=True))
    with pytest.raises(ValueError, match="no classification head"):
        ViT.from_preset(path, include_top=True)


def test_resampling_to_another_image_size(tmp_path):
    path = FORMATS["vit_jax"](tmp_path)
    model = ViT.from_preset(path, image_size=48)
    pos = ops.convert_to_numpy(model.get_layer("position_embedding").embedding)
    assert model.grid_size == (6, 6) and pos.shape == (1, 1 + 36, D)
    images = np.random.default_rng(2).uniform(0, 255, (1, 48, 48, 3)).astype("float32")
    assert_close(logits(model, images), reference_logits(path, images))
    wide = ViT.from_preset(path, image_size=(32, 48))
    images = np.random.default_rng(3).uniform(0, 255, (1, 32, 48, 3)).astype("float32")
    assert wide.grid_size == (4, 6)
    assert_close(logits(wide, images), reference_logits(path, images))


def test_native_size_is_bit_identical(tmp_path, images):
    path = FORMATS["big_vision"](tmp_path)
    a, b = ViT.from_preset(path), ViT.from_preset(path, image_size=32)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(logits(a, images), logits(b, images))


def test_new_head_for_fine_tuning_and_no_top(tmp_path, images):
    path = FORMATS["vit_jax"](tmp_path)
    original = ViT.from_preset(path, include_top=False)
    tuned = ViT.from_preset(path, num_classes=5)
    head = tuned.get_layer("head")
    assert head.kernel.shape == (D, 5)
    assert not np.any(ops.convert_to_numpy(head.kernel)) and not np.any(ops.convert_to_numpy(head.bias))
    assert logits(original, images).shape == (2, D)
    features = keras_features(tuned, images)
    np.testing.assert_allclose(features, logits(original, images), rtol=1e-6, atol=1e-6)


def keras_features(model, images):
    import keras

    pooled = keras.Model(model.input, model.get_layer("pooling").output)
    return ops.convert_to_numpy(pooled(images)).astype("float64")


@pytest.fixture
def tiny_preset(monkeypatch, tmp_path):
    """A tiny preset whose named weights are a local file:// checkpoint."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    path = FORMATS["vit_jax"](tmp_path)
    spec = {"url": pathlib.Path(path).as_uri(), "format": "vit_jax", "image_size": 32,
            "num_classes": CLASSES, "top1": None, "top1_source": None, "sha256": None, "size": None}
    entry = {"description": "tiny", "weights": {"tiny_in1k": spec}, "default_weights": "tiny_in1k",
             "config": dict(patch_size=PATCH, hidden_dim=D, mlp_dim=MLP, num_heads=HEADS, num_layers=LAYERS)}
    monkeypatch.setitem(presets.PRESETS, "tiny", entry)
    return path


def test_named_weights_download_into_keras_home(tiny_preset, tmp_path, images):
    model = ViT.from_preset("tiny")
    assert_close(logits(model, images), reference_logits(tiny_preset, images))
    cached = list((tmp_path / "keras_home" / "keras_vit" / "tiny" / "tiny_in1k").iterdir())
    assert [p.name for p in cached] == ["vit_jax.npz"]
    random = ViT.from_preset("tiny", weights=None, image_size=32, num_classes=CLASSES)
    assert random.count_params() == model.count_params()


def test_unknown_weights_name_lists_the_valid_ones(tiny_preset):
    with pytest.raises(ValueError, match="Valid names: tiny_in1k"):
        ViT.from_preset("tiny", weights="imagenet")
    with pytest.raises(ValueError, match="Valid names: augreg_in21k_ft_in1k"):
        ViT.from_preset("b16", weights="nope")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        ViT.from_preset(str(tmp_path / "absent.npz"))
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        ViT.from_preset("b16", weights=str(tmp_path / "absent.safetensors"))


@pytest.mark.parametrize("fmt", ["vit_jax", "timm"])
def test_truncated_and_corrupt_files(fmt, tmp_path):
    path = pathlib.Path(FORMATS[fmt](tmp_path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated, corrupt"):
        ViT.from_preset(str(path))
    path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    with pytest.raises(ValueError, match="truncated, corrupt|Unrecognised"):
        ViT.from_preset(str(path))


def test_other_architecture_names_key_and_shapes(tiny_preset, tmp_path):
    p = google_params()
    p["embedding/kernel"] = p["embedding/kernel"][..., :16]
    path = write_vit_jax(tmp_path / "narrow.npz", p)
    with pytest.raises(ValueError, match=r"inconsistent: 'embedding/bias' has shape \(32,\).*width 16.*needs \(16,\)"):
        ViT.from_preset("tiny", weights=path)
    with pytest.raises(ValueError, match=r"'embedding/kernel' has shape \(8, 8, 3, 32\).*expects \(8, 8, 3, 16\)"):
        ViT.from_preset("tiny", weights=FORMATS["vit_jax"](tmp_path), hidden_dim=16, mlp_dim=32)
    deeper = dict(google_params())
    deeper.update({k.replace("encoderblock_1/", "encoderblock_2/"): v
                   for k, v in google_params().items() if "encoderblock_1/" in k})
    with pytest.raises(ValueError, match="3 encoder blocks.*num_layers=2"):
        ViT.from_preset("tiny", weights=write_vit_jax(tmp_path / "deep.npz", deeper))


def test_missing_and_unexpected_keys(tmp_path):
    p = google_params()
    del p["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
    with pytest.raises(ValueError, match="lacks 1 expected key.*encoderblock_1/MlpBlock_3/Dense_0/bias"):
        ViT.from_preset(write_vit_jax(tmp_path / "missing.npz", p))
    p = google_params()
    p["opt/state/step"] = np.zeros(())
    with pytest.warns(UserWarning, match="1 key.*not loaded: opt/state/step"):
        ViT.from_preset(write_vit_jax(tmp_path / "extra.npz", p))


def test_unsupported_architecture_is_refused(tmp_path):
    path = write_timm(tmp_path / "model.safetensors", google_params())
    from safetensors.numpy import load_file, save_file

    clean = load_file(path)
    for key, shape, message in (("fc_norm.weight", (D,), "fc_norm"),
                                ("blocks.0.attn.q_norm.weight", (D // HEADS,), "QK normalisation")):
        save_file({**clean, key: np.ones(shape, "float32")}, path)
        with pytest.raises(ValueError, match=message):
            ViT.from_preset(path)


def test_hf_config_json_is_read(tmp_path, images):
    _, path = randomised_hf("ViTForImageClassification", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["layer_norm_eps"] = 1e-5
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert ViT.from_preset(path).layer_norm_epsilon == 1e-5
    os.remove(tmp_path / "config.json")
    with pytest.raises(ValueError, match="does not say how many attention heads.*num_heads="):
        ViT.from_preset(path)  # width 32: no standard head count to fall back on
    with pytest.raises(ValueError, match="num_heads="):
        ViT.from_preset(path, weights=None)
    model = ViT.from_preset(path, num_heads=HEADS)  # else Hugging Face's defaults
    assert model.layer_norm_epsilon == 1e-12 and model.num_heads == HEADS


def test_presets_document_their_weights():
    for name, entry in presets.PRESETS.items():
        assert entry["default_weights"] in entry["weights"], name
        for weights_name, spec in entry["weights"].items():
            if spec["format"] == "keras":  # a model trained here, shipped in saved_models/
                assert os.path.isfile(os.path.join(preset_loading.SAVED_MODELS, spec["file"]))
                continue
            assert spec["url"].startswith(("https://", "hf://")), (name, weights_name)
            assert spec["format"] in ("vit_jax", "timm", "hf")
            if spec["num_classes"] == 1000 or spec["url"].startswith("hf://"):
                # hub presets publish their paper's ImageNet top-1 (a linear probe's, zero-shot
                # or after fine-tuning for those without an ImageNet-1k head), with its source,
                # or say why there is none for that file
                assert spec["top1_source"], (name, weights_name)
                assert spec["top1"] is None or 60 < spec["top1"] < 90, (name, weights_name)
                assert spec["top1"] is not None or spec["num_classes"] != 1000, name
            else:
                assert spec["num_classes"] == 21843 and spec["top1"] is None
    assert presets.PRESETS["b16"]["weights"]["augreg_in21k_ft_in1k"]["top1"] == 84.532
    assert presets.list_weights("h14") == {"orig_in21k": (None, presets.PRESETS["h14"]["weights"]["orig_in21k"]["url"])}
    assert presets.list_weights("fashion_mnist") == {"fashion_mnist": (None, "fashion_mnist/model.keras")}


def test_decode_predictions():
    preds = np.zeros((2, 1000), "float32")
    preds[0, 281], preds[0, 285], preds[1, 948] = 0.9, 0.05, 0.7
    decoded = keras_vit.decode_predictions(preds, top=2)
    assert decoded[0] == [(281, "tabby", pytest.approx(0.9)), (285, "Egyptian cat", pytest.approx(0.05))]
    assert decoded[1][0] == (948, "Granny Smith", pytest.approx(0.7))
    assert len(set(keras_vit.imagenet_classes())) == 1000
    with pytest.raises(ValueError, match="batch, 1000"):
        keras_vit.decode_predictions(np.zeros((2, 10)))


def test_keras_file_of_a_vit_loads_with_overrides(tmp_path, images):
    """A saved keras_vit ViT (the format of the shipped models) loads by path, re-headed or
    resampled like any checkpoint."""
    model = ViT(image_size=32, patch_size=8, hidden_dim=32, num_layers=2, num_heads=4,
                mlp_dim=64, num_classes=5)
    model.get_layer("head").kernel.assign(np.random.default_rng(0).normal(size=(32, 5)))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = ViT.from_preset(str(path))
    np.testing.assert_array_equal(logits(loaded, images), logits(model, images))
    new_head = ViT.from_preset(str(path), num_classes=3, image_size=48)
    assert new_head.output_shape == (None, 3)
    np.testing.assert_array_equal(ops.convert_to_numpy(new_head.get_layer("head").kernel), 0.0)
    assert new_head.get_layer("position_embedding").embedding.shape == (1, 37, 32)
    with pytest.raises(ValueError, match="Could not load the Keras model file"):
        (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 not a zip")
        ViT.from_preset(str(tmp_path / "broken.keras"))


@pytest.mark.parametrize("dtype, value", [(None, 1e300), ("float16", 1e5)])
def test_weights_are_checked_finite_after_the_cast_to_the_models_dtype(tmp_path, dtype, value):
    """A finite value that overflows the model's dtype (float64 1e300 in float32, 1e5 in
    float16) is refused, naming the key; one that fits loads exactly."""
    key = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"
    p = {k: v.astype("float64") for k, v in google_params().items()}
    p[key][3] = value
    path = write_vit_jax(tmp_path / "large.npz", p)
    expected = np.dtype(dtype or "float32").name
    with pytest.raises(ValueError, match=f"'{key}' holds values too large for the model's "
                                         f"{expected} encoder_block_1/mlp_dense_1/bias"):
        ViT.from_preset(path, dtype=dtype)
    p[key][3] = 1e4  # exact in float16 and float32
    model = ViT.from_preset(write_vit_jax(tmp_path / "fits.npz", p), dtype=dtype)
    bias = ops.convert_to_numpy(model.get_layer("encoder_block_1").mlp_dense_1.bias)
    assert bias.dtype == expected and bias[3] == 1e4


IMAGENET_255 = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
IMPLAUSIBLE = [
    pytest.param([0.5] * 3, [1e-300] * 3, r"std must lie in \[0.01, 1\].*more than 100x", id="tiny_std"),
    pytest.param([1e308] * 3, [0.5] * 3, r"mean must lie in \[0, 1\].*0..255 units", id="huge_mean"),
    pytest.param(*IMAGENET_255, r"mean must lie in \[0, 1\].*0..255 units", id="0_255_units"),
    pytest.param([0.5] * 3, [-0.5] * 3, r"std must lie in \[0.01, 1\]", id="negative_std"),
]
# Every family's normalisation, and none (mean 0, std 1).
PLAUSIBLE = [([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
             ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
             ([0.5] * 3, [0.5] * 3), ([0.0] * 3, [1.0] * 3)]


@pytest.mark.parametrize("mean, std, message", IMPLAUSIBLE)
def test_implausible_timm_mean_and_std_are_refused_naming_the_file(tmp_path, mean, std, message):
    path = write_timm(tmp_path / "model.safetensors", google_params())
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"pretrained_cfg": {"mean": mean, "std": std}}))
    with pytest.raises(ValueError, match=f"{re.escape(str(config))}: pretrained_cfg {message}"):
        ViT.from_preset(path, num_heads=HEADS)


@pytest.mark.parametrize("mean, std, message", IMPLAUSIBLE)
def test_implausible_hf_mean_and_std_are_refused_naming_the_file(tmp_path, mean, std, message):
    path = write_hf(str(tmp_path), google_params())
    preprocessor = tmp_path / "preprocessor_config.json"
    preprocessor.write_text(json.dumps({"image_mean": mean, "image_std": std}))
    with pytest.raises(ValueError, match=f"{re.escape(str(preprocessor))}: image_{message}"):
        ViT.from_preset(path)


@pytest.mark.parametrize("mean, std, message", IMPLAUSIBLE)
def test_implausible_mean_and_std_arguments_are_refused(mean, std, message):
    with pytest.raises(ValueError, match=f"image_{message}|image_std must be positive"):
        ViT(**dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=1, num_heads=4,
                   mlp_dim=64), image_mean=mean, image_std=std)


@pytest.mark.parametrize("mean, std", PLAUSIBLE)
def test_every_familys_mean_and_std_are_accepted(tmp_path, mean, std):
    path = write_timm(tmp_path / "model.safetensors", google_params())
    (tmp_path / "config.json").write_text(json.dumps({"pretrained_cfg": {"mean": mean, "std": std}}))
    model = ViT.from_preset(path, num_heads=HEADS)
    assert (model.image_mean, model.image_std) == (mean, std)
    path = write_hf(str(tmp_path), google_params())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    model = ViT.from_preset(path)
    assert (model.image_mean, model.image_std) == (mean, std)


@pytest.mark.parametrize("fmt", FORMATS)
def test_converters_key_arrays_by_the_models_variable_paths(tmp_path, fmt):
    path = FORMATS[fmt](tmp_path)
    checkpoint = vit_weights.load_checkpoint(path)
    model = ViT.from_preset(path, num_heads=HEADS)
    shapes = model.architecture.variable_shapes
    assert set(checkpoint.params) == set(shapes)
    for key, (array, _) in checkpoint.params.items():
        assert array.size == np.prod(shapes[key]), key


def test_a_checkpoint_holds_the_files_vit_config(tmp_path):
    with_head = vit_weights.load_checkpoint(FORMATS["vit_jax"](tmp_path))
    assert with_head.config == keras_vit.ViTConfig(
        image_size=GRID * PATCH, patch_size=PATCH, hidden_dim=D, num_layers=LAYERS,
        num_heads=HEADS, mlp_dim=MLP, num_classes=CLASSES)
    assert with_head.num_classes == CLASSES and with_head.undecided == ()
    headless = vit_weights.load_checkpoint(
        write_vit_jax(tmp_path / "headless.npz", google_params(classes=None)))
    assert not headless.config.include_top and headless.num_classes is None
    assert headless.config.replace(include_top=True, num_classes=CLASSES) == with_head.config
    assert set(headless.params) == set(headless.config.variable_shapes)
    # timm files do not say the heads of a width outside the standard ones.
    assert vit_weights.load_checkpoint(FORMATS["timm"](tmp_path)).undecided == ("num_heads",)


def test_a_failed_load_leaves_the_model_unchanged(tmp_path):
    checkpoint = vit_weights.load_checkpoint(FORMATS["timm"](tmp_path))
    model = ViT(config=checkpoint.config, num_heads=HEADS)
    before = [ops.convert_to_numpy(v).copy() for v in model.weights]
    head, source = checkpoint.params["head/bias"]
    checkpoint.params["head/bias"] = (head[:-1], source)  # the last variable loaded
    with pytest.raises(ValueError, match="head/bias expects"):
        vit_weights.apply_checkpoint(model, checkpoint)
    for variable, old in zip(model.weights, before):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), old, err_msg=variable.path)
