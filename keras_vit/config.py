"""keras_vit's runtime switches and the device probes they consult, in one place.

Each switch has a setter, a getter, a context manager that restores the previous value on
leaving (also on an exception), and an environment variable read when keras_vit is
imported; a bad value raises a ValueError naming the valid ones (from the environment: when
the switch is first read). The switches are read when a model is traced, so set them
before building the jitted function or compiling the model.

- attention implementation, the default of every `keras_vit.attention.ViTAttention`
  whose own `implementation` is None: `set_attention_implementation`,
  `get_attention_implementation`, `with attention_implementation(...)`,
  `KERAS_VIT_ATTENTION`. For one model's layers (and the "fast" path's `pad_multiple`,
  a per-layer setting, 64 by default): `keras_vit.attention.set_model_implementation`.
- gradient materialization, in JAX training: `set_gradient_materialization`,
  `get_gradient_materialization`, `with gradient_materialization(...)`,
  `KERAS_VIT_MATERIALIZE_GRADIENT`.
- graph form, what a traced graph is made of: `set_graph_form`, `get_graph_form`,
  `with graph_form(...)`, `KERAS_VIT_GRAPH_FORM`. "standard" (the default); "tflite":
  layer norm as plain products (no SQUARED_DIFFERENCE, no outer-product MUL), which
  XNNPACK and TFLite's GPU delegate take whole; "integer": that, and attention one head at
  a time for a batch of one, which XNNPACK runs in int8; "integer_exp": that, with each
  head's attention as `(exp(s - rowmax(s)) @ v) / rowsum(exp(s - rowmax(s)))` instead of
  `softmax(s) @ v` (the unnormalised weights peak at exactly 1 in every row, so one int8
  scale fits them all). The TFLite export traces float files under "tflite", "matmul_int8"
  under "integer_exp" and the other int8 ones under "integer".
"""

import contextlib
import numbers
import os

import keras

ATTENTION_IMPLEMENTATIONS = ("auto", "plain", "head_major", "fast")
GRADIENT_MATERIALIZATIONS = ("auto", "on", "off")
GRAPH_FORMS = ("standard", "tflite", "integer", "integer_exp")
# The forms that compute attention one head at a time (and layer norm for int8).
INTEGER_GRAPH_FORMS = ("integer", "integer_exp")

_ATTENTION = "attention implementation"
_GRADIENT = "gradient materialization"
_GRAPH = "graph form"
_CHOICES = {
    _ATTENTION: ATTENTION_IMPLEMENTATIONS,
    _GRADIENT: GRADIENT_MATERIALIZATIONS,
    _GRAPH: GRAPH_FORMS,
}
_values = {
    _ATTENTION: os.environ.get("KERAS_VIT_ATTENTION", "auto"),
    _GRADIENT: os.environ.get("KERAS_VIT_MATERIALIZE_GRADIENT", "auto"),
    _GRAPH: os.environ.get("KERAS_VIT_GRAPH_FORM", "standard"),
}


def _check(switch, value):
    if value not in _CHOICES[switch]:
        raise ValueError(f"{switch} must be one of {_CHOICES[switch]}, got {value!r}.")
    return value


def _set(switch, value):
    _values[switch] = _check(switch, value)


@contextlib.contextmanager
def _scoped(switch, value):
    previous = _values[switch]
    _set(switch, value)
    try:
        yield
    finally:
        _values[switch] = previous


def check_attention_implementation(implementation):
    """`implementation` if it is one of `ATTENTION_IMPLEMENTATIONS`, else a ValueError."""
    return _check(_ATTENTION, implementation)


def set_attention_implementation(implementation):
    """Sets the default implementation of every `ViTAttention` ("auto", "plain",
    "head_major" or "fast": see keras_vit.attention)."""
    _set(_ATTENTION, implementation)


def get_attention_implementation():
    return _check(_ATTENTION, _values[_ATTENTION])


def attention_implementation(implementation):
    """Context manager (or decorator): `set_attention_implementation(implementation)`
    inside the block."""
    return _scoped(_ATTENTION, implementation)


def check_pad_multiple(pad_multiple):
    """`pad_multiple` as an int if it is a positive integer, else a ValueError."""
    if (
        isinstance(pad_multiple, bool)
        or not isinstance(pad_multiple, numbers.Integral)
        or pad_multiple < 1
    ):
        raise ValueError(f"pad_multiple must be a positive integer, got {pad_multiple!r}.")
    return int(pad_multiple)


def set_gradient_materialization(mode):
    """Where `TransformerEncoderBlock` materialises its output gradient in JAX training.

    "auto" (the default): on a CPU. "on": also on an accelerator when the block computes in
    bfloat16 or float16, where the identity matmul is exact (in float32 a GPU may round it
    to TF32, so never there). "off": never. Other backends never materialise.
    """
    _set(_GRADIENT, mode)


def get_gradient_materialization():
    return _check(_GRADIENT, _values[_GRADIENT])


def gradient_materialization(mode):
    """Context manager (or decorator): `set_gradient_materialization(mode)` inside the
    block."""
    return _scoped(_GRADIENT, mode)


def set_graph_form(form):
    """What traced graphs are made of: "standard", "tflite", "integer" or "integer_exp"
    (see the module docstring). Each computes the same function."""
    _set(_GRAPH, form)


def get_graph_form():
    return _check(_GRAPH, _values[_GRAPH])


def graph_form(form):
    """Context manager (or decorator): `set_graph_form(form)` inside the block."""
    return _scoped(_GRAPH, form)


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


def on_jax_gpu():
    """Whether the backend is JAX and computes on a GPU."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.devices()[0].platform == "gpu"


def in_tf_distribution_strategy():
    """Whether the backend is TensorFlow and a tf.distribute strategy other than the
    default one is in scope."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()
