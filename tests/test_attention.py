"""ViTAttention: the same variables as keras.layers.MultiHeadAttention, the same results on
every path (the padded "fast" path is checked on CPU through XLA)."""

import keras
import numpy as np
import pytest

from keras_vit import attention, config
from keras_vit.attention import ViTAttention
from keras_vit.backend import private_apis

JAX_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the padded fused path exists on JAX only"
)


def _pair(num_heads=4, key_dim=8, dim=32, tokens=17, **kwargs):
    """A ViTAttention and a MultiHeadAttention with the same weights, and an input."""
    fast = ViTAttention(num_heads=num_heads, key_dim=key_dim, name="attention", **kwargs)
    plain = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, name="attention")
    shape = (3, tokens, dim)
    fast.build(shape, shape)
    plain.build(shape, shape)
    rng = np.random.default_rng(1)
    plain.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in plain.weights])
    fast.set_weights(plain.get_weights())
    x = rng.normal(size=shape).astype("float32")
    return fast, plain, x


def test_same_variables_as_multi_head_attention():
    fast, plain, _ = _pair()
    assert isinstance(fast, keras.layers.MultiHeadAttention)
    assert [(v.path, tuple(v.shape)) for v in fast.weights] == [
        (v.path, tuple(v.shape)) for v in plain.weights
    ]


@pytest.mark.parametrize("implementation", ["auto", "plain", "head_major", "fast"])
def test_matches_plain_path(implementation):
    fast, plain, x = _pair(implementation=implementation)
    expected = keras.ops.convert_to_numpy(plain(x, x))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fast(x, x)), expected, rtol=1e-5, atol=1e-5
    )


@JAX_ONLY
@pytest.mark.parametrize("tokens,multiple", [(17, 8), (197, 64), (197, 2), (16, 8), (5, 1)])
def test_padding_is_exact(tokens, multiple):
    fast, plain, x = _pair(tokens=tokens, implementation="fast", pad_multiple=multiple)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fast(x, x)),
        keras.ops.convert_to_numpy(plain(x, x)),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("implementation", ["head_major", "fast"])
def test_gradients_match_plain_path(implementation):
    if implementation == "fast" and keras.backend.backend() != "jax":
        pytest.skip("the padded fused path exists on JAX only")
    fast, plain, x = _pair(implementation=implementation, pad_multiple=16)
    grads_fast, grads_plain = _gradients(fast, x), _gradients(plain, x)
    # The key bias's true gradient is 0 (softmax ignores it), so both sides hold rounding
    # noise there: compare against the scale of all the gradients.
    scale = max(float(np.abs(g).max()) for g in grads_plain)
    for g_fast, g_plain in zip(grads_fast, grads_plain):
        np.testing.assert_allclose(g_fast, g_plain, rtol=1e-4, atol=1e-6 * scale)


def _gradients(layer, x):
    """d(sum(layer(x, x) ** 2)) / d(trainable weights), as NumPy arrays, on any backend."""
    backend = keras.backend.backend()
    weights = [v.value for v in layer.trainable_variables]
    if backend == "jax":
        import jax

        def f(w):
            out, _ = layer.stateless_call(w, [], x, x)
            return (out**2).sum()

        return [np.asarray(g) for g in jax.grad(f)(weights)]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, x) ** 2)
        return [g.numpy() for g in tape.gradient(loss, layer.trainable_variables)]
    loss = (layer(x, x) ** 2).sum()
    loss.backward()
    return [w.grad.numpy() for w in weights]


@JAX_ONLY
def test_bfloat16_matches_plain_path():
    keras.config.set_dtype_policy("mixed_bfloat16")
    fast, plain, x = _pair(implementation="fast")
    out_fast = keras.ops.convert_to_numpy(keras.ops.cast(fast(x, x), "float32"))
    out_plain = keras.ops.convert_to_numpy(keras.ops.cast(plain(x, x), "float32"))
    np.testing.assert_allclose(out_fast, out_plain, rtol=0.05, atol=0.05)


def test_masks_and_scores_take_the_plain_path():
    fast, plain, x = _pair(implementation="fast")
    mask = np.tril(np.ones((3, 17, 17), bool))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fast(x, x, attention_mask=mask)),
        keras.ops.convert_to_numpy(plain(x, x, attention_mask=mask)),
        rtol=1e-5,
        atol=1e-5,
    )
    out, scores = fast(x, x, return_attention_scores=True)
    assert tuple(scores.shape) == (3, 4, 17, 17)


def test_model_switch_and_default():
    from keras_vit import ViT

    assert config.get_attention_implementation() in config.ATTENTION_IMPLEMENTATIONS
    model = ViT(
        image_size=32, patch_size=8, hidden_dim=32, num_layers=2, num_heads=4, mlp_dim=64,
        num_classes=10,
    )
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images))
    for impl in ("head_major", "fast", "plain"):
        assert attention.set_model_implementation(model, impl) == 2
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model(images)), expected, rtol=1e-5, atol=1e-5
        )
    with pytest.raises(ValueError, match="implementation"):
        config.set_attention_implementation("flash")


def test_model_switch_sets_the_pad_multiple():
    from keras_vit import ViT

    model = ViT(
        image_size=32, patch_size=8, hidden_dim=32, num_layers=2, num_heads=4, mlp_dim=64,
        num_classes=10,
    )
    assert attention.set_model_implementation(model, "fast", pad_multiple=8) == 2
    layers = [
        layer for layer in private_apis.flatten_layers(model) if isinstance(layer, ViTAttention)
    ]
    assert [(layer.implementation, layer.pad_multiple) for layer in layers] == [("fast", 8)] * 2
    attention.set_model_implementation(model, "plain")
    assert [layer.pad_multiple for layer in layers] == [8, 8]
    with pytest.raises(ValueError, match="pad_multiple"):
        attention.set_model_implementation(model, "fast", pad_multiple=0)
    assert [layer.implementation for layer in layers] == ["plain", "plain"]


@pytest.mark.parametrize("bad", [0, -8, 2.5, "8", True, None])
def test_rejects_a_bad_pad_multiple(bad):
    with pytest.raises(ValueError, match="pad_multiple must be a positive integer"):
        ViTAttention(num_heads=2, key_dim=4, pad_multiple=bad)


def test_takes_a_numpy_integer_pad_multiple():
    layer = ViTAttention(num_heads=2, key_dim=4, pad_multiple=np.int64(8))
    assert layer.pad_multiple == 8 and type(layer.pad_multiple) is int


def test_serialization_round_trip():
    layer = ViTAttention(num_heads=2, key_dim=4, implementation="fast", pad_multiple=16)
    clone = ViTAttention.from_config(layer.get_config())
    assert clone.implementation == "fast" and clone.pad_multiple == 16


def test_auto_takes_the_fused_path_for_training_on_a_jax_gpu_only(monkeypatch):
    layer = ViTAttention(num_heads=2, key_dim=4, dtype="mixed_bfloat16")
    monkeypatch.setattr(config, "on_jax_gpu", lambda: True)
    assert layer.resolved_implementation(training=True) == "fast"
    assert layer.resolved_implementation(training=False) == "plain"
    float32_layer = ViTAttention(num_heads=2, key_dim=4)
    assert float32_layer.resolved_implementation(training=True) == "plain"


@pytest.mark.parametrize("cpu", [True, False])
def test_auto_takes_head_major_on_a_cpu_only(monkeypatch, cpu):
    """`config.on_cpu()` is True for JAX and TensorFlow on a CPU (not for PyTorch)."""
    layer = ViTAttention(num_heads=2, key_dim=4)
    monkeypatch.setattr(config, "on_jax_gpu", lambda: False)
    monkeypatch.setattr(config, "on_cpu", lambda: cpu)
    expected = "head_major" if cpu else "plain"
    assert layer.resolved_implementation(training=True) == expected
    assert layer.resolved_implementation(training=False) == expected


def test_auto_on_this_device():
    layer = ViTAttention(num_heads=2, key_dim=4)  # float32: never "fast"
    expected = "head_major" if config.on_cpu() else "plain"
    assert layer.resolved_implementation(training=True) == expected
    assert layer.resolved_implementation(training=False) == expected


def test_head_major_under_mixed_precision_is_as_accurate_as_plain():
    _, reference, x = _pair()
    expected = keras.ops.convert_to_numpy(reference(x, x))
    keras.config.set_dtype_policy("mixed_bfloat16")
    fast, plain, _ = _pair(implementation="head_major")
    out = fast(x, x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    errors = [
        np.abs(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")) - expected).max()
        for y in (out, plain(x, x))
    ]
    assert errors[0] <= 1.5 * errors[1] + 1e-3, errors


def test_quantized_projections_take_the_plain_path():
    fast, plain, x = _pair(implementation="head_major")
    for layer in (fast, plain):
        for dense in (layer.query_dense, layer.key_dense, layer.value_dense):
            dense.quantize("int8")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fast(x, x)),
        keras.ops.convert_to_numpy(plain(x, x)),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("option", [{"use_gate": True}, {"sliding_window": 4}])
def test_gated_or_windowed_attention_takes_the_plain_path(option):
    fast = ViTAttention(num_heads=2, key_dim=4, implementation="head_major", **option)
    plain = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, **option)
    x = np.random.default_rng(2).normal(size=(2, 9, 8)).astype("float32")
    fast.build(x.shape, x.shape)
    plain.build(x.shape, x.shape)
    fast.set_weights(plain.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fast(x, x)),
        keras.ops.convert_to_numpy(plain(x, x)),
        rtol=1e-5,
        atol=1e-5,
    )
