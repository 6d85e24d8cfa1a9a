"""A shared layer test harness, in the spirit of keras-hub's `TestCase.run_layer_test`.

    from layer_harness import run_layer_test

    run_layer_test(PatchEmbedding, {"patch_size": 4, "hidden_dim": 8}, (2, 8, 8, 3),
                   expected_output_shape=(2, 4, 8))

For a layer class, its init kwargs and an input shape (or a dict of named input shapes,
passed to the layer as keyword arguments, e.g. `{"query": ..., "value": ...}`), it checks:

  shape      the output shape is `expected_output_shape` (if given) and what
             `compute_output_shape` and the symbolic (functional) call say;
  config     `from_config(get_config())` rebuilds the layer: the same config and, with the
             same weights, the same outputs;
  saving     a tiny functional model holding the layer, saved to `.keras` and loaded back,
             gives identical outputs, and the loaded layer is of the same class and config;
  mixed      under the `mixed_bfloat16` dtype policy the layer builds and runs, its
             outputs have the compute dtype (bfloat16), its variables stay float32, and
             its outputs are close to the float32 layer's with the same weights;
  tf.data    `predict` of the functional model on a `tf.data.Dataset` matches calling the
             layer (skipped when TensorFlow is not importable).

Every float variable gets random values first, so zero-initialised weights (a class
token, a zero head) can't hide a round trip that loses them. Returns the names of the
checks that ran. A failed check raises an AssertionError that names it.
"""

import os
import tempfile

import keras
import numpy as np

CHECKS = ("shape", "config", "saving", "mixed", "tf.data")


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


def on_accelerator():
    """Whether the backend in use computes on a GPU or TPU, where float32 matmuls and
    convolutions may round through TF32 (TensorFlow's and cuDNN's default on recent GPUs),
    so a compiled and an eager call of the same layer agree to ~1e-3, not ~1e-6."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    if backend == "torch":
        import torch

        return torch.cuda.is_available() or torch.backends.mps.is_available()
    return False


def float32_tolerance(cpu=1e-5, accelerator=1e-3):
    """The tolerance of float32 results computed two ways on this device."""
    return accelerator if on_accelerator() else cpu


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _random_inputs(input_shape, input_dtype, seed):
    rng = np.random.default_rng(seed)
    if isinstance(input_shape, dict):
        return {
            name: _random_inputs(shape, input_dtype, seed + i)
            for i, (name, shape) in enumerate(input_shape.items())
        }
    return rng.normal(size=input_shape).astype(input_dtype)


def _call(layer, inputs, call_kwargs):
    if isinstance(inputs, dict):
        return layer(**inputs, **call_kwargs)
    return layer(inputs, **call_kwargs)


def _randomize_weights(layer, seed):
    """Random values for every float variable (seed-generator states are left alone)."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        if "float" in keras.backend.standardize_dtype(variable.dtype):
            variable.assign(rng.normal(0.0, 0.2, variable.shape).astype(variable.dtype))


def _functional_model(layer, input_shape, input_dtype, call_kwargs):
    if isinstance(input_shape, dict):
        inputs = {
            name: keras.Input(shape[1:], dtype=input_dtype, name=name)
            for name, shape in input_shape.items()
        }
    else:
        inputs = keras.Input(input_shape[1:], dtype=input_dtype, name="inputs")
    outputs = _call(layer, inputs, call_kwargs)
    return keras.Model(inputs, outputs, name=f"{layer.name}_model")


def _shape(shape):
    return tuple(None if d is None else int(d) for d in shape)


def _fail(check, layer_cls, message):
    raise AssertionError(f"[{check}] {layer_cls.__name__}: {message}")


def _assert_close(check, layer_cls, actual, expected, rtol, atol, what):
    try:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
    except AssertionError as error:
        _fail(check, layer_cls, f"{what}\n{error}")


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    *,
    expected_output_shape=None,
    call_kwargs=None,
    input_dtype="float32",
    seed=0,
    rtol=None,
    atol=None,
    mixed_precision_tolerance=0.05,
    skip=(),
):
    """Runs the CHECKS on `layer_cls(**init_kwargs)`; returns the names of those that ran.

    input_shape: a full shape with the batch axis, e.g. (2, 5, 8), or a dict of them for a
        layer called with several named tensors.
    call_kwargs: extra keyword arguments of every call (e.g. {"training": False}).
    rtol, atol: how close `predict` (compiled) must be to the eager call (default
        `float32_tolerance()`: 1e-5 on a CPU, 1e-3 on an accelerator); the config and
        saving round trips must match exactly.
    mixed_precision_tolerance: the largest bfloat16-vs-float32 output difference allowed,
        relative to the largest float32 output (at least 1).
    skip: names of checks not to run.
    """
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"Unknown checks {sorted(unknown)}; the checks are {CHECKS}.")
    call_kwargs = dict(call_kwargs or {})
    rtol = float32_tolerance() if rtol is None else rtol
    atol = float32_tolerance() if atol is None else atol
    inputs = _random_inputs(input_shape, input_dtype, seed)
    ran = []

    layer = layer_cls(**init_kwargs)
    outputs = _call(layer, inputs, call_kwargs)
    _randomize_weights(layer, seed + 100)
    reference = _numpy(_call(layer, inputs, call_kwargs))

    if "shape" not in skip:
        if expected_output_shape is not None and reference.shape != tuple(expected_output_shape):
            _fail("shape", layer_cls, f"output shape {reference.shape}, expected "
                  f"{tuple(expected_output_shape)}")
        if not isinstance(input_shape, dict):
            computed = _shape(layer.compute_output_shape(input_shape))
            if computed != reference.shape:
                _fail("shape", layer_cls, f"compute_output_shape says {computed}, the output "
                      f"is {reference.shape}")
        symbolic = _functional_model(layer_cls(**init_kwargs), input_shape, input_dtype,
                                     call_kwargs).output.shape
        if _shape(symbolic)[1:] != reference.shape[1:] or symbolic[0] is not None:
            _fail("shape", layer_cls, f"symbolic output shape {_shape(symbolic)}, the output "
                  f"is {reference.shape}")
        ran.append("shape")
    del outputs

    if "config" not in skip:
        config = layer.get_config()
        clone = layer_cls.from_config(config)
        if clone.get_config() != config:
            _fail("config", layer_cls, f"from_config(get_config()) has config "
                  f"{clone.get_config()}, not {config}")
        _call(clone, inputs, call_kwargs)  # builds it
        clone.set_weights(layer.get_weights())
        clone_outputs = _numpy(_call(clone, inputs, call_kwargs))
        if not np.array_equal(clone_outputs, reference):
            _fail("config", layer_cls, "from_config(get_config()) with the same weights gives "
                  f"other outputs (largest difference "
                  f"{np.abs(clone_outputs - reference).max()})")
        ran.append("config")

    model = None
    if "saving" not in skip or "tf.data" not in skip:
        model = _functional_model(layer, input_shape, input_dtype, call_kwargs)
    if "saving" not in skip:
        model_outputs = _numpy(model(inputs))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
        loaded_layer = loaded.get_layer(layer.name)
        if type(loaded_layer) is not layer_cls:
            _fail("saving", layer_cls, f"the loaded model holds a {type(loaded_layer)}")
        if loaded_layer.get_config() != layer.get_config():
            _fail("saving", layer_cls, f"the loaded layer's config is "
                  f"{loaded_layer.get_config()}, not {layer.get_config()}")
        loaded_outputs = _numpy(loaded(inputs))
        if not np.array_equal(loaded_outputs, model_outputs):
            _fail("saving", layer_cls, "the model loaded from .keras gives other outputs "
                  f"(largest difference {np.abs(loaded_outputs - model_outputs).max()})")
        ran.append("saving")

    if "mixed" not in skip:
        mixed = layer_cls(**init_kwargs, dtype="mixed_bfloat16")
        if mixed.compute_dtype != "bfloat16" or mixed.variable_dtype != "float32":
            _fail("mixed", layer_cls, f"dtype='mixed_bfloat16' gives compute dtype "
                  f"{mixed.compute_dtype} and variable dtype {mixed.variable_dtype}")
        _call(mixed, inputs, call_kwargs)  # builds it
        mixed.set_weights(layer.get_weights())
        mixed_outputs = _call(mixed, inputs, call_kwargs)
        dtype = keras.backend.standardize_dtype(mixed_outputs.dtype)
        if dtype != "bfloat16":
            _fail("mixed", layer_cls, f"outputs of dtype {dtype} under mixed_bfloat16")
        floats = [v for v in mixed.weights if "float" in keras.backend.standardize_dtype(v.dtype)]
        wrong = [v.path for v in floats if keras.backend.standardize_dtype(v.dtype) != "float32"]
        if wrong:
            _fail("mixed", layer_cls, f"variables {wrong} are not float32 under mixed_bfloat16")
        mixed_outputs = _numpy(keras.ops.cast(mixed_outputs, "float32"))
        scale = max(1.0, float(np.abs(reference).max()))
        error = float(np.abs(mixed_outputs - reference).max())
        if not error <= mixed_precision_tolerance * scale:
            _fail("mixed", layer_cls, f"bfloat16 outputs are {error:.3g} from the float32 ones "
                  f"(allowed {mixed_precision_tolerance * scale:.3g})")
        ran.append("mixed")

    tf = _tensorflow() if "tf.data" not in skip else None
    if tf is not None:
        batch = len(next(iter(inputs.values())) if isinstance(inputs, dict) else inputs)
        dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(max(1, batch // 2))
        predicted = np.asarray(model.predict(dataset, verbose=0))
        if predicted.shape != reference.shape:
            _fail("tf.data", layer_cls, f"predict on tf.data gives shape {predicted.shape}, "
                  f"calling the layer {reference.shape}")
        _assert_close("tf.data", layer_cls, predicted, reference, rtol, atol,
                      "predict on a tf.data dataset differs from calling the layer")
        ran.append("tf.data")
    return ran
