"""Keras-native weight quantization of a ViT (`model.quantize`) that saves and loads.

`quantize(model, "int8")` (what `ViT.quantize` calls) is `keras.Model.quantize` for the
modes in MODES, on every backend: the Dense and EinsumDense layers (the attention
projections, the MLPs, the head) get quantized weights; the patch embedding's Conv2D, the
LayerNorms and the embeddings stay float.

    "int8"    int8 weights with one scale per output channel; the inputs are quantized to
              int8 per token on the fly (`keras.quantizers.Int8QuantizationConfig`; pass
              `activation_quantizer=None` for weight-only int8).
    "int4"    int4 weights (two per byte), weight-only, in groups of 128 inputs with a
              zero point (`keras.quantizers.Int4QuantizationConfig(block_size=-1)` for one
              scale per output channel).
    "float8"  float8 (e4m3) weights and inputs with delayed scaling, as for float8 training.

Keras rebuilds a loaded model's layers from their configs, but a ViT rebuilds its blocks
and their sublayers from its own constructor arguments, so Keras alone would give a loaded
quantized ViT float variables where the file has quantized ones (and fail to load it).
`quantized_layers` is what the ViT's config records of its quantized layers (their paths,
dtype policies and quantization configs) and `restore` quantizes those layers of a freshly
built ViT the same way, before Keras reads the variables. That covers a ViT inside another
model too, but not a quantized keras_vit layer (a `TransformerEncoderBlock`, a
`ViTAttention`) in a model of your own: its sublayers are rebuilt in float, as those of
Keras 3.15's own `keras.layers.MultiHeadAttention` are (tests/test_quantization.py keeps a
canary on it).

Export (`keras_vit.export`) converts `dequantized(model)`, a float copy holding the values
the quantized weights stand for; the file's own quantization is the export's mode.
"""

import json
import warnings

import keras
import numpy as np

from keras_vit.backend.private_apis import flatten_layers

MODES = ("int8", "int4", "float8")

# Keras warns once per layer it cannot quantize (LayerNorm, Dropout, ...): noise for a ViT.
_NOT_QUANTIZABLE_WARNING = r"Layer .* does not have a `quantize` method implemented"


def check_mode(mode, config=None):
    """The quantization mode that `config` (a `keras.quantizers.QuantizationConfig`), else
    `mode`, asks for, if one of MODES; else ValueError. (Keras checks the rest: a mode it
    does not know, a config that contradicts `mode`.)"""
    if isinstance(config, keras.quantizers.QuantizationConfig):
        mode = config.mode
    if mode not in MODES:
        raise ValueError(
            f"Unsupported quantization mode {mode!r} for a keras_vit model: expected one of "
            f"{', '.join(map(repr, MODES))} (GPTQ and AWQ need a calibration layer structure "
            "that keras_vit does not provide).")
    return mode


def quantize(model, mode=None, config=None, filters=None):
    """Quantizes `model`'s weights in place with `keras.Model.quantize`.

    Args:
        model: a built `keras.Model` (a ViT is built when constructed or loaded).
        mode: one of MODES ("int8", "int4", "float8"); may be None with `config`.
        config: optional `keras.quantizers.QuantizationConfig` (e.g.
            `Int4QuantizationConfig(block_size=-1)`), of the same mode.
        filters: Keras's `filters`: a regex, a list of them or a callable picking the
            layers to quantize (by default all Dense and EinsumDense layers).
    """
    check_mode(mode, config)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOT_QUANTIZABLE_WARNING)
        keras.Model.quantize(model, mode, config=config, filters=filters)


def config_entry(model):
    """The `quantized_layers` entry of a quantized model's config (see `quantized_layers`);
    {} for a float model, whose config stays as it was."""
    quantized = quantized_layers(model)
    return {"quantized_layers": quantized} if quantized else {}


def from_config(cls, config):
    """`cls.from_config(config)` for a model class whose constructor takes `config` less its
    `quantized_layers` entry, which `restore` applies to the new model."""
    config = dict(config)
    quantized = config.pop("quantized_layers", None)
    model = cls(**config)
    restore(model, quantized)
    return model


def quantized_layers(model):
    """{layer path: {"dtype", "quantization_config"}} (serialized) for each quantized layer
    of `model`; empty for a float model."""
    return {
        layer.path: {
            "dtype": keras.dtype_policies.serialize(layer.dtype_policy),
            "quantization_config": keras.saving.serialize_keras_object(
                layer.quantization_config),
        }
        for layer in flatten_layers(model)
        if layer is not model and layer.quantization_mode is not None
    }


def restore(model, saved):
    """Quantizes the layers of `model` that `saved` (from `quantized_layers`, None for a
    float model) names, as they were, so the variables of a saved quantized model load."""
    if saved is None:
        return
    if not isinstance(saved, dict):
        raise ValueError(f"quantized_layers must be a dict or None, got {saved!r}.")
    layers = {layer.path: layer for layer in flatten_layers(model) if layer is not model}
    groups = {}
    for path, entry in saved.items():
        if path not in layers:
            raise ValueError(f"quantized_layers names {path!r}, which is no layer of this "
                             f"{type(model).__name__}.")
        policy, config = _saved_quantization(path, entry)
        key = (policy.name, json.dumps(entry["quantization_config"], sort_keys=True))
        groups.setdefault(key, (config, set()))[1].add(path)
    for (policy_name, _), (config, paths) in groups.items():
        quantize(model, config=config, filters=lambda layer, paths=paths: layer.path in paths)
        for path in paths:
            if layers[path].dtype_policy.name != policy_name:
                raise ValueError(
                    f"Quantizing layer {path!r} again gave the dtype policy "
                    f"{layers[path].dtype_policy.name!r}, not the saved {policy_name!r}.")


def _saved_quantization(path, entry):
    """The (dtype policy, QuantizationConfig) of a `quantized_layers` entry, checked."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "quantization_config"}:
        raise ValueError(f"quantized_layers[{path!r}] must be a dict with the keys 'dtype' "
                         f"and 'quantization_config', got {entry!r}.")
    policy = keras.dtype_policies.get(entry["dtype"])
    config = keras.saving.deserialize_keras_object(entry["quantization_config"])
    if not isinstance(config, keras.quantizers.QuantizationConfig):
        raise ValueError(f"quantized_layers[{path!r}] has no quantization config: "
                         f"{entry['quantization_config']!r}.")
    if check_mode(policy.quantization_mode) != config.mode:
        raise ValueError(f"quantized_layers[{path!r}]: the dtype policy {policy.name!r} and "
                         f"the config's mode {config.mode!r} differ.")
    return policy, config


def dequantized(model):
    """A float copy of a quantized `model` whose quantized layers hold, as float kernels, the
    values their quantized weights stand for; `model` itself if nothing in it is quantized.

    Export converts this copy: TFLite's converter has no builtin op for Keras's int8 x int8
    matmuls, and ONNX Runtime cannot run the graph of Keras's int4 unpacking. (Keras's
    per-token int8 or float8 rounding of the inputs is left out: the export's own
    quantization, e.g. TFLite's "dynamic", quantizes the activations.)

    Each kernel is read by calling the quantized layer on one-hot inputs, which an int8
    input quantizer keeps exact: a layer's equation must contract the input's trailing axes
    with the kernel's leading ones (Dense; the EinsumDense projections of attention).
    """
    if not quantized_layers(model):
        return model
    config = {key: value for key, value in model.get_config().items()
              if key != "quantized_layers"}
    copy = type(model).from_config(config)
    pairs = list(zip(flatten_layers(model), flatten_layers(copy)))
    for source, target in pairs[1:]:
        if source.quantization_mode is not None:
            kernel, bias = _probed_kernel(source, tuple(target.kernel.shape))
            target.kernel.assign(kernel)
            if bias is not None:
                target.bias.assign(bias)
            continue
        inner = {id(v) for layer in flatten_layers(source)[1:] for v in layer.weights}
        own = [v for v in source.weights if id(v) not in inner]
        inner = {id(v) for layer in flatten_layers(target)[1:] for v in layer.weights}
        for value, variable in zip(own, [v for v in target.weights if id(v) not in inner]):
            variable.assign(value)
    return copy


def _probed_kernel(layer, kernel_shape):
    """(kernel, bias or None) of a quantized Dense or EinsumDense, from its outputs for
    one-hot inputs and for a zero input, with its activation switched off meanwhile."""
    if isinstance(layer, keras.layers.EinsumDense):
        inputs, kernel_axes = layer.equation.split("->")[0].split(",")
        contracted = "".join(axis for axis in kernel_axes if axis in inputs)
        if inputs[2:] != contracted or not kernel_axes.startswith(contracted):
            raise ValueError(f"Cannot read the kernel of {layer.path!r}: its equation "
                             f"{layer.equation!r} does not contract the inputs' trailing axes.")
        count = len(contracted)
    else:
        count = 1
    size = int(np.prod(kernel_shape[:count]))
    one_hot = np.eye(size, dtype="float32").reshape((1, size, *kernel_shape[:count]))
    activation, layer.activation = layer.activation, keras.activations.linear
    try:
        outputs = keras.ops.convert_to_numpy(layer(one_hot))
        zero = keras.ops.convert_to_numpy(layer(np.zeros_like(one_hot[:, :1])))
    finally:
        layer.activation = activation
    bias = None if layer.bias is None else zero.reshape(tuple(layer.bias.shape))
    kernel = (outputs - zero).reshape(kernel_shape)
    return kernel, bias
