"""The Vision Transformer's building blocks, as backend-agnostic Keras layers.

Only `keras.ops` is used here, so every layer runs on TensorFlow, JAX and PyTorch (JAX
training adds `keras_vit.backend.jax_gradient`, imported only there).
Shapes use B = batch, N = number of tokens, D = hidden size.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_vit import config as vit_config
from keras_vit.attention import ViTAttention
from keras_vit.norm import LayerNormalization
from keras_vit.pooling import AttentionPooling, TokenPooling  # noqa: F401  (public here)

MLP_ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu")


def activation(name):
    """The MLP activation `name` (one of MLP_ACTIVATIONS) as a function of a tensor."""
    if name == "quick_gelu":
        return lambda y: y * ops.sigmoid(1.702 * y)
    return lambda y: ops.gelu(y, approximate=name == "gelu_tanh")


@keras.saving.register_keras_serializable(package="keras_vit")
class FlatXavierUniform(keras.initializers.RandomUniform):
    """Xavier-uniform for a multi-axis kernel seen as a `(fan_in, size // fan_in)` matrix.

    Flax initialises the attention projections as 2-D matrices and reshapes them, so a
    `(D, heads, head_dim)` query kernel has fan-in D and fan-out heads * head_dim; Keras's
    own Glorot initialiser would count fans over the extra axes and draw far smaller values.
    """

    def __init__(self, fan_in, seed=None):
        super().__init__(seed=seed)
        self.fan_in = fan_in

    def __call__(self, shape, dtype=None):
        fan_out = math.prod(shape) // self.fan_in
        limit = math.sqrt(6.0 / (self.fan_in + fan_out))
        return keras.random.uniform(shape, -limit, limit, seed=self.seed, dtype=dtype)

    def get_config(self):
        return {
            "fan_in": self.fan_in,
            "seed": keras.saving.serialize_keras_object(self._init_seed),
        }


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchEmbedding(keras.layers.Layer):
    """Cuts images into non-overlapping patches and projects each to a token.

    (B, H, W, C) -> (B, (H // ph) * (W // pw), D), using a Conv2D whose kernel and stride
    are the patch size `(ph, pw)` (an int for square patches), VALID padding, as the
    original ViT does.
    """

    def __init__(self, patch_size, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)
        self.hidden_dim = hidden_dim
        self.projection = keras.layers.Conv2D(
            hidden_dim,
            kernel_size=patch_size,
            strides=patch_size,
            padding="valid",
            kernel_initializer="lecun_normal",
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, images):
        x = self.projection(images)
        _, grid_h, grid_w, dim = x.shape
        return ops.reshape(x, (-1, grid_h * grid_w, dim))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        tokens = (height // self.patch_size[0]) * (width // self.patch_size[1])
        return (batch, tokens, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, hidden_dim=self.hidden_dim)
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class ClassToken(keras.layers.Layer):
    """Prepends a learned class token: (B, N, D) -> (B, 1 + N, D). Zero-initialised."""

    def build(self, input_shape):
        self.token = self.add_weight(
            shape=(1, 1, input_shape[-1]), initializer="zeros", name="token"
        )

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        cls = ops.broadcast_to(ops.cast(self.token, tokens.dtype), (batch, 1, tokens.shape[-1]))
        return ops.concatenate([cls, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        batch, tokens, dim = input_shape
        return (batch, None if tokens is None else tokens + 1, dim)


@keras.saving.register_keras_serializable(package="keras_vit")
class RegisterTokens(keras.layers.Layer):
    """Inserts `num_tokens` learned register tokens (Darcet et al., 2024) after the first
    `insert_at` tokens (the class token): (B, N, D) -> (B, N + R, D). They take part in
    attention only: the pooling drops them. Zero-initialised."""

    def __init__(self, num_tokens, insert_at=1, **kwargs):
        super().__init__(**kwargs)
        self.num_tokens, self.insert_at = num_tokens, insert_at

    def build(self, input_shape):
        self.tokens = self.add_weight(
            shape=(1, self.num_tokens, input_shape[-1]), initializer="zeros", name="tokens"
        )

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        registers = ops.broadcast_to(
            ops.cast(self.tokens, tokens.dtype), (batch, self.num_tokens, tokens.shape[-1]))
        head, tail = tokens[:, : self.insert_at], tokens[:, self.insert_at:]
        return ops.concatenate([head, registers, tail], axis=1)

    def compute_output_shape(self, input_shape):
        batch, tokens, dim = input_shape
        return (batch, None if tokens is None else tokens + self.num_tokens, dim)

    def get_config(self):
        config = super().get_config()
        config.update(num_tokens=self.num_tokens, insert_at=self.insert_at)
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class DistillationToken(RegisterTokens):
    """DeiT's learned distillation token, inserted after the class token:
    (B, 1 + N, D) -> (B, 2 + N, D). Its output feeds the distillation head."""

    def __init__(self, **kwargs):
        super().__init__(num_tokens=1, insert_at=1, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["num_tokens"], config["insert_at"]
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding: (B, P + h * w, D) -> same shape.

    The P = `num_prefix_tokens` leading tokens (the class token) have their own positions;
    the other h * w positions form the patch grid `grid_size = (h, w)`, which
    `resample_position_embedding` can stretch to another image size.
    """

    def __init__(self, grid_size, num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens

    def build(self, input_shape):
        length = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        if input_shape[1] is not None and input_shape[1] != length:
            raise ValueError(
                f"PositionEmbedding for a {self.grid_size} grid and {self.num_prefix_tokens} "
                f"prefix tokens expects {length} tokens, got {input_shape[1]}."
            )
        self.embedding = self.add_weight(
            shape=(1, length, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="embedding",
        )

    def call(self, tokens):
        return tokens + ops.cast(self.embedding, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=self.grid_size, num_prefix_tokens=self.num_prefix_tokens)
        return config


def _linear_resize_axis(x, size, axis):
    """Linear interpolation of `x` along `axis` to `size` samples, end points aligned."""
    old = x.shape[axis]
    if old == size:
        return x
    coords = np.linspace(0.0, old - 1, size) if size > 1 else np.zeros(1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, old - 1)
    frac = (coords - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


def _cubic(x, a):
    """Keys' cubic convolution kernel with parameter `a`, at distances `x`."""
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _bicubic_weights(old, new):
    """(new, old) weights of torch's bicubic resize: a = -0.75, pixel centres aligned
    (align_corners=False), the 4 taps clamped to the border."""
    source = (np.arange(new) + 0.5) * (old / new) - 0.5
    base = np.floor(source)
    weights = np.zeros((new, old))
    for tap in (-1, 0, 1, 2):
        index = np.clip(base + tap, 0, old - 1).astype(int)
        np.add.at(weights, (np.arange(new), index), _cubic(source - base - tap, -0.75))
    return weights


def _antialias_bicubic_weights(old, new):
    """(new, old) weights of torch's antialiased bicubic resize (PIL's): a = -0.5, the
    kernel stretched by the downsampling factor (not for upsampling), cut at the border
    and renormalised."""
    scale = old / new
    stretch = max(scale, 1.0)
    centres = (np.arange(new) + 0.5) * scale
    weights = _cubic((np.arange(old) + 0.5 - centres[:, None]) / stretch, -0.5)
    return weights / weights.sum(axis=1, keepdims=True)


_RESAMPLE_WEIGHTS = {"bicubic": _bicubic_weights, "bicubic_antialias": _antialias_bicubic_weights}
RESAMPLE_METHODS = ("bilinear", *_RESAMPLE_WEIGHTS)


def resample_position_embedding(embedding, old_grid, new_grid, num_prefix_tokens=1,
                                method="bilinear"):
    """Resamples a (1, P + h * w, D) position embedding to a new (h', w') patch grid.

    The P prefix (class token) positions are kept as they are; the (h, w, D) patch grid
    is resized per axis in float64, the way the checkpoint's reference does it:

    - "bilinear": corners aligned, as the original vit_jax and big_vision do
      (`scipy.ndimage.zoom(..., order=1)`);
    - "bicubic": `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`,
      as Hugging Face transformers does;
    - "bicubic_antialias": the same with `antialias=True`, as timm and Hugging Face's
      DINOv2 with registers do.

    Returns a (1, P + h' * w', D) array of the input's dtype.
    """
    if method not in RESAMPLE_METHODS:
        raise ValueError(f"Unknown resampling method {method!r}: expected one of "
                         f"{', '.join(map(repr, RESAMPLE_METHODS))}.")
    embedding = np.asarray(embedding)
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    expected = num_prefix_tokens + old_grid[0] * old_grid[1]
    if embedding.ndim != 3 or embedding.shape[1] != expected:
        raise ValueError(
            f"Position embedding of shape {embedding.shape} does not match a {old_grid} "
            f"grid with {num_prefix_tokens} prefix tokens (expected (1, {expected}, D))."
        )
    if old_grid == new_grid:
        return embedding
    prefix = embedding[:, :num_prefix_tokens]
    grid = embedding[0, num_prefix_tokens:].reshape(*old_grid, -1).astype(np.float64)
    if method == "bilinear":
        grid = _linear_resize_axis(grid, new_grid[0], axis=0)
        grid = _linear_resize_axis(grid, new_grid[1], axis=1)
    else:
        rows = _RESAMPLE_WEIGHTS[method](old_grid[0], new_grid[0])
        cols = _RESAMPLE_WEIGHTS[method](old_grid[1], new_grid[1])
        grid = np.einsum("ih,hwd->iwd", rows, grid, optimize=True)
        grid = np.einsum("jw,iwd->ijd", cols, grid, optimize=True)
    grid = grid.reshape(1, new_grid[0] * new_grid[1], -1).astype(embedding.dtype)
    return np.concatenate([prefix, grid], axis=1)


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
    "quick_gelu" (x * sigmoid(1.702 x), OpenAI CLIP); None takes "gelu_tanh" if
    `gelu_approximate` else "gelu".

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
        gelu_approximate=True,
        mlp_activation=None,
        layer_scale_init=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        mlp_activation = mlp_activation or ("gelu_tanh" if gelu_approximate else "gelu")
        if mlp_activation not in MLP_ACTIVATIONS:
            raise ValueError(
                f"mlp_activation must be one of {MLP_ACTIVATIONS}, got {mlp_activation!r}."
            )
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
        self.gelu_approximate = mlp_activation == "gelu_tanh"
        self.mlp_activation = mlp_activation
        self.layer_scale_init = layer_scale_init

        policy = self.dtype_policy
        self.attention_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.attention = ViTAttention(
            num_heads=num_heads,
            key_dim=hidden_dim // num_heads,
            dropout=attention_dropout_rate,
            kernel_initializer=FlatXavierUniform(fan_in=hidden_dim),
            dtype=policy,
            name="attention",
        )
        self.mlp_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="mlp_norm"
        )
        mlp_init = dict(
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            dtype=policy,
        )
        self.mlp_dense_1 = keras.layers.Dense(mlp_dim, name="mlp_dense_1", **mlp_init)
        self.mlp_dense_2 = keras.layers.Dense(hidden_dim, name="mlp_dense_2", **mlp_init)
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=policy)
        self.drop_path = DropPath(drop_path_rate, dtype=policy)

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_dense_1.build(input_shape)
        self.mlp_dense_2.build(tuple(input_shape[:-1]) + (self.mlp_dim,))
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
        y = self.mlp_norm(x)
        y = activation(self.mlp_activation)(self.mlp_dense_1(y))
        y = self.dropout(y, training=training)
        y = self._scaled(self.dropout(self.mlp_dense_2(y), training=training), "mlp_scale")
        x = x + self.drop_path(y, training=training)
        if training and materializes_gradient(x.dtype):
            from keras_vit.backend.jax_gradient import materialized_gradient

            x = materialized_gradient(x)
        return x

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
            gelu_approximate=self.gelu_approximate,
            mlp_activation=self.mlp_activation,
            layer_scale_init=self.layer_scale_init,
        )
        return config
