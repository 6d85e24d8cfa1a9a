"""Image and label arrays: loading .npy, .npz and idx(.gz) files, collecting representative
and evaluation images from arrays, files or batches, and casting pixels to an input dtype."""

import os

import numpy as np

from keras_vit import datafiles

_IMAGE_KEYS = ("images", "x", "x_test", "x_train", "image")
_LABEL_KEYS = ("labels", "y", "y_test", "y_train", "label")


def load_arrays(path, max_bytes=None):
    """(images, labels or None) from a .npy, .npz or idx(.gz) file.

    A .npz file holds the images under `images` or `x` (or its only array), and the labels,
    if any, under `labels` or `y`. An idx file holds either images or labels. The files are
    read by `keras_vit.datafiles`: sizes are checked before anything is allocated, at most
    `max_bytes` (else $KERAS_VIT_MAX_DATA_BYTES, else 4 GiB) are read, and a malformed file
    is a ValueError naming it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No data file at {path!r}.")
    if path.endswith(".npy"):
        return datafiles.read_npy(path, max_bytes), None
    if path.endswith(".npz"):
        keys = datafiles.npz_keys(path)
        image_key = next((k for k in _IMAGE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
        if image_key is None:
            raise ValueError(f"{path!r} holds {keys}: name the images array 'images' or 'x'.")
        label_key = next((k for k in _LABEL_KEYS if k in keys), None)
        chosen = [key for key in (image_key, label_key) if key is not None]
        arrays = datafiles.read_npz(path, chosen, max_bytes)
        return arrays[image_key], arrays.get(label_key)
    if "idx" in os.path.basename(path):
        return datafiles.read_idx(path, max_bytes), None
    raise ValueError(f"Unsupported data file {path!r}: use .npy, .npz or an idx(.gz) file.")


def fit_images(images, image_shape):
    """Adds a missing channel axis (grayscale) and checks the shape against the model's."""
    images = np.asarray(images)
    if images.ndim == len(image_shape) and image_shape[-1] == 1:
        images = images[..., None]
    if images.shape[1:] != tuple(image_shape):
        raise ValueError(
            f"The model takes images of shape {tuple(image_shape)}, got a batch of shape "
            f"{images.shape}."
        )
    return images


def collect_images(data, image_shape, limit=None, seed=0):
    """Up to `limit` images (float32, N x H x W x C) from `data`.

    `data` may be an array of images, a path (.npy, .npz, idx), or any iterable of batches:
    arrays, `(images, labels)` tuples or `{"images": ...}` dicts (a `tf.data.Dataset` from the
    training pipeline works). From an array or file, `limit` images are drawn at random
    (seeded); from an iterable, the first `limit` are taken.
    """
    if isinstance(data, (str, os.PathLike)):
        data = load_arrays(data)[0]
    if isinstance(data, np.ndarray) or hasattr(data, "__array__") and hasattr(data, "shape"):
        images = fit_images(np.asarray(data), image_shape)
        if limit is not None and len(images) > limit:
            rng = np.random.default_rng(seed)
            images = images[np.sort(rng.choice(len(images), limit, replace=False))]
        return images.astype("float32")
    batches, count = [], 0
    for batch in data:
        if isinstance(batch, dict):
            batch = batch.get("images", next(iter(batch.values())))
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        batch = np.asarray(batch)
        if batch.ndim == len(image_shape) - (image_shape[-1] == 1):
            batch = batch[None]  # a single image
        batch = fit_images(batch, image_shape)
        batches.append(batch)
        count += len(batch)
        if limit is not None and count >= limit:
            break
    if not batches:
        raise ValueError("The data yielded no images.")
    return np.concatenate(batches)[:limit].astype("float32")


def random_pixels(image_shape, count=16):
    """`count` seeded random images of float32 pixels 0..255: the default parity images."""
    return np.random.default_rng(0).uniform(0, 255, (count, *image_shape)).astype("float32")


def as_input(images, dtype):
    """Pixels (0..255) as an input of `dtype`: float32, or uint8 rounded and clipped."""
    images = np.asarray(images, dtype="float32")
    if dtype == "uint8":
        return np.clip(np.round(images), 0, 255).astype("uint8")
    return images
