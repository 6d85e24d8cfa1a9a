"""Multi-head self-attention with a faster fused path for JAX on GPU.

`ViTAttention` is a `keras.layers.MultiHeadAttention` with the very same variables
(query/key/value/output EinsumDense kernels and biases, same names and shapes), so weights
load into it exactly as into the Keras layer. Only how the attention is computed changes:

- "plain": Keras's own path (`ops.dot_product_attention`). On JAX, Keras asks cuDNN for
  flash attention and cuDNN refuses ViT's 197-token sequence, so XLA computes the full
  (B, heads, T, T) score matrix unfused.
- "fast": on JAX (other backends: "plain"), pads the token sequence to a multiple of `pad_multiple` (64 by default)
  with zeros and calls `jax.nn.dot_product_attention` with `key_value_seq_lengths` set to
  the true length, so the padded keys get no weight; the padded query rows are dropped.
  The result equals the plain one up to rounding. cuDNN's fused kernel runs it on GPU
  ("cudnn"); elsewhere XLA does ("xla"), which is how the CPU tests check the padding.
- "fused": on every backend, the query, key and value projections run as one matmul
  against their three kernels concatenated (the variables stay separate); the attention
  itself is the padded cuDNN one where that applies (JAX, GPU, bf16/fp16), else Keras's.
- "auto" (the default): "fast" for training steps on JAX on a GPU when computing in
  bfloat16 or float16 (where cuDNN's kernel applies), else "plain". On one H100 (ViT-B/16,
  batch 128) "fast" trained 1.32x faster than "plain", while for inference (batch 256)
  "plain" was 4 % faster than "fast" (benchmarks/RESULTS.md).

Attention masks, attention dropout in training, gated or windowed attention and returned
scores always take the plain path. The default comes from `set_implementation` or, before it is called,
the environment variable `KERAS_VIT_ATTENTION`; a layer's `implementation` attribute,
when set, overrides it.
"""

import math
import os

import keras
from keras import ops

IMPLEMENTATIONS = ("auto", "plain", "fast", "fused")
_default = {"implementation": os.environ.get("KERAS_VIT_ATTENTION", "auto")}


def _check(implementation):
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"attention implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}."
        )
    return implementation


def set_implementation(implementation):
    """Sets the default implementation of every `ViTAttention` (read when a model is traced)."""
    _default["implementation"] = _check(implementation)


def get_implementation():
    return _check(_default["implementation"])


def set_model_implementation(model, implementation):
    """Sets `implementation` on every `ViTAttention` layer in `model`; returns their number.

    Takes effect the next time the model is traced (a new jitted function, or a model
    compiled afterwards)."""
    _check(implementation)
    count = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, ViTAttention):
            layer.implementation = implementation
            count += 1
    return count


def _keras_mask(tensor):
    """The Keras mask attached to `tensor`, if any (what MultiHeadAttention.call reads)."""
    try:
        from keras.src.backend import get_keras_mask
    except ImportError:  # pragma: no cover - older Keras keeps it as an attribute
        return getattr(tensor, "_keras_mask", None)
    return None if tensor is None else get_keras_mask(tensor)


def _on_jax_gpu():
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.devices()[0].platform == "gpu"


def _cudnn_applies(tensor):
    """Whether cuDNN's fused attention can take `tensor`: JAX on a GPU, bf16 or fp16."""
    return _on_jax_gpu() and keras.backend.standardize_dtype(tensor.dtype) in (
        "bfloat16",
        "float16",
    )


@keras.saving.register_keras_serializable(package="keras_vit")
class ViTAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` for self-attention, with a padded fused JAX path.

    Args:
        implementation: "auto", "plain", "fast" or "fused" (see the module docstring);
            None follows `get_implementation()`.
        pad_multiple: the "fast" path pads the sequence to a multiple of this.
        **kwargs: `keras.layers.MultiHeadAttention`'s arguments.
    """

    def __init__(self, *args, implementation=None, pad_multiple=64, **kwargs):
        super().__init__(*args, **kwargs)
        self.implementation = None if implementation is None else _check(implementation)
        self.pad_multiple = pad_multiple

    def _resolved_implementation(self, training=None):
        impl = self.implementation or get_implementation()
        if impl == "auto":
            bf16 = self.compute_dtype in ("bfloat16", "float16")
            return "fast" if training and bf16 and _on_jax_gpu() else "plain"
        return impl

    def _use_fast(self, impl, training, masks, return_attention_scores, use_causal_mask):
        return (
            (impl == "fused" or (impl == "fast" and keras.backend.backend() == "jax"))
            and all(m is None for m in masks)
            and not return_attention_scores
            and not use_causal_mask
            and not (self._dropout > 0.0 and training)
            and not getattr(self, "_use_gate", False)
            and getattr(self, "_sliding_window", None) is None
        )

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        impl = self._resolved_implementation(training)
        keras_masks = [_keras_mask(t) for t in (query, value, key)]
        masks = [query_mask, value_mask, key_mask, attention_mask, *keras_masks]
        if not self._use_fast(impl, training, masks, return_attention_scores, use_causal_mask):
            return super().call(
                query,
                value,
                key=key,
                query_mask=query_mask,
                value_mask=value_mask,
                key_mask=key_mask,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
                use_causal_mask=use_causal_mask,
            )
        key = value if key is None else key
        if impl == "fused" and query is value and key is value:
            q, k, v = self._fused_projections(query)
        else:
            q, k, v = self._query_dense(query), self._key_dense(key), self._value_dense(value)
        if impl == "fast" or _cudnn_applies(q):
            out = _padded_dot_product_attention(
                q, k, v, scale=self._inverse_sqrt_key_dim, pad_multiple=self.pad_multiple
            )
        else:
            out, _ = self._compute_attention(q, k, v, None, training, False)
        return self._output_dense(out)

    def _fused_projections(self, x):
        """query, key and value from one einsum against the three kernels side by side."""
        dense = (self._query_dense, self._key_dense, self._value_dense)
        if self._query_dense.equation != "abc,cde->abde" or any(
            d.kernel.shape != self._query_dense.kernel.shape for d in dense
        ):
            return tuple(d(x) for d in dense)
        kernel = ops.concatenate([ops.cast(d.kernel, x.dtype) for d in dense], axis=1)
        qkv = ops.einsum("abc,cde->abde", x, kernel)
        if self._use_bias:
            qkv = qkv + ops.concatenate([ops.cast(d.bias, x.dtype) for d in dense], axis=0)
        heads = self._num_heads
        return qkv[:, :, :heads], qkv[:, :, heads : 2 * heads], qkv[:, :, 2 * heads :]

    def get_config(self):
        config = super().get_config()
        config.update(implementation=self.implementation, pad_multiple=self.pad_multiple)
        return config


def _padded_dot_product_attention(query, key, value, scale, pad_multiple):
    """Attention over (B, T, heads, H) tensors with the sequence padded to `pad_multiple`.

    Padded keys are excluded by `key_value_seq_lengths`; padded query rows are cut off.
    JAX only: cuDNN's fused kernel on GPU, XLA elsewhere.
    """
    import jax
    import jax.numpy as jnp

    batch, q_len = query.shape[0], query.shape[1]
    kv_len = key.shape[1]
    multiple = max(int(pad_multiple or 1), 1)
    q_pad = math.ceil(q_len / multiple) * multiple - q_len
    kv_pad = math.ceil(kv_len / multiple) * multiple - kv_len
    if q_pad:
        query = jnp.pad(query, ((0, 0), (0, q_pad), (0, 0), (0, 0)))
    lengths = None
    if kv_pad:
        key = jnp.pad(key, ((0, 0), (0, kv_pad), (0, 0), (0, 0)))
        value = jnp.pad(value, ((0, 0), (0, kv_pad), (0, 0), (0, 0)))
        lengths = jnp.full((batch,), kv_len, dtype="int32")
    out = jax.nn.dot_product_attention(
        query,
        key,
        value,
        scale=float(scale),
        key_value_seq_lengths=lengths,
        implementation="cudnn" if _cudnn_applies(query) else "xla",
    )
    return out[:, :q_len] if q_pad else out
