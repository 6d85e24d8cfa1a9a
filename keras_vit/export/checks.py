"""Checks that run before any conversion, with errors that say what to do: quantization
modes, input dtypes, counts, calibration data, the packages ONNX export needs, output paths,
evaluation labels, and the model (loaded from a `.keras` path) and its image input."""

import os
import tempfile
from importlib.util import find_spec

import keras
import numpy as np

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "mixed_int8", "matmul_int8")
# The modes calibrated on representative data.
CALIBRATED = ("int8", "mixed_int8", "matmul_int8")
_ALIASES = {"none": "float32", "fp32": "float32", "fp16": "float16", "dynamic_int8": "dynamic",
            "mixed": "mixed_int8", "matmul": "matmul_int8"}
INPUT_DTYPES = ("float32", "uint8")
DEFAULT_CALIBRATION_SAMPLES = 256

# The modules that ONNX export and its parity check import, each with the pip package that provides it.
ONNX_PACKAGES = {"torch": "torch", "onnx": "onnx", "onnxscript": "onnxscript",
                 "onnxruntime": "onnxruntime"}


def normalize_quantization(quantize):
    """Returns the canonical name of a quantization mode, or raises a ValueError."""
    name = "float32" if quantize is None else str(quantize).lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown quantization mode {quantize!r}. Valid modes: {', '.join(QUANTIZATIONS)} "
            f"(or None for float32)."
        )
    return name


def check_input_dtype(input_dtype):
    """Raises a ValueError unless `input_dtype` is one of `INPUT_DTYPES`."""
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(
            f"input_dtype must be one of {', '.join(INPUT_DTYPES)}, got {input_dtype!r}."
        )


def check_positive_int(value, name):
    """`value` as an int, or a ValueError unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def check_representative(modes, representative_data):
    """Raises a ValueError if the quantization `modes` include a calibrated one
    (`CALIBRATED`) but no calibration data."""
    calibrated = [mode for mode in modes if mode in CALIBRATED]
    if calibrated and representative_data is None:
        raise ValueError(
            f"Quantization {calibrated[0]!r} needs representative_data (a few hundred training "
            "images) to calibrate activation ranges; use quantize='dynamic' for int8 weights "
            "without calibration."
        )


def check_onnx_packages():
    """Raises an ImportError naming the packages ONNX export needs and lacks (looked up
    without importing them)."""
    missing = [name for module, name in ONNX_PACKAGES.items() if find_spec(module) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)}: pip install {' '.join(missing)} "
            "(in a keras_vit checkout: pip install -e '.[onnx]')."
        )


def _check_writable(folder):
    """Raises a PermissionError unless a file can be created in `folder`."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(
            f"Can't write in {folder!r} ({error.strerror}): choose a writable folder."
        ) from None


def make_output_folder(folder):
    """Creates `folder` (and its parents) if needed, checks it is writable, returns it."""
    folder = os.path.abspath(os.fspath(folder))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"The output folder {folder!r} is a file: give a folder.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise type(error)(
            f"Can't create the output folder {folder!r} ({error.strerror}): choose another one."
        ) from None
    _check_writable(folder)
    return folder


def check_output_path(path, overwrite, suffix=None, folder=False):
    """Raises if `path` can't be written: missing or read-only parent folder (or a file on
    the way to it), wrong suffix, an existing file (unless `overwrite`), or a folder where
    a file goes (and, with folder=True, a file where a folder goes). Returns the path as a
    string."""
    path = os.fspath(path)
    if suffix and not path.endswith(suffix):
        raise ValueError(f"The output path must end in {suffix}, got {path!r}.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        existing = parent
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise NotADirectoryError(
                f"The output path {path!r} goes through {existing!r}, which is a file, not a "
                "folder: pick another path."
            )
        raise FileNotFoundError(
            f"The folder of the output path {path!r} does not exist: create {parent!r} first."
        )
    if os.path.exists(path) and os.path.isdir(path) != folder:
        if folder:
            raise NotADirectoryError(f"{path!r} is a file, not a folder: remove it or pick another path.")
        raise IsADirectoryError(f"{path!r} is a folder: give the path of a file.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path!r} already exists; pass overwrite=True (--overwrite) to replace it."
        )
    _check_writable(parent)
    return path


def check_labels(labels, num_images, num_classes):
    """`labels` as int64 class ids, one per image, each in 0..num_classes-1; else a ValueError."""
    labels = np.asarray(labels)
    if labels.ndim > 1 and labels.size == len(labels):
        labels = labels.reshape(-1)  # a (N, 1) column
    if labels.ndim != 1 or len(labels) != num_images:
        raise ValueError(
            f"The evaluation labels must hold one class id per image: got {labels.size} "
            f"label(s), shape {labels.shape}, for {num_images} evaluation image(s)."
        )
    if labels.dtype.kind not in "iuf":
        raise ValueError(f"The evaluation labels must be integer class ids, got {labels.dtype} values.")
    valid = (labels >= 0) & (labels < num_classes) & (labels == np.round(labels))
    if not valid.all():
        index = int(np.argmin(valid))
        raise ValueError(
            f"Evaluation label {labels[index].item()!r} (at index {index}) is not a class id of "
            f"this model: labels must be integers in 0..{num_classes - 1} (its {num_classes} outputs)."
        )
    return labels.astype("int64")


def load_model(model):
    """Returns `model` itself, or the model stored in a `.keras` file at that path."""
    if isinstance(model, keras.Model):
        return model
    path = os.fspath(model)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    # The ViT layers are registered for deserialization: importing this module imported
    # the keras_vit package, which imports them.
    return keras.saving.load_model(path, compile=False)


def image_shape(model, fixed=True):
    """The (H, W, C) input shape of a single-input image model; with `fixed`, H, W and C
    must be known (TFLite and ONNX files have a fixed image size)."""
    if len(model.inputs) != 1:
        raise ValueError(f"Export needs a model with one image input, got {len(model.inputs)}.")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise ValueError(f"Export needs an image input (batch, H, W, C), got {(None,) + shape}.")
    if fixed and any(s is None for s in shape):
        raise ValueError(
            f"TFLite needs a fixed input size, but the model's input shape is "
            f"{(None,) + shape}: rebuild the model with a fixed image size (e.g. "
            f"`ViT(image_size=...)` or `keras.Input(shape=(224, 224, 3))`) and copy the weights."
        )
    return shape


def outputs_features(model):
    """Whether the model outputs feature vectors rather than logits: a ViT without a head
    (`include_top=False`). Other models are taken for classifiers."""
    return getattr(model, "include_top", True) is False


def num_classes(model):
    """The number of logits the model outputs per image; a ValueError for a features model,
    whose outputs have no classes to label."""
    if outputs_features(model):
        raise ValueError(
            "This model outputs features (a ViT with include_top=False), not class scores: "
            "evaluation labels need a classifier. Leave out the labels to compare features."
        )
    return model.outputs[0].shape[-1]
