"""A `.keras` file of a keras_vit ViT (e.g. the shipped Fashion-MNIST model) as a
`Checkpoint`. Its config is checked against the weights really in the archive before
Keras builds the model, so a config asking for a huge model is refused cheaply."""

import json
import math
import os
import zipfile

from keras_vit.weights.checkpoint import MAX_IMAGE_SIDE, MAX_LAYERS, Checkpoint, file_config
from keras_vit.weights.files import MAX_CONFIG_BYTES
from keras_vit.weights.loading import targets

_WEIGHTS_MEMBER = "model.weights.h5"
# Weights are stored in at least 2 bytes each (bfloat16 / float16).
_MIN_BYTES_PER_PARAMETER = 2


def _pair(value, name, limit):
    pair = [value, value] if isinstance(value, int) else value
    if (not isinstance(pair, list) or len(pair) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= limit for v in pair)):
        raise ValueError(f"its config has {name}={value!r}")
    return tuple(pair)


def _architecture(config):
    """The architecture entries of a saved ViT config, type- and range-checked."""
    if not isinstance(config, dict):
        raise ValueError(f"its config is a {type(config).__name__}, not an object")
    arch = {"image_size": _pair(config.get("image_size"), "image_size", MAX_IMAGE_SIDE),
            "patch_size": _pair(config.get("patch_size"), "patch_size", MAX_IMAGE_SIDE)}
    for name in ("hidden_dim", "num_layers", "num_heads", "mlp_dim", "num_channels", "num_classes"):
        value = config.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"its config has {name}={value!r}")
        arch[name] = value
    if arch["num_layers"] > MAX_LAYERS:
        raise ValueError(f"its config has num_layers={arch['num_layers']}")
    representation = config.get("representation_size")
    if representation is not None and (not isinstance(representation, int) or representation <= 0):
        raise ValueError(f"its config has representation_size={representation!r}")
    registers = config.get("num_register_tokens") or 0
    if not isinstance(registers, int) or not 0 <= registers <= MAX_LAYERS:
        raise ValueError(f"its config has num_register_tokens={registers!r}")
    return {**arch, "representation_size": representation, "pooling": config.get("pooling"),
            "include_top": bool(config.get("include_top", True)),
            "class_token_position": config.get("class_token_position", True) is not False,
            "num_register_tokens": registers, "pre_norm": bool(config.get("pre_norm")),
            "layer_scale_init": config.get("layer_scale_init"),
            "distillation_token": bool(config.get("distillation_token"))}


def _read_archive(path):
    """(saved config, size of the weights file) of a `.keras` archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names or _WEIGHTS_MEMBER not in names:
                raise ValueError(f"it lacks config.json or {_WEIGHTS_MEMBER}")
            info = archive.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise ValueError(f"its config.json has {info.file_size} bytes")
            return json.loads(archive.read("config.json")), archive.getinfo(_WEIGHTS_MEMBER).file_size
    except (zipfile.BadZipFile, ValueError, OSError, RecursionError, EOFError) as e:
        raise ValueError(f"Could not load the Keras model file {path!r}: {e}. The file is "
                         "truncated, corrupt or not a Keras model file.") from e


def check_archive(path):
    """Raises a ValueError unless `path` is a complete `.keras` archive of a keras_vit ViT
    whose weights file is large enough for the architecture its config describes."""
    saved, weights_bytes = _read_archive(path)
    if not isinstance(saved, dict) or saved.get("registered_name") != "keras_vit>ViT":
        name = saved.get("class_name") if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"{path!r} holds a {name}, not a keras_vit ViT.")
    if isinstance(saved.get("config"), dict) and saved["config"].get("quantized_layers"):
        raise ValueError(
            f"{path!r} holds a quantized ViT (model.quantize): open it with "
            "keras.saving.load_model(path); from_preset builds float models from float weights."
        )
    try:
        shapes = file_config(_architecture(saved.get("config") or {})).variable_shapes
    except ValueError as e:
        raise ValueError(f"The Keras model file {path!r} is not a valid keras_vit ViT: {e}.") from None
    parameters = sum(math.prod(s) for s in shapes.values())
    if parameters * _MIN_BYTES_PER_PARAMETER > weights_bytes:
        raise ValueError(
            f"The Keras model file {path!r} describes a model of {parameters:,} parameters, "
            f"but its {_WEIGHTS_MEMBER} holds only {weights_bytes:,} bytes: the file is "
            "corrupt or was tampered with."
        )


def load(path):
    """Loads the checked archive with Keras; returns a `Checkpoint`."""
    import keras

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    check_archive(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # a corrupt weights file, a missing custom object, ...
        raise ValueError(f"Could not load the Keras model file {path!r}: {e}") from e
    params = {
        key: (keras.ops.convert_to_numpy(variable), variable.path)
        for key, variable in targets(model).items()
    }
    return Checkpoint(os.fspath(path), "keras", params, model.architecture, [])
