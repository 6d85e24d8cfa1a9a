"""Every layer: output shape, config round trip, and the behaviour that defines it."""

import keras
import numpy as np
import pytest
import scipy.ndimage
from keras import ops

from keras_vit import config
from keras_vit import layers as vit_layers

LAYER_CASES = {
    "patch_embedding": (
        lambda: vit_layers.PatchEmbedding(patch_size=8, hidden_dim=16),
        (2, 32, 24, 3),
        (2, 12, 16),
    ),
    "class_token": (lambda: vit_layers.ClassToken(), (2, 12, 16), (2, 13, 16)),
    "position_embedding": (
        lambda: vit_layers.PositionEmbedding(grid_size=(4, 3), num_prefix_tokens=1),
        (2, 13, 16),
        (2, 13, 16),
    ),
    "encoder_block": (
        lambda: vit_layers.TransformerEncoderBlock(
            hidden_dim=16, num_heads=4, mlp_dim=32, dropout_rate=0.1, drop_path_rate=0.1
        ),
        (2, 13, 16),
        (2, 13, 16),
    ),
    "drop_path": (lambda: vit_layers.DropPath(0.5), (2, 13, 16), (2, 13, 16)),
    "token_pooling": (lambda: vit_layers.TokenPooling("gap"), (2, 13, 16), (2, 16)),
}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_output_shape_and_config_round_trip(case):
    make, input_shape, output_shape = LAYER_CASES[case]
    layer = make()
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    y = layer(x)
    assert tuple(y.shape) == output_shape
    assert tuple(layer.compute_output_shape(input_shape)) == output_shape

    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(input_shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(clone(x)), ops.convert_to_numpy(y), atol=1e-6)


def test_patch_embedding_is_a_strided_convolution():
    layer = vit_layers.PatchEmbedding(patch_size=4, hidden_dim=5)
    x = np.random.default_rng(1).normal(size=(1, 8, 12, 3)).astype("float32")
    tokens = ops.convert_to_numpy(layer(x))
    kernel, bias = (ops.convert_to_numpy(w) for w in layer.projection.weights)
    # Token for patch (row 1, col 2) is the patch's pixels dotted with the kernel.
    patch = x[0, 4:8, 8:12, :]
    expected = np.einsum("hwc,hwcd->d", patch, kernel) + bias
    np.testing.assert_allclose(tokens[0, 1 * 3 + 2], expected, rtol=1e-5, atol=1e-5)


def test_class_token_is_prepended_and_zero_initialised():
    layer = vit_layers.ClassToken()
    x = np.ones((3, 4, 6), "float32")
    y = ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(y[:, 0], 0.0)
    np.testing.assert_array_equal(y[:, 1:], x)


def test_position_embedding_rejects_wrong_token_count():
    layer = vit_layers.PositionEmbedding(grid_size=(4, 4))
    with pytest.raises(ValueError, match="expects 17 tokens, got 16"):
        layer(np.zeros((1, 16, 8), "float32"))


def test_resample_keeps_class_slot_and_matches_scipy_zoom():
    rng = np.random.default_rng(2)
    embedding = rng.normal(size=(1, 1 + 4 * 6, 8)).astype("float32")
    resampled = vit_layers.resample_position_embedding(embedding, (4, 6), (7, 9))
    assert resampled.shape == (1, 1 + 7 * 9, 8)
    np.testing.assert_array_equal(resampled[:, 0], embedding[:, 0])
    grid = embedding[0, 1:].reshape(4, 6, 8)
    reference = scipy.ndimage.zoom(grid, (7 / 4, 9 / 6, 1), order=1)
    np.testing.assert_allclose(resampled[0, 1:].reshape(7, 9, 8), reference, atol=1e-5)


def test_resample_to_same_grid_is_identity_and_bad_shapes_fail():
    embedding = np.random.default_rng(3).normal(size=(1, 17, 4)).astype("float32")
    same = vit_layers.resample_position_embedding(embedding, (4, 4), (4, 4))
    np.testing.assert_array_equal(same, embedding)
    with pytest.raises(ValueError, match="does not match"):
        vit_layers.resample_position_embedding(embedding, (5, 5), (4, 4))


def test_drop_path_drops_whole_samples_in_training_only():
    layer = vit_layers.DropPath(0.5, seed=1)
    x = np.ones((64, 3, 4), "float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), x)
    y = ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
    assert 10 < (per_sample[:, 0] == 0).sum() < 54
    with pytest.raises(ValueError, match="rate"):
        vit_layers.DropPath(1.0)


def test_encoder_block_matches_its_definition():
    """The block is x + MHA(LN(x)), then + MLP(LN(.)), with the configured GELU."""
    block = vit_layers.TransformerEncoderBlock(16, 4, 32, gelu_approximate=False)
    x = ops.convert_to_tensor(np.random.default_rng(4).normal(size=(2, 5, 16)).astype("float32"))
    y = ops.convert_to_numpy(block(x))
    h = block.attention_norm(x)
    h = x + block.attention(h, h)
    m = block.mlp_dense_2(keras.activations.gelu(block.mlp_dense_1(block.mlp_norm(h)), approximate=False))
    np.testing.assert_allclose(y, ops.convert_to_numpy(h + m), rtol=1e-5, atol=1e-5)


def test_encoder_block_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        vit_layers.TransformerEncoderBlock(hidden_dim=10, num_heads=3, mlp_dim=8)


def test_token_pooling_modes():
    x = np.random.default_rng(5).normal(size=(2, 3, 4)).astype("float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(vit_layers.TokenPooling("token")(x)), x[:, 0])
    np.testing.assert_allclose(
        ops.convert_to_numpy(vit_layers.TokenPooling("gap")(x)), x.mean(axis=1), rtol=1e-6
    )
    with pytest.raises(ValueError, match="pooling"):
        vit_layers.TokenPooling("max")


def test_flat_xavier_uniform_uses_the_flattened_fans():
    init = vit_layers.FlatXavierUniform(fan_in=64, seed=0)
    values = ops.convert_to_numpy(init((64, 4, 16)))
    limit = np.sqrt(6 / (64 + 64))
    assert np.abs(values).max() <= limit
    assert np.abs(values).max() > 0.9 * limit
    assert vit_layers.FlatXavierUniform.from_config(init.get_config()).fan_in == 64


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX training only")
def test_encoder_stack_gradients_with_the_materialized_residual_gradient():
    """Training mode (the residual gradient goes through `jax_gradient.materialized_gradient`)
    and inference mode give the same gradients when there is no dropout."""
    import jax

    if not vit_layers.materializes_gradient("float32"):
        pytest.skip("float32 blocks materialise their gradient on a CPU only")
    blocks = [vit_layers.TransformerEncoderBlock(16, 2, 32, name=f"b{i}") for i in range(3)]
    inputs = keras.Input((5, 16))
    x = inputs
    for block in blocks:
        x = block(x)
    stack = keras.Model(inputs, x)
    tokens = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    weights = [v.value for v in stack.trainable_variables]
    state = [v.value for v in stack.non_trainable_variables]  # dropout seeds

    def gradients(training):
        def loss(w, x):
            out, _ = stack.stateless_call(w, state, x, training=training)
            return (out**2).sum()

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(weights, tokens)

    trained, inferred = gradients(True), gradients(False)
    jaxpr = str(
        jax.make_jaxpr(lambda w: stack.stateless_call(w, state, tokens, training=True))(weights)
    )
    assert "custom_vjp" in jaxpr or "custom_jvp" in jaxpr
    with config.gradient_materialization("off"):
        plain = str(jax.make_jaxpr(
            lambda w: stack.stateless_call(w, state, tokens, training=True))(weights))
    assert "custom_vjp" not in plain and "custom_jvp" not in plain
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(inferred)):
        # equal up to float32 rounding: XLA sums the residual gradient in another order
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cpu", [True, False])
def test_gradient_materialization_modes(monkeypatch, cpu):
    """JAX only: "auto" on a CPU; "on" also elsewhere in bf16/fp16; "off" never."""
    jax = keras.backend.backend() == "jax"
    monkeypatch.setattr(config, "on_cpu", lambda: cpu)
    for dtype in ("float32", "bfloat16", "float16"):
        with config.gradient_materialization("auto"):
            assert vit_layers.materializes_gradient(dtype) is (jax and cpu)
        with config.gradient_materialization("on"):
            assert vit_layers.materializes_gradient(dtype) is (jax and (cpu or dtype != "float32"))
        with config.gradient_materialization("off"):
            assert vit_layers.materializes_gradient(dtype) is False

