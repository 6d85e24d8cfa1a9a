"""The "fast" attention path of `keras_vit.attention.ViTAttention`: JAX only."""

import math

import jax
import jax.numpy as jnp
import keras

from keras_vit import config


def padded_dot_product_attention(query, key, value, scale, pad_multiple):
    """Attention over (B, T, heads, H) tensors with the sequence padded to `pad_multiple`.

    Padded keys are excluded by `key_value_seq_lengths`; padded query rows are cut off.
    cuDNN's fused kernel runs it on a GPU in bfloat16 or float16, XLA elsewhere.
    """
    batch, q_len = query.shape[0], query.shape[1]
    kv_len = key.shape[1]
    q_pad = math.ceil(q_len / pad_multiple) * pad_multiple - q_len
    kv_pad = math.ceil(kv_len / pad_multiple) * pad_multiple - kv_len
    if q_pad:
        query = jnp.pad(query, ((0, 0), (0, q_pad), (0, 0), (0, 0)))
    lengths = None
    if kv_pad:
        key = jnp.pad(key, ((0, 0), (0, kv_pad), (0, 0), (0, 0)))
        value = jnp.pad(value, ((0, 0), (0, kv_pad), (0, 0), (0, 0)))
        lengths = jnp.full((batch,), kv_len, dtype="int32")
    cudnn = config.on_jax_gpu() and keras.backend.standardize_dtype(query.dtype) in (
        "bfloat16",
        "float16",
    )
    out = jax.nn.dot_product_attention(
        query,
        key,
        value,
        scale=float(scale),
        key_value_seq_lengths=lengths,
        implementation="cudnn" if cudnn else "xla",
    )
    return out[:, :q_len] if q_pad else out
