"""The 2-D position embeddings of the ViT paper's ablation (Table 8) and of big_vision's
plain ViT baseline: `LearnedPositionEmbedding2D` (a learned embedding per patch row and
per patch column, concatenated) and `SinCosPositionEmbedding2D` (fixed sines and cosines
of the patch coordinates). Both add to (B, P + h * w, D) tokens, the P leading prefix
tokens (the class token) first, and give their (h * w, D) patch table as `patch_table()`,
as `keras_vit.tokens.PositionEmbedding` does. `POSITION_LAYERS` maps each
`ViTConfig.position_embedding` kind but "none" to its layer.
"""

import keras
import numpy as np
from keras import ops

from keras_vit.tokens import GridPositionEmbedding, PositionEmbedding


def sincos_2d_table(grid_size, width, temperature=10_000.0):
    """big_vision's `posemb_sincos_2d`: (h * w, width) float32, row-major patches, each
    [sin(x * f), cos(x * f), sin(y * f), cos(y * f)] over width / 4 frequencies
    f = temperature ** -(k / (width / 4 - 1)), x the column and y the row."""
    if width % 4:
        raise ValueError(f"A 2-D sin-cos position embedding needs hidden_dim divisible by 4, "
                         f"got {width}.")
    h, w = grid_size
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    quarter = width // 4
    omega = 1.0 / temperature ** (np.arange(quarter) / max(quarter - 1, 1))
    y = rows.reshape(-1, 1) * omega
    x = cols.reshape(-1, 1) * omega
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype("float32")


class _GridTableEmbedding(GridPositionEmbedding):
    """Adds `patch_table()` to the patches and `_prefix_table()` to the prefix tokens."""

    def call(self, tokens):
        table = ops.cast(self.patch_table(), tokens.dtype)
        if self.num_prefix_tokens:
            table = ops.concatenate([self._prefix_table(table.dtype), table], axis=0)
        return tokens + table[None]


@keras.saving.register_keras_serializable(package="keras_vit")
class LearnedPositionEmbedding2D(_GridTableEmbedding):
    """The ViT paper's 2-D embedding: a learned row embedding (h, D / 2) and column
    embedding (w, D - D / 2), the patch at (i, j) getting [row i, column j]; each prefix
    token has its own learned (D,) position. (B, P + h * w, D) -> same shape."""

    def build(self, input_shape):
        self.check_length(input_shape)
        width = input_shape[-1]
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.row_embedding = self.add_weight(
            shape=(self.grid_size[0], width // 2), initializer=init, name="row_embedding")
        self.column_embedding = self.add_weight(
            shape=(self.grid_size[1], width - width // 2), initializer=init,
            name="column_embedding")
        if self.num_prefix_tokens:
            self.prefix_embedding = self.add_weight(
                shape=(self.num_prefix_tokens, width), initializer=init, name="prefix_embedding")

    def patch_table(self):
        """(h * w, D): [row embedding, column embedding] of each patch, row-major."""
        (h, w), rows, cols = self.grid_size, self.row_embedding, self.column_embedding
        rows = ops.broadcast_to(rows[:, None, :], (h, w, rows.shape[-1]))
        cols = ops.broadcast_to(cols[None, :, :], (h, w, cols.shape[-1]))
        return ops.reshape(ops.concatenate([rows, cols], axis=-1), (h * w, -1))

    def _prefix_table(self, dtype):
        return ops.cast(self.prefix_embedding, dtype)


@keras.saving.register_keras_serializable(package="keras_vit")
class SinCosPositionEmbedding2D(_GridTableEmbedding):
    """Fixed 2-D sin-cos embedding (`sincos_2d_table`), no variables; prefix tokens get
    no position (zeros). (B, P + h * w, D) -> same shape."""

    def build(self, input_shape):
        self.check_length(input_shape)
        self._table = sincos_2d_table(self.grid_size, input_shape[-1])

    def patch_table(self):
        """(h * w, D), a constant."""
        return ops.convert_to_tensor(self._table)

    def _prefix_table(self, dtype):
        return ops.zeros((self.num_prefix_tokens, self._table.shape[-1]), dtype)


POSITION_LAYERS = {"learned": PositionEmbedding, "learned_2d": LearnedPositionEmbedding2D,
                   "sincos_2d": SinCosPositionEmbedding2D}
