"""Checks of the images fed to a ViT, done before Keras traces them.

A shape error raised while Keras traces a step can leave a model unusable (under JAX,
Keras 3.15 purges the variables before the first step and does not restore them when
tracing fails; under TensorFlow the next call fails with an unrelated message), so
`ViT.predict`, `evaluate`, `fit` and the `*_on_batch` methods check their inputs here
first, and a bad batch is a `ValueError` that leaves the trained model as it was.
"""

import warnings

import numpy as np

# Images of these dtypes cannot hold 0..255 pixels as the model expects.
_SUSPECT_INTEGER_DTYPES = ("int8", "bool")
# How many images the pixel-range check looks at.
_RANGE_SAMPLE = 64


def check_shape(model, shape):
    """Raises a ValueError naming the problem when images of `shape` can't be fed in."""
    shape = tuple(shape)
    expected = f"(batch, {model.image_size[0]}, {model.image_size[1]}, {model.num_channels})"
    if len(shape) == 3:
        raise ValueError(
            f"{model.name} expects a batch of images of shape {expected}, but got an input "
            f"of shape {shape} without a batch axis: for a single image, pass `image[None]`."
        )
    if len(shape) != 4:
        raise ValueError(f"{model.name} expects images of shape {expected}, got shape {shape}.")
    if shape[0] == 0:
        raise ValueError(f"{model.name} got an empty batch (input shape {shape}).")
    if shape[-1] is not None and shape[-1] != model.num_channels:
        raise ValueError(
            f"{model.name} was built for {model.num_channels}-channel images "
            f"(num_channels={model.num_channels}) but got {shape[-1]} channels "
            f"(input shape {shape})."
        )
    if any(s is not None and s != e for s, e in zip(shape[1:3], model.image_size)):
        raise ValueError(
            f"{model.name} was built for {model.image_size[0]}x{model.image_size[1]} images "
            f"but got {shape[1]}x{shape[2]}: resize the images, or build the model with "
            f"image_size=({shape[1]}, {shape[2]})."
        )


def check_dtype(model, dtype):
    """Refuses dtypes that are no pixel values; warns once for int8 and bool images."""
    name = _dtype_name(dtype)
    if name is None:
        return
    if name.startswith(("complex", "str", "bytes", "object")):
        raise ValueError(f"{model.name} takes real-valued pixel values, got images of dtype {name}.")
    if name in _SUSPECT_INTEGER_DTYPES and getattr(model, "include_preprocessing", False):
        _warn_range(model, f"images of dtype {name}")


def check_values(model, images):
    """Warns once when NumPy `images` look already normalised (floats within [0, 1] or
    negative values) while the model rescales 0..255 pixels itself."""
    if not getattr(model, "include_preprocessing", False) or not isinstance(images, np.ndarray):
        return
    if images.dtype.kind != "f" or images.size == 0:
        return
    sample = images[:_RANGE_SAMPLE]
    low, high = float(np.min(sample)), float(np.max(sample))
    if low < 0:
        _warn_range(model, f"images with negative values (min {low:.3g})")
    elif high <= 1 and np.any(sample != np.round(sample)):
        _warn_range(model, f"float images within [0, 1] (max {high:.3g})")


def check_batch_input(model, x):
    """Checks `x` as `predict`/`fit`/`evaluate` receive it: an array or tensor, a
    one-element list or dict of one, or a `tf.data.Dataset` (its element spec)."""
    if x is None:
        return
    if isinstance(x, dict):
        if len(x) != 1:
            raise ValueError(
                f"{model.name} has one input (images); got a dict with keys {sorted(x)}."
            )
        x = next(iter(x.values()))
    if isinstance(x, (list, tuple)):
        if len(x) == 1 and hasattr(x[0], "shape"):
            x = x[0]
        else:
            raise ValueError(
                f"{model.name} takes a batch of images as one array of shape (batch, "
                f"{model.image_size[0]}, {model.image_size[1]}, {model.num_channels}), got a "
                f"Python {type(x).__name__} of {len(x)} items: pass `np.stack(images)`."
            )
    spec = _dataset_images_spec(x)
    if spec is not None:
        if spec.shape.rank is not None:
            check_shape(model, spec.shape.as_list())
        check_dtype(model, spec.dtype)
        return
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        check_shape(model, x.shape)
        check_dtype(model, x.dtype)
        check_values(model, x)


def _dataset_images_spec(x):
    """The `tf.TensorSpec` of the images of a `tf.data.Dataset`, else None."""
    spec = getattr(x, "element_spec", None)
    if spec is None:
        return None
    while isinstance(spec, (tuple, list)) and spec:
        spec = spec[0]  # (images, labels[, weights])
    if isinstance(spec, dict) and len(spec) == 1:
        spec = next(iter(spec.values()))
    return spec if hasattr(spec, "shape") and hasattr(spec.shape, "as_list") else None


def _dtype_name(dtype):
    if dtype is None:
        return None
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).replace("torch.", "")


def _warn_range(model, what):
    if getattr(model, "_warned_pixel_range", False):
        return
    model._warned_pixel_range = True
    warnings.warn(
        f"{model.name} got {what}, but with include_preprocessing=True it expects pixel "
        "values 0..255 and rescales them to [-1, 1] itself: pass raw pixels, or build the "
        "model with include_preprocessing=False for inputs normalised beforehand. "
        "(Shown once per model.)",
        stacklevel=4,
    )
