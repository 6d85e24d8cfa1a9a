"""`LayerNormalization`: Keras's layer, able to trace to an integer-friendly graph.

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

    Under `keras_vit.config.graph_form("tflite")` or `("integer")` it computes the same
    normalisation as `c * rsqrt(mean(c * c) + epsilon) * gamma + beta` with
    `c = x - mean(x)`: products where Keras's op uses SQUARED_DIFFERENCE (no XNNPACK
    integer kernel: in a full-int8 TFLite file that op alone made each layer norm 17x
    slower) and an outer product of the per-token and per-channel factors (which TFLite's
    GPU delegate refuses). Otherwise it is Keras's layer unchanged.
    """

    def call(self, inputs):
        if config.get_graph_form() == "standard" or self.rms_scaling:
            return super().call(inputs)
        x = ops.cast(inputs, self.compute_dtype)
        centred = x - ops.mean(x, axis=self.axis, keepdims=True)
        variance = ops.mean(centred * centred, axis=self.axis, keepdims=True)
        y = centred * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            y = y * ops.cast(self.gamma, y.dtype)
        if self.center:
            y = y + ops.cast(self.beta, y.dtype)
        return y
