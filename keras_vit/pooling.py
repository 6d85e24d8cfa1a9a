"""Pooling the token sequence to one vector: read out a token, average, or attend.

`TokenPooling` is the original's (class token or average); `AttentionPooling` is the
multi-head attention pooling (MAP) head of big_vision and SigLIP; `ProbePooling` is
AIMv2's lighter attention-pooling head.
"""

import keras
from keras import ops

from keras_vit.layer_helpers import FlatXavierUniform, activation, check_mlp_activation
from keras_vit.norm import normalization


def read_token(tokens, index):
    """(B, N, D) -> (B, D): token `index`, as a slice and a reshape (TFLite's GPU delegate
    and XNNPACK take those, not the strided slice that drops an axis)."""
    return ops.reshape(tokens[:, index:index + 1], (-1, tokens.shape[-1]))


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenPooling(keras.layers.Layer):
    """Pools tokens to one vector: (B, N, D) -> (B, D).

    "token" takes the class token (the first one), "distillation" DeiT's distillation
    token (the second); "gap" averages the tokens after the first `num_prefix_tokens`
    (register tokens).
    """

    def __init__(self, pooling="token", num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("token", "distillation", "gap"):
            raise ValueError(f"pooling must be 'token' or 'gap', got {pooling!r}.")
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, tokens):
        if self.pooling in ("token", "distillation"):
            return read_token(tokens, 0 if self.pooling == "token" else 1)
        return ops.mean(tokens[:, self.num_prefix_tokens:], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(pooling=self.pooling, num_prefix_tokens=self.num_prefix_tokens)
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class AttentionPooling(keras.layers.Layer):
    """Multi-head attention pooling (MAP; SigLIP, big_vision): (B, N, D) -> (B, D).

        y = MHA(query=probe, key=value=tokens)       a learned probe token attends
        y = y + MLP(norm(y))                    MLP = Dense -> activation -> Dense

    `mlp_activation`: "gelu", "gelu_tanh" or "quick_gelu", as in `TransformerEncoderBlock`;
    `norm_type`: "layer_norm" or "rms_norm" (`keras_vit.norm.normalization`).
    """

    def __init__(self, num_heads, mlp_dim, layer_norm_epsilon=1e-6, mlp_activation="gelu",
                 norm_type="layer_norm", **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.mlp_dim = num_heads, mlp_dim
        self.layer_norm_epsilon, self.norm_type = layer_norm_epsilon, norm_type
        self.mlp_activation = check_mlp_activation(mlp_activation)

    def build(self, input_shape):
        d = input_shape[-1]
        policy = self.dtype_policy
        self._activation = activation(self.mlp_activation)
        self.probe = self.add_weight(shape=(1, 1, d), initializer="glorot_uniform", name="probe")
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, d // self.num_heads, kernel_initializer=FlatXavierUniform(fan_in=d),
            dtype=policy, name="attention")
        self.attention.build((input_shape[0], 1, d), input_shape)
        self.norm = normalization(
            self.norm_type, self.layer_norm_epsilon, dtype=policy, name="norm")
        self.norm.build((input_shape[0], 1, d))
        self.mlp_dense_1 = keras.layers.Dense(self.mlp_dim, dtype=policy, name="mlp_dense_1")
        self.mlp_dense_1.build((input_shape[0], 1, d))
        self.mlp_dense_2 = keras.layers.Dense(d, dtype=policy, name="mlp_dense_2")
        self.mlp_dense_2.build((input_shape[0], 1, self.mlp_dim))

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        probe = ops.broadcast_to(ops.cast(self.probe, tokens.dtype), (batch, 1, tokens.shape[-1]))
        y = self.attention(probe, tokens)
        y = y + self.mlp_dense_2(self._activation(self.mlp_dense_1(self.norm(y))))
        return read_token(y, 0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                      layer_norm_epsilon=self.layer_norm_epsilon,
                      mlp_activation=self.mlp_activation, norm_type=self.norm_type)
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class ProbePooling(keras.layers.Layer):
    """Attention pooling with the learned probe itself as the query (AIMv2's head):
    (B, N, D) -> (B, D).

        k, v = tokens W_k + b_k, tokens W_v + b_v               (B, N, heads, head_dim)
        y = softmax(probe . k / sqrt(head_dim)) v W_o + b_o     one probe row per head

    Unlike `AttentionPooling` there is no query projection, no norm and no MLP.
    `key_bias`, `value_bias`: False builds that projection without a bias. The variables
    are named as in `AttentionPooling` ("probe", "attention/key", "attention/value",
    "attention/attention_output"), so sharding and the converters treat both alike.
    """

    def __init__(self, num_heads, key_bias=True, value_bias=True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(key_bias, bool) or not isinstance(value_bias, bool):
            raise ValueError(f"key_bias and value_bias must be True or False, got "
                             f"{key_bias!r}, {value_bias!r}.")
        self.num_heads, self.key_bias, self.value_bias = num_heads, key_bias, value_bias

    def build(self, input_shape):
        d, heads = input_shape[-1], self.num_heads
        if d % heads:
            raise ValueError(f"The tokens' width {d} is not divisible by num_heads {heads}.")
        head_dim = d // heads
        policy = self.dtype_policy
        self.probe = self.add_weight(shape=(1, 1, d), name="probe",
                                     initializer=keras.initializers.RandomNormal(stddev=0.02))
        projection = dict(kernel_initializer=FlatXavierUniform(fan_in=d), dtype=policy)
        with keras.name_scope("attention"):
            self.key = keras.layers.EinsumDense(
                "abc,cde->abde", (None, heads, head_dim), name="key",
                bias_axes="de" if self.key_bias else None, **projection)
            self.value = keras.layers.EinsumDense(
                "abc,cde->abde", (None, heads, head_dim), name="value",
                bias_axes="de" if self.value_bias else None, **projection)
            self.attention_output = keras.layers.EinsumDense(
                "abc,bcd->ad", (d,), bias_axes="d", name="attention_output", **projection)
            for layer in (self.key, self.value):
                layer.build(input_shape)
            self.attention_output.build((input_shape[0], heads, head_dim))

    def call(self, tokens):
        heads = self.num_heads
        head_dim = tokens.shape[-1] // heads
        query = ops.reshape(ops.cast(self.probe, "float32"), (heads, head_dim))
        keys = ops.cast(self.key(tokens), "float32")
        scores = ops.einsum("hd,bnhd->bhn", query / head_dim ** 0.5, keys)
        weights = ops.cast(ops.softmax(scores, axis=-1), tokens.dtype)
        attended = ops.einsum("bhn,bnhd->bhd", weights, self.value(tokens))
        return self.attention_output(attended)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, key_bias=self.key_bias,
                      value_bias=self.value_bias)
        return config
