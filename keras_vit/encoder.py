"""The Transformer encoder block and its stochastic depth (`DropPath`).

Only `keras.ops` is used, so they run on TensorFlow, JAX and PyTorch (JAX training adds
`keras_vit.backend.jax_gradient`, imported only there). Shapes use B = batch, N = number of
tokens, D = hidden size.
"""

import keras
from keras import ops

from keras_vit import config as vit_config
from keras_vit.attention import ViTAttention
from keras_vit.layer_helpers import MLP_TYPES, FlatXavierUniform, activation, check_mlp_activation
from keras_vit.norm import normalization


@keras.saving.register_keras_serializable(package="keras_vit")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a residual branch per sample with probability `rate`.

    (B, ...) -> (B, ...); kept samples are scaled by 1 / (1 - rate) during training.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {rate}.")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator) < keep
        return x * ops.cast(mask, x.dtype) / keep

    def mlp_hidden(self, y):
        """(B, N, D) -> (B, N, mlp_dim): the MLP's hidden, activated (before dropout)."""
        if self.mlp_type == "swiglu":
            return ops.silu(self.mlp_gate(y)) * self.mlp_dense_1(y)
        return activation(self.mlp_activation)(self.mlp_dense_1(y))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


def materializes_gradient(dtype):
    """Whether a JAX training step of a block computing in `dtype` materialises its output
    gradient (see `keras_vit.config.set_gradient_materialization`)."""
    mode = vit_config.get_gradient_materialization()
    if mode == "off" or keras.backend.backend() != "jax":
        return False
    if vit_config.on_cpu():
        return True
    return mode == "on" and keras.backend.standardize_dtype(dtype) in ("bfloat16", "float16")


@keras.saving.register_keras_serializable(package="keras_vit")
class TransformerEncoderBlock(keras.layers.Layer):
    """A pre-norm Transformer encoder block: (B, N, D) -> (B, N, D).

        x = x + DropPath(LayerScale(Dropout(MHA(LayerNormalization(x)))))
        x = x + DropPath(LayerScale(MLP(LayerNormalization(x))))
        MLP = Dense -> activation -> Dropout -> Dense -> Dropout

    `layer_scale_init` (DeiT III, DINOv2) adds a learned per-channel scale on both
    branches, initialised to that value; None (the original) has none. `mlp_activation`:
    "gelu" (exact), "gelu_tanh" (the tanh approximation of the Flax originals) or
    "quick_gelu" (x * sigmoid(1.702 x), OpenAI CLIP). `rope`: the 2-D rotary position
    embedding's options (`keras_vit.rope.rope_options`), applied to the attention's query
    and key; None (the original) has none.

    `norm_type`: "layer_norm" or "rms_norm" (`keras_vit.norm.normalization`). `mlp_type`
    "swiglu" makes the MLP `mlp_dense_2(silu(mlp_gate(y)) * mlp_dense_1(y))` (AIMv2, EVA-02;
    `mlp_activation` is then unused); `mlp_inner_norm` normalises the MLP's hidden
    (mlp_dim wide) before `mlp_dense_2` (EVA-02). `query_bias`, `key_bias`, `value_bias`,
    `output_bias` (attention) and `mlp_bias` (every MLP Dense): False drops that bias.

    Attention is `keras_vit.attention.ViTAttention`, a `keras.layers.MultiHeadAttention`
    with the same variables that computes in head-major layout on a CPU (JAX, TensorFlow)
    and with cuDNN's fused kernel for training on a JAX GPU. In JAX training on a CPU the
    block's output gradient is materialised (`keras_vit.backend.jax_gradient`), which XLA
    would otherwise recompute inside every earlier block
    (`keras_vit.config.set_gradient_materialization`).
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        mlp_dim,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        mlp_activation="gelu_tanh",
        layer_scale_init=None,
        norm_type="layer_norm",
        mlp_type="mlp",
        mlp_inner_norm=False,
        query_bias=True,
        key_bias=True,
        value_bias=True,
        output_bias=True,
        mlp_bias=True,
        rope=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})."
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.mlp_activation = check_mlp_activation(mlp_activation)
        self.layer_scale_init = layer_scale_init
        if mlp_type not in MLP_TYPES:
            raise ValueError(f"mlp_type must be one of {MLP_TYPES}, got {mlp_type!r}.")
        self.norm_type, self.mlp_type, self.mlp_inner_norm = norm_type, mlp_type, mlp_inner_norm
        self.biases = dict(query_bias=query_bias, key_bias=key_bias, value_bias=value_bias,
                           output_bias=output_bias, mlp_bias=mlp_bias)
        self.rope = rope

        policy = self.dtype_policy
        self.attention_norm = normalization(
            norm_type, layer_norm_epsilon, dtype=policy, name="attention_norm")
        self.attention = ViTAttention(
            num_heads=num_heads,
            key_dim=hidden_dim // num_heads,
            dropout=attention_dropout_rate,
            kernel_initializer=FlatXavierUniform(fan_in=hidden_dim),
            query_bias=query_bias,
            key_bias=key_bias,
            value_bias=value_bias,
            output_bias=output_bias,
            rope=rope,
            dtype=policy,
            name="attention",
        )
        self.mlp_norm = normalization(norm_type, layer_norm_epsilon, dtype=policy, name="mlp_norm")
        mlp_init = dict(
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            use_bias=mlp_bias,
            dtype=policy,
        )
        self.mlp_dense_1 = keras.layers.Dense(mlp_dim, name="mlp_dense_1", **mlp_init)
        if mlp_type == "swiglu":
            self.mlp_gate = keras.layers.Dense(mlp_dim, name="mlp_gate", **mlp_init)
        if mlp_inner_norm:
            self.mlp_inner_norm_layer = normalization(
                norm_type, layer_norm_epsilon, dtype=policy, name="mlp_inner_norm")
        self.mlp_dense_2 = keras.layers.Dense(hidden_dim, name="mlp_dense_2", **mlp_init)
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=policy)
        self.drop_path = DropPath(drop_path_rate, dtype=policy)

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_dense_1.build(input_shape)
        hidden_shape = tuple(input_shape[:-1]) + (self.mlp_dim,)
        if self.mlp_type == "swiglu":
            self.mlp_gate.build(input_shape)
        if self.mlp_inner_norm:
            self.mlp_inner_norm_layer.build(hidden_shape)
        self.mlp_dense_2.build(hidden_shape)
        # DropPath has no weights, but the symbolic call (compute_output_shape) never
        # builds it, and `Model.quantize` refuses unbuilt layers.
        self.drop_path.build(input_shape)
        if self.layer_scale_init is not None:
            scale = keras.initializers.Constant(self.layer_scale_init)
            self.attention_scale = self.add_weight(
                shape=(self.hidden_dim,), initializer=scale, name="attention_scale")
            self.mlp_scale = self.add_weight(
                shape=(self.hidden_dim,), initializer=scale, name="mlp_scale")

    def _scaled(self, y, scale_name):
        if self.layer_scale_init is None:
            return y
        return y * ops.cast(getattr(self, scale_name), y.dtype)

    def call(self, x, training=False):
        y = self.attention_norm(x)
        y = self.attention(y, y, training=training)
        y = self._scaled(self.dropout(y, training=training), "attention_scale")
        x = x + self.drop_path(y, training=training)
        y = self.mlp_hidden(self.mlp_norm(x))
        y = self.dropout(y, training=training)
        if self.mlp_inner_norm:
            y = self.mlp_inner_norm_layer(y)
        y = self._scaled(self.dropout(self.mlp_dense_2(y), training=training), "mlp_scale")
        x = x + self.drop_path(y, training=training)
        if training and materializes_gradient(x.dtype):
            from keras_vit.backend.jax_gradient import materialized_gradient

            x = materialized_gradient(x)
        return x

    def mlp_hidden(self, y):
        """(B, N, D) -> (B, N, mlp_dim): the MLP's hidden, activated (before dropout)."""
        if self.mlp_type == "swiglu":
            return ops.silu(self.mlp_gate(y)) * self.mlp_dense_1(y)
        return activation(self.mlp_activation)(self.mlp_dense_1(y))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            drop_path_rate=self.drop_path_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
            mlp_activation=self.mlp_activation,
            layer_scale_init=self.layer_scale_init,
            norm_type=self.norm_type,
            mlp_type=self.mlp_type,
            mlp_inner_norm=self.mlp_inner_norm,
            **self.biases,
            rope=self.rope,
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Configs written before `mlp_activation` became the only activation argument also
        # hold `gelu_approximate`, which their resolved `mlp_activation` already says.
        config = {k: v for k, v in config.items() if k != "gelu_approximate"}
        return cls(**config)
