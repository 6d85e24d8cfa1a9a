"""What several layer modules share: the MLP activations and the attention projections'
initializer. A leaf module (it imports no other keras_vit module)."""

import math

import keras
from keras import ops

MLP_ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu")
MLP_TYPES = ("mlp", "swiglu")  # the blocks' MLP forms (see TransformerEncoderBlock)


def check_mlp_activation(name):
    """`name` if it is one of MLP_ACTIVATIONS, else a ValueError."""
    if name not in MLP_ACTIVATIONS:
        raise ValueError(f"mlp_activation must be one of {MLP_ACTIVATIONS}, got {name!r}.")
    return name


def activation(name):
    """The MLP activation `name` (one of MLP_ACTIVATIONS) as a function of a tensor:
    "gelu" exact (erf), "gelu_tanh" its tanh approximation, "quick_gelu"
    x * sigmoid(1.702 x) (OpenAI CLIP)."""
    if check_mlp_activation(name) == "quick_gelu":
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
