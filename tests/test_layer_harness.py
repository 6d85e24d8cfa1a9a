"""Every public layer of keras_vit.layers through the shared harness (`layer_harness`):
config round trip, .keras saving, mixed_bfloat16, predict on tf.data; and the harness
itself catches the bugs it is there for."""

import importlib.util
import inspect

import keras
import pytest

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
    "encoder_block": ("TransformerEncoderBlock",
                      dict(hidden_dim=8, num_heads=2, mlp_dim=16, dropout_rate=0.1,
                           attention_dropout_rate=0.1, drop_path_rate=0.1),
                      (2, 5, 8), (2, 5, 8)),
    "encoder_block_exact_gelu": ("TransformerEncoderBlock",
                                 dict(hidden_dim=8, num_heads=2, mlp_dim=16,
                                      gelu_approximate=False, layer_norm_epsilon=1e-5),
                                 (2, 5, 8), (2, 5, 8)),
    "layer_normalization": ("LayerNormalization", dict(epsilon=1e-5), (2, 5, 8), (2, 5, 8)),
    "drop_path": ("DropPath", dict(rate=0.25, seed=3), (2, 3, 4), (2, 3, 4)),
    "token_pooling": ("TokenPooling", dict(pooling="token"), (2, 5, 8), (2, 8)),
    "token_pooling_gap": ("TokenPooling", dict(pooling="gap"), (2, 5, 8), (2, 8)),
    "attention_pooling": ("AttentionPooling", dict(num_heads=2, mlp_dim=16), (2, 5, 8), (2, 8)),
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


@pytest.mark.parametrize("case", CASES)
def test_layer(case):
    name, init_kwargs, input_shape, output_shape = CASES[case]
    layer_cls = getattr(vit_layers, name)
    ran = run_layer_test(layer_cls, init_kwargs, input_shape,
                         expected_output_shape=output_shape, call_kwargs={})
    assert ran == [c for c in CHECKS if c != "tf.data" or TENSORFLOW]


# --------------------------------------------------------------------------- the harness


@keras.saving.register_keras_serializable(package="test_layer_harness")
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


@keras.saving.register_keras_serializable(package="test_layer_harness")
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
