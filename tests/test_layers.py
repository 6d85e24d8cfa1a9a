"""Every public layer of keras_vit.layers: the shared harness's checks (`layer_harness`:
output shape, config round trip, .keras saving under its registered name, mixed_bfloat16,
predict on tf.data), then the behaviour that defines each layer against an independent
reference; and the harness itself catches the bugs it is there for."""

import importlib.util
import inspect

import keras
import numpy as np
import pytest
import scipy.ndimage
import scipy.special
from keras import ops

from keras_vit import config
from keras_vit import layers as vit_layers
from layer_harness import CHECKS, run_layer_test

TENSORFLOW = importlib.util.find_spec("tensorflow") is not None

# (public name in keras_vit.layers, init kwargs, input shape, expected output shape).
# Tiny shapes, mostly 5 tokens of width 8 (JAX compiles each op once per shape). The
# attention's default ("auto") path runs inside the encoder blocks.
CASES = {
    "patch_embedding": ("PatchEmbedding", dict(patch_size=4, hidden_dim=8), (2, 8, 8, 3),
                        (2, 4, 8)),
    "patch_embedding_non_square": ("PatchEmbedding", dict(patch_size=(4, 2), hidden_dim=8),
                                   (2, 8, 6, 3), (2, 6, 8)),
    "class_token": ("ClassToken", {}, (2, 4, 8), (2, 5, 8)),
    "register_tokens": ("RegisterTokens", dict(num_tokens=2), (2, 5, 8), (2, 7, 8)),
    "register_tokens_first": ("RegisterTokens", dict(num_tokens=1, insert_at=0), (2, 5, 8),
                              (2, 6, 8)),
    "distillation_token": ("DistillationToken", {}, (2, 5, 8), (2, 6, 8)),
    "position_embedding": ("PositionEmbedding", dict(grid_size=(2, 2)), (2, 5, 8), (2, 5, 8)),
    "position_embedding_no_prefix": ("PositionEmbedding",
                                     dict(grid_size=(2, 3), num_prefix_tokens=0),
                                     (2, 6, 8), (2, 6, 8)),
    "learned_2d_position": ("LearnedPositionEmbedding2D", dict(grid_size=(2, 3)),
                            (2, 7, 8), (2, 7, 8)),
    "sincos_2d_position": ("SinCosPositionEmbedding2D",
                           dict(grid_size=(3, 2), num_prefix_tokens=0), (2, 6, 8), (2, 6, 8)),
    "encoder_block": ("TransformerEncoderBlock",
                      dict(hidden_dim=8, num_heads=2, mlp_dim=16, dropout_rate=0.1,
                           attention_dropout_rate=0.1, drop_path_rate=0.1),
                      (2, 5, 8), (2, 5, 8)),
    "encoder_block_exact_gelu": ("TransformerEncoderBlock",
                                 dict(hidden_dim=8, num_heads=2, mlp_dim=16,
                                      mlp_activation="gelu", layer_norm_epsilon=1e-5),
                                 (2, 5, 8), (2, 5, 8)),
    "encoder_block_quick_gelu_layer_scale": ("TransformerEncoderBlock",
                                             dict(hidden_dim=8, num_heads=2, mlp_dim=16,
                                                  mlp_activation="quick_gelu",
                                                  layer_scale_init=0.1),
                                             (2, 5, 8), (2, 5, 8)),
    "layer_normalization": ("LayerNormalization", dict(epsilon=1e-5), (2, 5, 8), (2, 5, 8)),
    "rms_normalization": ("RMSNormalization", dict(epsilon=1e-5), (2, 5, 8), (2, 5, 8)),
    "patch_embedding_rms_norm_no_bias": ("PatchEmbedding",
                                         dict(patch_size=4, hidden_dim=8, use_bias=False,
                                              norm_type="rms_norm"), (2, 8, 8, 3), (2, 4, 8)),
    "encoder_block_swiglu_rms_norm_no_biases": (
        "TransformerEncoderBlock",
        dict(hidden_dim=8, num_heads=2, mlp_dim=16, norm_type="rms_norm", mlp_type="swiglu",
             mlp_inner_norm=True, query_bias=False, key_bias=False, output_bias=False,
             mlp_bias=False, dropout_rate=0.1), (2, 5, 8), (2, 5, 8)),
    "attention_pooling_rms_norm": ("AttentionPooling",
                                   dict(num_heads=2, mlp_dim=16, norm_type="rms_norm"),
                                   (2, 5, 8), (2, 8)),
    "drop_path": ("DropPath", dict(rate=0.25, seed=3), (2, 3, 4), (2, 3, 4)),
    "token_pooling": ("TokenPooling", dict(pooling="token"), (2, 5, 8), (2, 8)),
    "token_pooling_gap": ("TokenPooling", dict(pooling="gap"), (2, 5, 8), (2, 8)),
    "attention_pooling": ("AttentionPooling", dict(num_heads=2, mlp_dim=16), (2, 5, 8), (2, 8)),
    "probe_pooling": ("ProbePooling", dict(num_heads=2, key_bias=False), (2, 5, 8), (2, 8)),
    "attention_head_major": ("ViTAttention",
                             dict(num_heads=2, key_dim=4, implementation="head_major"),
                             {"query": (2, 5, 8), "value": (2, 5, 8)}, (2, 5, 8)),
    "attention_plain": ("ViTAttention", dict(num_heads=2, key_dim=4, implementation="plain"),
                        {"query": (2, 5, 8), "value": (2, 5, 8)}, (2, 5, 8)),
}


def public_layer_names():
    """The public Layer classes keras_vit.layers offers (its own or re-exported ones)."""
    return sorted(
        name
        for name, value in vars(vit_layers).items()
        if not name.startswith("_")
        and inspect.isclass(value)
        and issubclass(value, keras.layers.Layer)
        and value.__module__.startswith("keras_vit")
    )


def test_every_public_layer_has_a_case():
    names = public_layer_names()
    assert {"PatchEmbedding", "ClassToken", "PositionEmbedding", "TransformerEncoderBlock",
            "DropPath", "TokenPooling", "ViTAttention"} <= set(names)
    missing = set(names) - {case[0] for case in CASES.values()}
    assert not missing, f"add a case to CASES for {sorted(missing)}"


@pytest.mark.parametrize("name", public_layer_names())
def test_every_public_layer_is_registered_under_keras_vit(name):
    """.keras files name a layer "keras_vit>{class name}", whatever module defines it."""
    layer_cls = getattr(vit_layers, name)
    assert keras.saving.get_registered_name(layer_cls) == f"keras_vit>{name}"
    assert keras.saving.get_registered_object(f"keras_vit>{name}") is layer_cls


@pytest.mark.parametrize("case", CASES)
def test_layer(case):
    name, init_kwargs, input_shape, output_shape = CASES[case]
    layer_cls = getattr(vit_layers, name)
    ran = run_layer_test(layer_cls, init_kwargs, input_shape,
                         expected_output_shape=output_shape, call_kwargs={})
    assert ran == [c for c in CHECKS if c != "tf.data" or TENSORFLOW]


# --------------------------------------------------------------------------- each layer's behaviour


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


# The MLP activations, written from their definitions.
ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    "quick_gelu": lambda x: x * scipy.special.expit(1.702 * x),
}


def _numpy(x):
    return ops.convert_to_numpy(x).astype("float64")


def _mlp(dense_1, dense_2, x, name):
    """dense_2(activation(dense_1(x))) in float64 NumPy, from the layers' weights."""
    kernel_1, bias_1 = (_numpy(w) for w in dense_1.weights)
    kernel_2, bias_2 = (_numpy(w) for w in dense_2.weights)
    return ACTIVATIONS[name](x @ kernel_1 + bias_1) @ kernel_2 + bias_2


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_encoder_block_matches_its_definition(name):
    """The block is x + MHA(LN(x)), then + MLP(LN(.)), with the MLP activation asked for."""
    assert set(ACTIVATIONS) == set(vit_layers.MLP_ACTIVATIONS)
    block = vit_layers.TransformerEncoderBlock(16, 4, 32, mlp_activation=name)
    x = ops.convert_to_tensor(np.random.default_rng(4).normal(size=(2, 5, 16)).astype("float32"))
    block(x)  # builds it
    for dense in (block.mlp_dense_1, block.mlp_dense_2):  # a visible bias
        dense.bias.assign(np.random.default_rng(5).normal(size=dense.bias.shape))
    y = ops.convert_to_numpy(block(x))
    h = block.attention_norm(x)
    h = x + block.attention(h, h)
    expected = _numpy(h) + _mlp(block.mlp_dense_1, block.mlp_dense_2, _numpy(block.mlp_norm(h)), name)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_attention_pooling_matches_its_definition(name):
    """A learned probe attends over the tokens, then + MLP(LN(.)): (B, N, D) -> (B, D)."""
    pooling = vit_layers.AttentionPooling(num_heads=2, mlp_dim=12, mlp_activation=name)
    rng = np.random.default_rng(6)
    tokens = rng.normal(size=(2, 5, 8)).astype("float32")
    pooling(tokens)  # builds it
    pooling.probe.assign(rng.normal(size=pooling.probe.shape))
    y = ops.convert_to_numpy(pooling(tokens))
    probe = np.broadcast_to(ops.convert_to_numpy(pooling.probe), (2, 1, 8))
    h = pooling.attention(probe, tokens)
    expected = _numpy(h) + _mlp(pooling.mlp_dense_1, pooling.mlp_dense_2, _numpy(pooling.norm(h)), name)
    assert y.shape == (2, 8)
    np.testing.assert_allclose(y, expected[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda name: vit_layers.TransformerEncoderBlock(8, 2, 16, mlp_activation=name),
    lambda name: vit_layers.AttentionPooling(num_heads=2, mlp_dim=16, mlp_activation=name),
])
def test_a_bad_mlp_activation_names_the_valid_ones(make):
    for bad in ("relu", None, "gelu_approximate"):
        with pytest.raises(ValueError, match=r"mlp_activation must be one of \('gelu', "):
            make(bad)


def test_encoder_block_config_has_one_activation_entry():
    """`mlp_activation` only; a config that also holds the former `gelu_approximate`
    (written beside the resolved `mlp_activation`) still builds the same block."""
    block = vit_layers.TransformerEncoderBlock(8, 2, 16, mlp_activation="gelu")
    config = block.get_config()
    assert config["mlp_activation"] == "gelu" and "gelu_approximate" not in config
    former = vit_layers.TransformerEncoderBlock.from_config({**config, "gelu_approximate": False})
    assert former.get_config() == config


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


# --------------------------------------------------------------------------- the harness


@keras.saving.register_keras_serializable(package="test_layers")
class Scale(keras.layers.Layer):
    """x * scale * w; `bug` picks what the layer gets wrong."""

    def __init__(self, scale=1.0, bug=None, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.bug = scale, bug
        # "policy": the sublayer ignores the layer's dtype policy.
        policy = None if bug == "policy" else self.dtype_policy
        self.dense = keras.layers.Dense(4, dtype=policy)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x) * self.scale

    def compute_output_shape(self, input_shape):
        if self.bug == "shape":
            return input_shape
        return (*input_shape[:-1], 4)

    def get_config(self):
        config = super().get_config()
        config.update(bug=self.bug)
        if self.bug != "config":
            config.update(scale=self.scale)
        return config


def test_a_correct_layer_passes():
    assert run_layer_test(Scale, dict(scale=3.0), (2, 3), expected_output_shape=(2, 4),
                          skip=("tf.data",)) == ["shape", "config", "saving", "mixed"]


@pytest.mark.parametrize("bug, check", [("config", "config"), ("policy", "mixed"),
                                        ("shape", "shape")])
def test_the_harness_catches(bug, check):
    with pytest.raises(AssertionError, match=rf"^\[{check}\] Scale"):
        run_layer_test(Scale, dict(scale=3.0, bug=bug), (2, 3), skip=("saving", "tf.data"))


@keras.saving.register_keras_serializable(package="test_layers")
class Forgets(Scale):
    """Loads with scale 1: get_config is right, from_config isn't."""

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "scale": 1.0})


@pytest.mark.parametrize("check", ["config", "saving"])
def test_the_harness_catches_a_layer_that_comes_back_different(check):
    others = tuple(c for c in CHECKS if c not in ("shape", check))
    with pytest.raises(AssertionError, match=rf"^\[{check}\] Forgets"):
        run_layer_test(Forgets, dict(scale=3.0), (2, 3), skip=others)
