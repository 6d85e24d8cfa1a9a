"""Keras-native quantization (`ViT.quantize`, keras_vit.quantization): right after
construction or `from_preset`, close to the float model, saved and loaded with the same
outputs, on every ViT layout."""

import json

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import quantization
from tiny import TINY_ONE_BLOCK

# Quantized vs float logits, as a fraction of the largest float logit: int8 weights and
# per-token int8 inputs stay within ~1 %, float8 (e4m3, 3 mantissa bits) within ~5 %,
# int4 weights within ~15 % on these random weights.
TOLERANCE = {"int8": 0.04, "float8": 0.12, "int4": 0.35}
LAYOUTS = {  # the default ("token") layout: the tests above
    "map": {"pooling": "map"},
    "deit": {"distillation_token": True, "representation_size": 16},
    "registers_gap": {"pooling": "gap", "num_register_tokens": 2, "layer_scale_init": 0.1},
}


def random_vit(seed=0, **overrides):
    """A tiny ViT with random float weights everywhere (its head is zero-initialised)."""
    model = keras_vit.ViT(**{**TINY_ONE_BLOCK, **overrides})
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.2, variable.shape).astype(variable.dtype))
    return model


def logits(model, images):
    return keras.ops.convert_to_numpy(model(images))


def as_json(config):
    """A config as saved (tuples become lists)."""
    return json.loads(json.dumps(config))


def quantized_paths(model):
    return sorted(quantization.quantized_layers(model))


@pytest.mark.parametrize("mode", quantization.MODES)
def test_quantize_right_after_construction_stays_close_to_float(mode, images):
    model = random_vit()
    expected = logits(random_vit(), images)
    model.quantize(mode)
    # Every attention projection, MLP Dense and the head; not the patch embedding's Conv2D.
    assert len(quantized_paths(model)) == 4 + 2 + 1
    assert all(layer.quantization_mode == mode for layer in
               (model.get_layer("head"), model.get_layer("encoder_block_0").attention.key_dense))
    error = np.abs(logits(model, images) - expected).max() / np.abs(expected).max()
    assert 0 < error < TOLERANCE[mode], error


@pytest.mark.parametrize("mode", quantization.MODES)
def test_a_quantized_vit_saves_and_loads_with_the_same_outputs(mode, images, tmp_path):
    model = random_vit()
    model.quantize(mode)
    expected = logits(model, images)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert quantized_paths(loaded) == quantized_paths(model)
    assert as_json(loaded.get_config()) == as_json(model.get_config())
    np.testing.assert_allclose(logits(loaded, images), expected, rtol=1e-5, atol=1e-6)


def test_from_preset_refuses_a_quantized_file_saying_how_to_open_it(tmp_path):
    model = random_vit()
    model.quantize("int4")
    model.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="quantized ViT.*keras.saving.load_model"):
        keras_vit.ViT.from_preset(str(tmp_path / "model.keras"))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_vit_layout_quantizes_saves_and_loads(layout, images, tmp_path):
    model = random_vit(**LAYOUTS[layout])
    float_logits = logits(model, images)
    model.quantize("int8")
    expected = logits(model, images)
    assert np.abs(expected - float_logits).max() < TOLERANCE["int8"] * np.abs(float_logits).max()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(logits(loaded, images), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", quantization.MODES)
def test_the_dequantized_copy_holds_the_quantized_weights(mode, images):
    model = random_vit(pooling="map", representation_size=16)  # a tanh Dense, a plain MHA
    model.quantize(mode)
    copy = quantization.dequantized(model)
    assert quantized_paths(copy) == [] and quantization.dequantized(copy) is copy
    expected = logits(model, images)
    # int4 quantizes no inputs: the same up to rounding; int8 and float8 do, the copy not.
    tolerance = {"int4": 1e-5, "int8": 0.02, "float8": 0.06}[mode]
    assert np.abs(logits(copy, images) - expected).max() <= tolerance * np.abs(expected).max()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="TFLite converts under TensorFlow; other backends add a subprocess")
def test_a_quantized_vit_exports_to_tflite(images, tmp_path):
    model = random_vit()
    model.quantize("int8")
    path = keras_vit.export.export_tflite(model, tmp_path / "model.tflite")
    expected = logits(model, images[:1])
    tflite_logits, _ = keras_vit.export.run_tflite(path, images[:1])
    assert np.abs(tflite_logits - expected).max() < 0.02 * np.abs(expected).max()


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="ONNX exports under PyTorch; other backends add a subprocess")
def test_a_quantized_vit_exports_to_onnx(images, tmp_path):
    pytest.importorskip("onnxruntime")
    model = random_vit()
    model.quantize("int4")
    path = keras_vit.export.export_onnx(model, tmp_path / "model.onnx")
    onnx_logits, _ = keras_vit.export.run_onnx(path, images)
    np.testing.assert_allclose(onnx_logits, logits(model, images), rtol=1e-4, atol=1e-4)


def test_quantize_right_after_from_preset(images, tmp_path):
    random_vit().save(tmp_path / "float.keras")
    model = keras_vit.ViT.from_preset(str(tmp_path / "float.keras"))
    expected = logits(model, images)
    model.quantize("int8")
    assert len(quantized_paths(model)) == 7
    assert np.abs(logits(model, images) - expected).max() < 0.04 * np.abs(expected).max()


def test_int4_per_channel_config_survives_saving(images, tmp_path):
    model = random_vit()
    model.quantize(config=keras.quantizers.Int4QuantizationConfig(block_size=-1))
    head = model.get_layer("head")
    assert head.dtype_policy.name == "int4/-1_from_float32"
    expected = logits(model, images)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.get_layer("head").dtype_policy.name == "int4/-1_from_float32"
    np.testing.assert_allclose(logits(loaded, images), expected, rtol=1e-5, atol=1e-6)


def test_a_float_config_is_unchanged(tiny_config):
    model = keras_vit.ViT(**tiny_config)
    assert "quantized_layers" not in model.get_config()


@pytest.mark.parametrize("config", ["GPTQConfig", "AWQConfig"])
def test_calibrated_modes_are_refused(config):
    """GPTQ and AWQ need a layer structure for their calibration that a ViT lacks."""
    model = keras_vit.ViT(**TINY_ONE_BLOCK)
    config = getattr(keras.quantizers, config)(dataset=np.zeros((1, 4)), tokenizer=None)
    with pytest.raises(ValueError, match="Unsupported quantization mode"):
        model.quantize(config=config)
    assert quantized_paths(model) == []


@pytest.mark.parametrize("mode, match", [
    ("int2", "Invalid quantization mode"),  # Keras's own checks, before ViT.quantize
    (None, "must provide either `mode` or `config`"),
])
def test_unknown_modes_are_refused(mode, match):
    model = keras_vit.ViT(**TINY_ONE_BLOCK)
    with pytest.raises(ValueError, match=match):
        model.quantize(mode)
    assert quantized_paths(model) == []


def _saved_entry(mode="int8"):
    model = keras_vit.ViT(**TINY_ONE_BLOCK)
    model.quantize(mode)
    return model.get_config()


@pytest.mark.parametrize("change, match", [
    (lambda q: {"no/such/layer": q["head"]}, "no layer of this ViT"),
    (lambda q: {"head": {**q["head"], "dtype": "float32"}}, "Unsupported quantization mode"),
    (lambda q: {"head": {"dtype": q["head"]["dtype"]}}, "must be a dict with the keys"),
    (lambda q: {"head": {**q["head"], "quantization_config": None}}, "no quantization config"),
    (lambda q: ["head"], "must be a dict or None"),
])
def test_a_bad_quantized_layers_config_is_refused(change, match):
    config = _saved_entry()
    config["quantized_layers"] = change(config["quantized_layers"])
    with pytest.raises(ValueError, match=match):
        keras_vit.ViT.from_config(config)


def test_canary_keras_cannot_load_a_quantized_multi_head_attention(tmp_path):
    """Keras 3.15's MultiHeadAttention rebuilds its projections with its own float dtype
    policy, so a loaded quantized one has float variables where the file has int8 ones.
    keras_vit's ViT does not depend on it (`keras_vit.quantization.restore` quantizes the
    layers of the rebuilt model before its variables load), but keras_vit's docs say that a
    quantized keras_vit layer inside a user's own model does not reload."""
    inputs = keras.Input((4, 8))
    outputs = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inputs, inputs)
    model = keras.Model(inputs, outputs)
    model.quantize("int8")
    model.save(tmp_path / "mha.keras")
    try:
        keras.saving.load_model(tmp_path / "mha.keras")
    except ValueError as error:
        assert "could not be loaded" in str(error) and "EinsumDense" in str(error)
    else:
        pytest.fail(
            "Keras now loads a quantized keras.layers.MultiHeadAttention from a .keras file: "
            "update the note on it in keras_vit/quantization.py and the README's 'Keras "
            "quantization' part (and remove this canary test)."
        )
