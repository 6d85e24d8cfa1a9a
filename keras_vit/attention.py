"""Multi-head self-attention with faster paths for the CPU and for JAX on a GPU.

`ViTAttention` is a `keras.layers.MultiHeadAttention` with the very same variables
(query/key/value/output EinsumDense kernels and biases, same names and shapes), so weights
load into it exactly as into the Keras layer. Only how the attention is computed changes:

- "plain": Keras's own path (`ops.dot_product_attention` on (B, T, heads, H) tensors). On
  JAX, Keras asks cuDNN for flash attention and cuDNN refuses ViT's 197-token sequence, so
  XLA computes the full (B, heads, T, T) score matrix unfused. On PyTorch it is SDPA.
- "head_major": the query, key and value projections write (B, heads, T, H) directly
  (`einsum("btd,dnh->bnth")`), so the two attention products are plain batched matmuls
  with no transposes around them, and the softmax runs in float32. On our 2-core CPU this
  is the fastest path on JAX and TensorFlow (benchmarks/RESULTS.md); on PyTorch, SDPA
  ("plain") is.
- "fast": on JAX (other backends: "plain"), pads the token sequence to a multiple of
  `pad_multiple` (64 by default) with zeros and calls `jax.nn.dot_product_attention` with
  `key_value_seq_lengths` set to the true length, so the padded keys get no weight; the
  padded query rows are dropped. The result equals the plain one up to rounding. cuDNN's
  fused kernel runs it on GPU ("cudnn"); elsewhere XLA does ("xla"), which is how the CPU
  tests check the padding.
- "auto" (the default): on a JAX GPU, "fast" for training steps computed in bfloat16 or
  float16 (where cuDNN's kernel applies), else "plain"; on a CPU, "head_major" under JAX
  and TensorFlow and "plain" under PyTorch; "plain" anywhere else. On one H100 (ViT-B/16,
  batch 128) "fast" trained 1.32x faster than "plain", while for inference (batch 256)
  "plain" was 4 % faster than "fast" (benchmarks/RESULTS.md).

Attention masks, attention dropout in training, gated or windowed attention, quantized
projections and returned scores always take the plain path. The default comes from
`set_implementation` or, before it is called, the environment variable
`KERAS_VIT_ATTENTION`; a layer's `implementation` attribute, when set, overrides it.
"""

import math
import numbers
import os

import keras
from keras import ops

IMPLEMENTATIONS = ("auto", "plain", "head_major", "fast")
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


def _check_pad_multiple(pad_multiple):
    if (
        isinstance(pad_multiple, bool)
        or not isinstance(pad_multiple, numbers.Integral)
        or pad_multiple < 1
    ):
        raise ValueError(f"pad_multiple must be a positive integer, got {pad_multiple!r}.")
    return int(pad_multiple)


def set_model_implementation(model, implementation, pad_multiple=None):
    """Sets `implementation` (and, unless None, the "fast" path's `pad_multiple`) on every
    `ViTAttention` layer in `model`; returns their number.

    Takes effect the next time the model is traced (a new jitted function, or a model
    compiled afterwards)."""
    _check(implementation)
    if pad_multiple is not None:
        pad_multiple = _check_pad_multiple(pad_multiple)
    count = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, ViTAttention):
            layer.implementation = implementation
            if pad_multiple is not None:
                layer.pad_multiple = pad_multiple
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


def on_cpu():
    """Whether JAX or TensorFlow, the backend in use, computes on the CPU (False on others)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform == "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    return False


def _cudnn_applies(tensor):
    """Whether cuDNN's fused attention can take `tensor`: JAX on a GPU, bf16 or fp16."""
    return _on_jax_gpu() and keras.backend.standardize_dtype(tensor.dtype) in (
        "bfloat16",
        "float16",
    )


@keras.saving.register_keras_serializable(package="keras_vit")
class ViTAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` for self-attention: (B, T, D) -> (B, T, D).

    Args:
        implementation: "auto", "plain", "head_major" or "fast" (see the module docstring);
            None follows `get_implementation()`.
        pad_multiple: the "fast" path pads the sequence to a multiple of this (a positive
            integer; 1 pads nothing).
        **kwargs: `keras.layers.MultiHeadAttention`'s arguments.
    """

    def __init__(self, *args, implementation=None, pad_multiple=64, **kwargs):
        super().__init__(*args, **kwargs)
        self.implementation = None if implementation is None else _check(implementation)
        self.pad_multiple = _check_pad_multiple(pad_multiple)

    def _resolved_implementation(self, training=None):
        impl = self.implementation or get_implementation()
        if impl != "auto":
            return impl
        if _on_jax_gpu():
            bf16 = self.compute_dtype in ("bfloat16", "float16")
            return "fast" if training and bf16 else "plain"
        if on_cpu():
            return "head_major"
        return "plain"

    def _takes_own_path(self, impl, training, masks, return_attention_scores, use_causal_mask):
        dense = (self._query_dense, self._key_dense, self._value_dense, self._output_dense)
        return (
            (impl == "head_major" or (impl == "fast" and keras.backend.backend() == "jax"))
            and all(m is None for m in masks)
            and not return_attention_scores
            and not use_causal_mask
            and not (self._dropout > 0.0 and training)
            and not getattr(self, "_use_gate", False)
            and getattr(self, "_sliding_window", None) is None
            and all(d.quantization_mode is None for d in dense)
            and all(d.equation == "abc,cde->abde" for d in dense[:3])
            and self._output_dense.equation == "abcd,cde->abe"
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
        if not self._takes_own_path(
            impl, training, masks, return_attention_scores, use_causal_mask
        ):
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
        if impl == "head_major":
            return self._head_major_attention(query, key, value)
        q, k, v = self._query_dense(query), self._key_dense(key), self._value_dense(value)
        out = _padded_dot_product_attention(
            q, k, v, scale=self._inverse_sqrt_key_dim, pad_multiple=self.pad_multiple
        )
        return self._output_dense(out)

    def _head_major_attention(self, query, key, value):
        """(B, T, D) inputs -> (B, T, D), with q, k, v projected to (B, heads, T, H)."""

        def project(dense, x):
            y = ops.einsum("btd,dnh->bnth", x, ops.cast(dense.kernel, x.dtype))
            if self._use_bias:
                y = y + ops.cast(dense.bias, x.dtype)[:, None, :]
            return y

        q = project(self._query_dense, query)
        k = project(self._key_dense, key)
        v = project(self._value_dense, value)
        q = q * ops.cast(self._inverse_sqrt_key_dim, q.dtype)
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2))
        probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), v.dtype)
        out = ops.matmul(probs, v)
        out = ops.einsum("bnth,nhd->btd", out, ops.cast(self._output_dense.kernel, out.dtype))
        if self._use_bias:
            out = out + ops.cast(self._output_dense.bias, out.dtype)
        return out

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
    q_pad = math.ceil(q_len / pad_multiple) * pad_multiple - q_len
    kv_pad = math.ceil(kv_len / pad_multiple) * pad_multiple - kv_len
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
