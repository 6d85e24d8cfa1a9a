"""The norms: `LayerNormalization` (Keras's layer, able to trace to an integer-friendly
graph), `RMSNormalization`, and `normalization` to make either by name.

It keeps Keras's class name on purpose: a `.keras` file stores the variables of a
functional model's layers under their class name in snake case, so any other name would
leave the models saved before it unable to load (and the other way round).
"""

import keras
from keras import ops

from keras_vit import config


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` (same arguments, variables and saved form),
    (..., D) -> (..., D).

    Under `keras_vit.config.graph_form("tflite")` it computes the same normalisation as
    `c * rsqrt(mean(c * c) + epsilon) * gamma + beta` with `c = x - mean(x)`: products
    where Keras's op uses SQUARED_DIFFERENCE (no XNNPACK integer kernel, so a full-int8
    TFLite file left it to a slow reference kernel) and no outer product of the
    per-token and per-channel factors (which TFLite's GPU delegate refuses). Under
    `("integer")` (and "integer_exp"), `x * s + beta - mean(x) * s` with `s = rsqrt(mean(c * c) + epsilon) *
    gamma`, which loses less in int8. Otherwise it is Keras's layer unchanged.
    """

    def call(self, inputs):
        form = config.get_graph_form()
        if form == "standard" or self.rms_scaling:
            return super().call(inputs)
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.mean(x, axis=self.axis, keepdims=True)
        centred = x - mean
        inverse = ops.rsqrt(ops.mean(centred * centred, axis=self.axis, keepdims=True) + self.epsilon)
        gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = ops.cast(self.beta, x.dtype) if self.center else None
        if form in config.INTEGER_GRAPH_FORMS:
            # x * s + (beta - mean * s), s = inverse * gamma: the inputs themselves are
            # scaled, not their int8 requantized difference from the mean (on a tiny random
            # ViT that step alone doubled the int8 file's largest logit error).
            if gamma is not None:
                inverse = inverse * gamma
            y = x * inverse - mean * inverse
        else:
            y = centred * inverse
            if gamma is not None:
                y = y * gamma
        return y + beta if beta is not None else y


@keras.saving.register_keras_serializable(package="keras_vit")
class RMSNormalization(keras.layers.Layer):
    """RMSNorm (Zhang & Sennrich, 2019) over the last axis, as timm and transformers
    compute it: (..., D) -> (..., D), `x * rsqrt(mean(x * x) + epsilon) * scale`, with a
    learned per-channel `scale` (initialised to ones) and no offset. Half-precision inputs
    are normalised in float32.

    Under `keras_vit.config.graph_form("integer")` (or "integer_exp") the per-token and
    per-channel factors are multiplied first (`x * (inverse * scale)`, as `LayerNormalization` does there);
    otherwise `(x * inverse) * scale` (no outer product, which TFLite's GPU delegate
    refuses). Both square with a product, never SQUARED_DIFFERENCE or POW.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")
        inverse = ops.rsqrt(ops.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
        scale = ops.cast(self.scale, x.dtype)
        if config.get_graph_form() in config.INTEGER_GRAPH_FORMS:
            y = x * (inverse * scale)
        else:
            y = x * inverse * scale
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


NORM_TYPES = ("layer_norm", "rms_norm")


def normalization(norm_type, epsilon, dtype=None, name=None):
    """A new norm layer of `norm_type` ("layer_norm": `LayerNormalization`, variables
    gamma and beta; "rms_norm": `RMSNormalization`, variable scale)."""
    if norm_type not in NORM_TYPES:
        raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}.")
    layer = LayerNormalization if norm_type == "layer_norm" else RMSNormalization
    return layer(epsilon=epsilon, dtype=dtype, name=name)
