"""Multi-head self-attention with faster paths for the CPU and for JAX on a GPU.

`ViTAttention` is a `keras.layers.MultiHeadAttention` with the very same variables
(query/key/value/output EinsumDense kernels and biases, same names and shapes), so weights
load into it exactly as into the Keras layer. Only how the attention is computed changes:

- "plain": Keras's own path (`ops.dot_product_attention` on (B, T, heads, H) tensors). On
  JAX, Keras asks cuDNN for flash attention and cuDNN refuses ViT's 197-token sequence, so
  XLA computes the full (B, heads, T, T) score matrix unfused. On PyTorch it is SDPA.
- "head_major": the query, key and value projections write (B, heads, T, H) directly
  (`einsum("btd,dnh->bnth")`), so the two attention products are plain batched matmuls
  with no transposes around them, and the softmax runs in float32. On a CPU this is the
  fastest path on JAX and TensorFlow; on PyTorch, SDPA ("plain") is (docs/speed.md).
- "fast": on JAX (other backends: "plain"), pads the token sequence to a multiple of
  `pad_multiple` (64 by default) with zeros and calls `jax.nn.dot_product_attention` with
  `key_value_seq_lengths` set to the true length, so the padded keys get no weight; the
  padded query rows are dropped. The result equals the plain one up to rounding. cuDNN's
  fused kernel runs it on GPU ("cudnn"); elsewhere XLA does ("xla"), which is how the CPU
  tests check the padding.
- "auto" (the default): on a JAX GPU, "fast" for training steps computed in bfloat16 or
  float16 (where cuDNN's kernel applies), else "plain"; on a CPU, "head_major" under JAX
  and TensorFlow and "plain" under PyTorch; "plain" anywhere else: on a GPU "fast" trains
  faster than "plain" and "plain" predicts faster (measured in docs/speed.md).

Under `keras_vit.config.graph_form("integer")`, a batch of one (static) is computed one
head at a time whatever the implementation: TFLite turns the per-head projections into
FULLY_CONNECTED ops and the two attention products into unbatched BATCH_MATMUL ops, which
XNNPACK runs in int8 (once `keras_vit.export.tflite_graph` has given their right-hand
operands zero point 0); the batched 4-D int8 BATCH_MATMUL runs in TFLite's slow reference
kernel (in a full-int8 ViT-S/16 it took ~60 % of the time). The calibrated int8 TFLite
exports trace the model that way. Under `graph_form("integer_exp")` each head computes
`(exp(s - rowmax(s)) @ v) / rowsum(exp(s - rowmax(s)))` instead of `softmax(s) @ v`: the
same function, whose weights peak at exactly 1 in every row, so that one int8 scale fits
every row and the product with the values stays int8 ("matmul_int8").

Attention masks, attention dropout in training, gated or windowed attention, quantized
projections and returned scores always take the plain path. The default implementation is
a switch of `keras_vit.config` (`set_attention_implementation`, `attention_implementation`,
the environment variable `KERAS_VIT_ATTENTION`); a layer's `implementation` attribute, when
set, overrides it, and `set_model_implementation` sets it on every attention layer of a model.

With `rope` (the options of `keras_vit.rope.rope_options`), the query and key are rotated
after their projections on every path (`keras_vit.rope`); the plain path is then this
layer's own (`ops.dot_product_attention` on the rotated (B, T, heads, H) tensors, or the
explicit softmax where scores are returned or dropped out), as Keras's has no place for it,
and attention masks are refused.
"""

import math

import keras
from keras import ops

from keras_vit import config
from keras_vit import rope as vit_rope
from keras_vit.backend import private_apis


@keras.saving.register_keras_serializable(package="keras_vit")
class ViTAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` for self-attention: (B, T, D) -> (B, T, D).

    Args:
        implementation: "auto", "plain", "head_major" or "fast" (see the module docstring);
            None follows `keras_vit.config.get_attention_implementation()`.
        pad_multiple: the "fast" path pads the sequence to a multiple of this (a positive
            integer; 1 pads nothing).
        rope: None, or the 2-D rotary position embedding's options
            (`keras_vit.rope.rope_options`) for a self-attention over that many tokens.
        query_bias, key_bias, value_bias, output_bias: False builds that projection
            without a bias (`use_bias=False` turns all four off).
        **kwargs: `keras.layers.MultiHeadAttention`'s arguments.
    """

    def __init__(self, *args, implementation=None, pad_multiple=64, rope=None, query_bias=True,
                 key_bias=True, value_bias=True, output_bias=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.biases = {"query": query_bias, "key": key_bias, "value": value_bias,
                       "attention_output": output_bias}
        if not all(isinstance(flag, bool) for flag in self.biases.values()):
            raise ValueError(f"The projection biases must be True or False, got {self.biases}.")
        self.rope = None if rope is None else dict(rope)
        if rope is not None:
            self.rope_cos, self.rope_sin = vit_rope.rope_tables(self.rope, self.key_dim)
            self.rope_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        if implementation is not None:
            config.check_attention_implementation(implementation)
        self.implementation = implementation
        self.pad_multiple = config.check_pad_multiple(pad_multiple)
        # MultiHeadAttention has no properties for these: its config holds them.
        options = super().get_config()
        self._gated_or_windowed = bool(options.get("use_gate")) or (
            options.get("sliding_window") is not None
        )

    def build(self, query_shape, value_shape, key_shape=None):
        """`MultiHeadAttention.build`; for (B, T, D) inputs with some projection bias off,
        the same EinsumDense layers (names, equations, creation order) without those biases."""
        if not self._use_bias or all(self.biases.values()):
            return super().build(query_shape, value_shape, key_shape)
        key_shape = value_shape if key_shape is None else key_shape
        if len(query_shape) != 3 or len(value_shape) != 3 or self._gated_or_windowed or (
                self._output_shape):
            raise ValueError("ViTAttention without some projection biases takes (B, T, D) "
                             "inputs and no gate, window or output_shape.")

        def projection(name, equation, output_shape, bias_axes, input_shape):
            dense = keras.layers.EinsumDense(
                equation, output_shape=output_shape,
                bias_axes=bias_axes if self.biases[name] else None, name=name,
                **self._get_common_kwargs_for_sublayer())
            dense.build(input_shape)
            return dense

        heads, key_dim, value_dim = self._num_heads, self._key_dim, self._value_dim
        self._query_dense = projection(
            "query", "abc,cde->abde", (None, heads, key_dim), "de", query_shape)
        self._key_dense = projection(
            "key", "abc,cde->abde", (None, heads, key_dim), "de", key_shape)
        self._value_dense = projection(
            "value", "abc,cde->abde", (None, heads, value_dim), "de", value_shape)
        self._build_attention(4)
        self._output_dense = projection(
            "attention_output", "abcd,cde->abe", (None, query_shape[-1]), "e",
            (query_shape[0], query_shape[1], heads, value_dim))

    def resolved_implementation(self, training=None):
        """The path a call with this `training` flag takes: "plain", "head_major" or "fast"
        ("auto" resolved on this device and dtype; masks and the like may still force the
        plain path)."""
        impl = self.implementation or config.get_attention_implementation()
        if impl != "auto":
            return impl
        if config.on_jax_gpu():
            bf16 = self.compute_dtype in ("bfloat16", "float16")
            return "fast" if training and bf16 else "plain"
        if config.on_cpu():
            return "head_major"
        return "plain"

    def _takes_own_path(self, impl, training, masks, return_attention_scores, use_causal_mask):
        dense = (self.query_dense, self.key_dense, self.value_dense, self.output_dense)
        return (
            (impl == "head_major" or (impl == "fast" and keras.backend.backend() == "jax"))
            and all(m is None for m in masks)
            and not return_attention_scores
            and not use_causal_mask
            and not (self.dropout > 0.0 and training)
            and not self._gated_or_windowed
            and all(d.quantization_mode is None for d in dense)
            and all(d.equation == "abc,cde->abde" for d in dense[:3])
            and self.output_dense.equation == "abcd,cde->abe"
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
        impl = self.resolved_implementation(training)
        if config.get_graph_form() in config.INTEGER_GRAPH_FORMS:
            impl = "head_major"  # the own path's conditions, then one head at a time
        keras_masks = [private_apis.keras_mask(t) for t in (query, value, key)]
        masks = [query_mask, value_mask, key_mask, attention_mask, *keras_masks]
        own_path = self._takes_own_path(
            impl, training, masks, return_attention_scores, use_causal_mask
        )
        if self.rope is not None and not own_path:
            if any(m is not None for m in masks) or use_causal_mask:
                raise ValueError("ViTAttention with rope takes no attention masks.")
            return self._rope_attention(query, value if key is None else key, value,
                                        training, return_attention_scores)
        if not own_path:
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
        if (config.get_graph_form() in config.INTEGER_GRAPH_FORMS and query.shape[0] == 1
                and key.shape[0] == 1):
            return self._per_head_attention(query, key, value)
        if impl == "head_major":
            return self._head_major_attention(query, key, value)
        from keras_vit.backend.jax_attention import padded_dot_product_attention

        q, k = self.rotate_query_key(self.query_dense(query), self.key_dense(key), heads_axis=True)
        v = self.value_dense(value)
        out = padded_dot_product_attention(
            q, k, v, scale=1.0 / math.sqrt(self.key_dim), pad_multiple=self.pad_multiple
        )
        return self.output_dense(out)

    def _head_major_attention(self, query, key, value):
        """(B, T, D) inputs -> (B, T, D), with q, k, v projected to (B, heads, T, H)."""

        def project(dense, x):
            y = ops.einsum("btd,dnh->bnth", x, ops.cast(dense.kernel, x.dtype))
            if dense.bias is not None:
                y = y + ops.cast(dense.bias, x.dtype)[:, None, :]
            return y

        q, k = self.rotate_query_key(project(self.query_dense, query), project(self.key_dense, key))
        v = project(self.value_dense, value)
        q = q * ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype)
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2))
        probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), v.dtype)
        out = ops.matmul(probs, v)
        out = ops.einsum("bnth,nhd->btd", out, ops.cast(self.output_dense.kernel, out.dtype))
        if self.output_dense.bias is not None:
            out = out + ops.cast(self.output_dense.bias, out.dtype)
        return out

    def _per_head_attention(self, query, key, value):
        """(1, T, D) query and (1, S, D) key and value -> (1, T, D), one head at a time on
        2-D tensors, each head projected by its own slice of the kernels (the query scaled
        through its kernel and bias); under "integer_exp", softmax(s) @ v as
        (exp(s - rowmax(s)) @ v) / rowsum(exp(s - rowmax(s)))."""
        q_tokens, k_tokens, v_tokens = (ops.reshape(x, tuple(x.shape[1:])) for x in (query, key, value))

        def project(dense, tokens, head, factor=1.0):
            y = ops.matmul(tokens, ops.cast(dense.kernel[:, head, :], tokens.dtype) * factor)
            if dense.bias is not None:
                y = y + ops.cast(dense.bias[head], y.dtype) * factor
            return y

        scale = 1.0 / math.sqrt(self.key_dim)
        unnormalised = config.get_graph_form() == "integer_exp"
        heads = []
        for head in range(self.num_heads):
            q, k = self.rotate_query_key(project(self.query_dense, q_tokens, head, scale),
                                         project(self.key_dense, k_tokens, head))
            v = project(self.value_dense, v_tokens, head)
            # (1, T, H) x (1, H, S): a matmul TFLite keeps as BATCH_MATMUL (in 2-D it
            # becomes a FULLY_CONNECTED with computed weights, which XNNPACK leaves out).
            q, k = (ops.reshape(t, (1,) + tuple(t.shape)) for t in (q, k))  # a RESHAPE op
            scores = ops.matmul(q, ops.swapaxes(k, -1, -2))
            scores = ops.reshape(scores, scores.shape[1:])
            if unnormalised:  # each row's weights peak at 1; divided by their sum after
                weights = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
                total = ops.sum(weights, axis=-1, keepdims=True)  # (T, 1)
                heads.append(ops.matmul(weights, v) / total)
            else:
                heads.append(ops.matmul(ops.softmax(scores, axis=-1), v))
        out = ops.concatenate(heads, axis=-1)  # (T, heads * H)
        kernel = ops.cast(self.output_dense.kernel, out.dtype)
        out = ops.matmul(out, ops.reshape(kernel, (-1, kernel.shape[-1])))
        if self.output_dense.bias is not None:
            out = out + ops.cast(self.output_dense.bias, out.dtype)
        return ops.reshape(out, (1,) + tuple(out.shape))

    def rotate_query_key(self, q, k, heads_axis=False):
        """q and k (..., T, H), or (B, T, heads, H) with `heads_axis`, rotated by the RoPE
        tables (unchanged without rope)."""
        if self.rope is None:
            return q, k
        cos, sin = self.rope_cos, self.rope_sin
        if heads_axis:
            cos, sin = cos[:, None], sin[:, None]
        half = self.rope["rotate_half"]
        return vit_rope.rotate(q, cos, sin, half), vit_rope.rotate(k, cos, sin, half)

    def _rope_attention(self, query, key, value, training, return_attention_scores):
        """The plain path with rope: (B, T, D) -> (B, T, D) (and the (B, heads, T, T)
        scores with `return_attention_scores`)."""
        q, k = self.rotate_query_key(self.query_dense(query), self.key_dense(key), heads_axis=True)
        v = self.value_dense(value)
        scale = 1.0 / math.sqrt(self.key_dim)
        if not return_attention_scores and not (self.dropout > 0.0 and training):
            return self.output_dense(ops.dot_product_attention(q, k, v, scale=scale))
        scores = ops.einsum("btnh,bsnh->bnts", q * ops.cast(scale, q.dtype), k)
        probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), v.dtype)
        dropped = self.rope_dropout(probs, training=training)
        out = self.output_dense(ops.einsum("bnts,bsnh->btnh", dropped, v))
        return (out, probs) if return_attention_scores else out

    def get_config(self):
        return {
            **super().get_config(),
            "implementation": self.implementation,
            "pad_multiple": self.pad_multiple,
            "rope": self.rope,
            **{("output" if name == "attention_output" else name) + "_bias": flag
               for name, flag in self.biases.items()},
        }


def set_model_implementation(model, implementation, pad_multiple=None):
    """Sets `implementation` (and, unless None, the "fast" path's `pad_multiple`) on every
    `ViTAttention` layer in `model`; returns their number.

    Takes effect the next time the model is traced (a new jitted function, or a model
    compiled afterwards)."""
    config.check_attention_implementation(implementation)
    if pad_multiple is not None:
        pad_multiple = config.check_pad_multiple(pad_multiple)
    count = 0
    for layer in private_apis.flatten_layers(model):
        if isinstance(layer, ViTAttention):
            layer.implementation = implementation
            if pad_multiple is not None:
                layer.pad_multiple = pad_multiple
            count += 1
    return count
