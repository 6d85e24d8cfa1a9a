"""The token sequence before the encoder: patches to tokens, the learned class, register
and distillation tokens, and the learned position embedding. Shapes use B = batch,
N = number of tokens, D = hidden size."""

import keras
from keras import ops

from keras_vit.norm import normalization


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchEmbedding(keras.layers.Layer):
    """Cuts images into non-overlapping patches and projects each to a token.

    (B, H, W, C) -> (B, (H // ph) * (W // pw), D), using a Conv2D whose kernel and stride
    are the patch size `(ph, pw)` (an int for square patches), VALID padding, as the
    original ViT does. `use_bias=False`: a projection without bias (CLIP, AIMv2's
    original); `norm_type` ("layer_norm" or "rms_norm", epsilon `norm_epsilon`): a norm
    "norm" on the tokens (timm's `embed_norm_layer`, AIMv2); None: none.
    """

    def __init__(self, patch_size, hidden_dim, use_bias=True, norm_type=None, norm_epsilon=1e-6,
                 **kwargs):
        super().__init__(**kwargs)
        self.patch_size = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)
        self.hidden_dim = hidden_dim
        self.use_bias, self.norm_type, self.norm_epsilon = use_bias, norm_type, norm_epsilon
        self.projection = keras.layers.Conv2D(
            hidden_dim,
            kernel_size=patch_size,
            strides=patch_size,
            padding="valid",
            kernel_initializer="lecun_normal",
            use_bias=use_bias,
            dtype=self.dtype_policy,
            name="projection",
        )
        self.norm = None if norm_type is None else normalization(
            norm_type, norm_epsilon, dtype=self.dtype_policy, name="norm")

    def build(self, input_shape):
        self.projection.build(input_shape)
        if self.norm is not None:
            self.norm.build(self.compute_output_shape(input_shape))

    def call(self, images):
        x = self.projection(images)
        _, grid_h, grid_w, dim = x.shape
        x = ops.reshape(x, (-1, grid_h * grid_w, dim))
        return x if self.norm is None else self.norm(x)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        tokens = (height // self.patch_size[0]) * (width // self.patch_size[1])
        return (batch, tokens, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, hidden_dim=self.hidden_dim,
                      use_bias=self.use_bias, norm_type=self.norm_type,
                      norm_epsilon=self.norm_epsilon)
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


class GridPositionEmbedding(keras.layers.Layer):
    """What every absolute position embedding shares: the patch grid `grid_size = (h, w)`,
    the P = `num_prefix_tokens` leading tokens (the class token) with their own positions,
    the check of the token count and the config. Subclasses add to (B, P + h * w, D)
    tokens and give their (h * w, D) patch table as `patch_table()`."""

    def __init__(self, grid_size, num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens

    def check_length(self, input_shape):
        """Raises unless `input_shape` has P + h * w tokens (or an unknown count)."""
        length = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        if input_shape[1] is not None and input_shape[1] != length:
            raise ValueError(
                f"{type(self).__name__} for a {self.grid_size} grid and "
                f"{self.num_prefix_tokens} prefix tokens expects {length} tokens, got "
                f"{input_shape[1]}.")
        return length

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=self.grid_size, num_prefix_tokens=self.num_prefix_tokens)
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class PositionEmbedding(GridPositionEmbedding):
    """Adds a learned position embedding: (B, P + h * w, D) -> same shape.

    The P = `num_prefix_tokens` leading tokens (the class token) have their own positions;
    the other h * w positions form the patch grid `grid_size = (h, w)`, which
    `resample_position_embedding` can stretch to another image size.
    """

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=(1, self.check_length(input_shape), input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="embedding",
        )

    def call(self, tokens):
        return tokens + ops.cast(self.embedding, tokens.dtype)

    def patch_table(self):
        """(h * w, D): the patches' rows of the embedding."""
        return self.embedding[0, self.num_prefix_tokens:]
