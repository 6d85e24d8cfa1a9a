"""The block options of issue 24 (RMSNorm, SwiGLU, EVA-02's inner MLP norm, projections
without biases, a patch embedding without bias or with a norm, AIMv2's probe pooling)
against a NumPy forward pass written here, on every attention path and graph form; their
variables, config, `.keras` round trip and int8 quantization."""

import math

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import config as vit_config
from keras_vit.layers import PatchEmbedding, ProbePooling, TransformerEncoderBlock

D, HEADS, MLP, EPS = 16, 2, 24, 1e-5
NO_BIASES = dict(query_bias=False, key_bias=False, value_bias=False, output_bias=False,
                 mlp_bias=False)
OPTIONS = {
    "rms_norm": dict(norm_type="rms_norm"),
    "swiglu": dict(mlp_type="swiglu"),
    "swiglu_inner_norm_rms": dict(mlp_type="swiglu", mlp_inner_norm=True, norm_type="rms_norm"),
    "mlp_inner_norm": dict(mlp_inner_norm=True),
    "no_biases": NO_BIASES,
    "no_query_output_bias": dict(query_bias=False, output_bias=False),
    "aimv2": dict(norm_type="rms_norm", mlp_type="swiglu", **NO_BIASES),
}


def _norm(x, weights, prefix, norm_type):
    if norm_type == "rms_norm":
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + EPS) * weights[prefix + "/scale"]
    centred = x - x.mean(-1, keepdims=True)
    normed = centred / np.sqrt(np.mean(centred ** 2, -1, keepdims=True) + EPS)
    return normed * weights[prefix + "/gamma"] + weights[prefix + "/beta"]


def _dense(x, weights, prefix):
    """x @ kernel + bias (no bias where the layer has none), the kernel seen as a matrix:
    (D, heads, head_dim) -> (D, heads * head_dim); output (heads, head_dim, D) and patch
    (ph, pw, C, D) kernels -> (-1, D)."""
    kernel = weights[prefix + "/kernel"]
    inputs_first = kernel.ndim == 3 and not prefix.endswith("attention_output")
    matrix = kernel.reshape(kernel.shape[0], -1) if inputs_first else kernel.reshape(-1, kernel.shape[-1])
    return x @ matrix + weights.get(prefix + "/bias", np.zeros(1)).reshape(-1)


def numpy_block(x, weights, norm_type="layer_norm", mlp_type="mlp", mlp_inner_norm=False, **_):
    """The pre-norm block, from its variables {path without the block's name: array}."""
    batch, tokens, _ = x.shape
    y = _norm(x, weights, "attention_norm", norm_type)
    q, k, v = (_dense(y, weights, f"attention/{part}").reshape(batch, tokens, HEADS, -1)
               for part in ("query", "key", "value"))
    scores = np.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D // HEADS)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attended = np.einsum("bhts,bshd->bthd", probs, v).reshape(batch, tokens, D)
    x = x + _dense(attended, weights, "attention/attention_output")
    y = _norm(x, weights, "mlp_norm", norm_type)
    up = _dense(y, weights, "mlp_dense_1")
    if mlp_type == "swiglu":
        gate = _dense(y, weights, "mlp_gate")
        hidden = gate / (1 + np.exp(-gate)) * up
    else:
        hidden = 0.5 * up * (1 + np.tanh(math.sqrt(2 / math.pi) * (up + 0.044715 * up ** 3)))
    if mlp_inner_norm:
        hidden = _norm(hidden, weights, "mlp_inner_norm", norm_type)
    return x + _dense(hidden, weights, "mlp_dense_2")


def _randomised(layer, seed=0):
    """Every variable of `layer` random; {path below the layer: array}."""
    rng = np.random.default_rng(seed)
    weights = {}
    for variable in layer.weights:
        value = rng.normal(size=variable.shape).astype("float32") * 0.5
        variable.assign(value)
        weights[variable.path.split("/", 1)[1]] = value.astype("float64")
    return weights


@pytest.mark.parametrize("implementation", ["plain", "head_major"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_block_matches_numpy(name, implementation):
    block = TransformerEncoderBlock(D, HEADS, MLP, layer_norm_epsilon=EPS, name="block",
                                    **OPTIONS[name])
    x = np.random.default_rng(1).normal(size=(2, 5, D)).astype("float32")
    block.build(x.shape)
    weights = _randomised(block)
    block.attention.implementation = implementation
    expected = numpy_block(x.astype("float64"), weights, **OPTIONS[name])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), expected, rtol=1e-4, atol=1e-4)
    for form in ("tflite", "integer"):  # one image: the integer form's per-head path
        with vit_config.graph_form(form):
            out = keras.ops.convert_to_numpy(block(x[:1]))
        np.testing.assert_allclose(out, expected[:1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm_type", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_patch_embedding_matches_numpy(use_bias, norm_type):
    layer = PatchEmbedding(4, D, use_bias=use_bias, norm_type=norm_type, norm_epsilon=EPS,
                           name="patch_embedding")
    images = np.random.default_rng(2).normal(size=(2, 8, 12, 3)).astype("float32")
    layer.build(images.shape)
    weights = _randomised(layer)
    patches = images.reshape(2, 2, 4, 3, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 48)
    tokens = _dense(patches.astype("float64"), weights, "projection")
    expected = _norm(tokens, weights, "norm", norm_type)
    assert ("projection/bias" in weights) == use_bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(images)), expected,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("biases", [True, False])
def test_probe_pooling_matches_numpy(biases):
    """AIMv2's head: the probe is the query of one attention over the tokens."""
    layer = ProbePooling(HEADS, key_bias=biases, value_bias=biases, name="pooling")
    x = np.random.default_rng(5).normal(size=(2, 5, D)).astype("float32")
    layer.build(x.shape)
    weights = _randomised(layer)
    query = weights["probe"].reshape(HEADS, -1)
    k, v = (_dense(x.astype("float64"), weights, f"attention/{part}").reshape(2, 5, HEADS, -1)
            for part in ("key", "value"))
    scores = np.einsum("hd,bnhd->bhn", query, k) / math.sqrt(D // HEADS)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attended = np.einsum("bhn,bnhd->bhd", probs, v).reshape(2, D)
    expected = _dense(attended, weights, "attention/attention_output")
    expected_paths = {"probe", "attention/key/kernel", "attention/value/kernel",
                      "attention/attention_output/kernel", "attention/attention_output/bias"}
    assert set(weights) == expected_paths | (
        {"attention/key/bias", "attention/value/bias"} if biases else set())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-4)


TINY = dict(image_size=16, patch_size=8, hidden_dim=D, num_layers=2, num_heads=HEADS,
            mlp_dim=MLP, num_classes=3, layer_norm_epsilon=EPS)
ALL = dict(norm_type="rms_norm", mlp_type="swiglu", mlp_inner_norm=True, patch_bias=False,
           patch_norm=True, query_bias=False, value_bias=False, mlp_bias=False)


@pytest.mark.parametrize("changes", [
    ALL,
    dict(ALL, pooling="map", pre_norm=True),
    dict(ALL, pooling="probe", pooling_heads=1),
    dict(ALL, pooling="gap", pooled_norm=True, layer_scale_init=0.1),
    dict(mlp_inner_norm=True, key_bias=False, output_bias=False, patch_norm=True),
], ids=["all", "map_pre_norm", "probe", "gap_pooled_norm_layer_scale", "layer_norm_options"])
def test_variable_shapes_are_the_built_models(changes):
    config = keras_vit.ViTConfig(**TINY, **changes)
    model = keras_vit.ViT(config=config)
    assert config.variable_shapes == {v.path: tuple(v.shape) for v in model.weights}


def test_defaults_keep_the_variables():
    paths = set(keras_vit.ViTConfig(**TINY).variable_shapes)
    assert "patch_embedding/projection/bias" in paths and not any(
        "mlp_gate" in p or "scale" in p or "inner" in p for p in paths)


def test_get_config_and_keras_file_round_trip(tmp_path):
    model = keras_vit.ViT(**TINY, **ALL)
    _randomised(model)
    images = np.random.default_rng(3).uniform(0, 255, size=(2, 16, 16, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    config = model.get_config()
    assert {key: config[key] for key in ALL} == ALL
    rebuilt = keras_vit.ViT.from_config(config)
    assert rebuilt.architecture == model.architecture
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.architecture == model.architecture
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_int8_quantization_of_a_swiglu_rms_norm_model():
    model = keras_vit.ViT(**TINY, norm_type="rms_norm", mlp_type="swiglu", mlp_bias=False,
                          query_bias=False)
    _randomised(model)
    images = np.random.default_rng(4).uniform(0, 255, size=(2, 16, 16, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    model.quantize("int8")
    block = model.get_layer("encoder_block_0")
    assert block.mlp_gate.quantization_mode == "int8" == block.attention.query_dense.quantization_mode
    got = model.predict(images, verbose=0)
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max()


@pytest.mark.parametrize("field, value", [
    ("norm_type", "batch_norm"), ("mlp_type", "geglu"), ("mlp_inner_norm", 1),
    ("query_bias", None), ("patch_norm", "yes"), ("mlp_bias", 0)])
def test_bad_options_name_their_field(field, value):
    with pytest.raises(ValueError, match=field):
        keras_vit.ViTConfig(**TINY, **{field: value})

