"""Rebuilding a model in float32: the float32 copy of a mixed-precision model that export
converts and training saves (`as_float32`)."""

import keras
import numpy as np

from keras_vit.backend.private_apis import flatten_layers


def _is_float32(model):
    """Whether every layer of `model`, sublayers included, computes and stores in float32."""
    return all(
        layer.dtype_policy.compute_dtype == "float32"
        and layer.dtype_policy.variable_dtype == "float32"
        for layer in flatten_layers(model)
    )


def _float32_config(value):
    """A copy of a (nested) config with every non-float32 dtype policy set to float32."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" or "Policy" in str(value.get("class_name")):
            return {**value, "config": {**value.get("config", {}), "name": "float32"}}
        out = {}
        for key, item in value.items():
            if key == "dtype" and isinstance(item, str) and item != "float32":
                out[key] = "float32"
            else:
                out[key] = _float32_config(item)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_float32_config(v) for v in value)
    return value


def as_float32(model):
    """`model` if it computes in float32, else a float32 copy (mixed-precision models).

    The copy is rebuilt from the model's config with every dtype policy set to float32
    (under a float32 global policy) and gets the model's weights cast to float32.
    """
    if _is_float32(model):
        return model
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = model.__class__.from_config(_float32_config(model.get_config()))
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights([np.asarray(w, dtype="float32") for w in model.get_weights()])
    return copy
