"""Checks of the images fed to a ViT, and the model class that runs them first.

A shape error raised while Keras traces a step can leave a model unusable: under JAX,
Keras 3.15 detaches every variable's value before the first step of `fit`, `evaluate` or
`predict` and attaches the new values back only when the call finishes, so a failure in
between (a bad batch from a generator, a `PyDataset` or a tf.data dataset of unknown
shape, a batch the devices do not divide, an interrupt) left `'NoneType' object is not
callable` in every later call. `CheckedModel`, the class of `keras_vit.ViT` and of the
`insight` models that share its layers, checks the images before Keras reads them and,
whatever fails, puts the variables back as the last completed step left them (as before
the call when no step completed): a bad batch is a `ValueError` and the model stays usable.
"""

import contextlib
import sys
import types
import warnings

import keras
import numpy as np

from keras_vit.backend import private_apis

# Images of these dtypes cannot hold 0..255 pixels as the model expects.
_SUSPECT_INTEGER_DTYPES = ("int8", "bool")
# How many images the pixel-range check looks at.
_RANGE_SAMPLE = 64


@keras.saving.register_keras_serializable(package="keras_vit")
class CheckedModel(keras.Model):
    """A functional `keras.Model` from a ViT's images whose `predict`, `evaluate`, `fit`
    and `*_on_batch` check the images first (arrays, tf.data datasets, `PyDataset`s and
    generators: see `watched`) and cannot leave the variables without values."""

    def __call__(self, *args, **kwargs):
        check_batch_input(self, args[0] if args else kwargs.get("inputs"))
        return super().__call__(*args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        # Trainers of some backends call `call` directly (stateless), so check here too.
        if hasattr(inputs, "shape"):
            check_shape(self, inputs.shape)
            if None in tuple(inputs.shape)[1:]:
                raise ValueError(
                    f"{self.name} got images of unknown size (shape {tuple(inputs.shape)}) "
                    "to trace: feed batches of one image size (Keras traces a generator or "
                    "a PyDataset whose first batches differ in size for any size).")
        return super().call(inputs, training=training, mask=mask)

    def predict(self, x, *args, **kwargs):
        with _intact(self):
            return super().predict(watched(self, x), *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        with _intact(self):
            return super().evaluate(watched(self, x), *args, **kwargs)

    def fit(self, x=None, *args, validation_data=None, **kwargs):
        if isinstance(validation_data, (tuple, list)) and validation_data:
            check_batch_input(self, validation_data[0])
        else:
            validation_data = watched(self, validation_data)
        with _intact(self):
            return super().fit(watched(self, x), *args, validation_data=validation_data,
                               **kwargs)

    def train_on_batch(self, x, *args, **kwargs):
        check_batch_input(self, x)
        with _intact(self):
            return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        check_batch_input(self, x)
        with _intact(self):
            return super().test_on_batch(x, *args, **kwargs)

    def predict_on_batch(self, x):
        check_batch_input(self, x)
        with _intact(self):
            return super().predict_on_batch(x)


@contextlib.contextmanager
def _intact(model):
    """When the call inside fails, puts back under JAX the values Keras's trainer detached
    from `model`'s variables (those of the last step completed in the call, else those from
    before it); under TensorFlow, drops the step functions Keras traced (one whose first
    trace failed cannot make the optimizer's variables later)."""
    jax = keras.backend.backend() == "jax"
    if jax and getattr(model, "optimizer", None) is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # so its values are kept below
    variables = _state_variables(model) if jax else []
    before = [private_apis.stored_value(v) for v in variables]
    state = private_apis.jax_trainer_state(model)
    try:
        yield
    except BaseException:
        if not jax:
            if keras.backend.backend() == "tensorflow":
                model.train_function = model.test_function = model.predict_function = None
            raise
        if private_apis.jax_trainer_state(model) is not state:
            model.jax_state_sync()  # the values of the steps completed in this call
        for variable, value in zip(variables, before):
            if private_apis.stored_value(variable) is None and value is not None:
                variable.assign(value)
        if any(private_apis.stored_value(v) is None for v in model.metrics_variables):
            model.reset_metrics()  # metrics built in this call start again from zero
        private_apis.forget_jax_trainer_state(model)
        raise


def _state_variables(model):
    """Every variable a Keras trainer may detach: the model's, its optimizer's, metrics'."""
    optimizer = getattr(model, "optimizer", None)
    return [*model.variables, *(optimizer.variables if optimizer is not None else ()),
            *model.metrics_variables]


def watched(model, x):
    """`x` (the data given to `predict`, `evaluate` or `fit`) checked as far as Keras has
    not read it yet: arrays and a tf.data dataset's element spec now, the first batch of a
    `PyDataset` (read by index) now, and the first batch of a generator or a tf.data
    dataset as it passes. Returns what to feed Keras: `x`, or `x` wrapped to check it."""
    if isinstance(x, keras.utils.PyDataset):
        if x.num_batches != 0:
            check_batch_input(model, _images(x[0]))
        return x
    if isinstance(x, types.GeneratorType):
        return _watched_generator(model, x)
    check_batch_input(model, x)
    if _is_tf_dataset(x):
        return _watched_dataset(model, x)
    return x


def _watched_generator(model, generator):
    """`generator`'s batches, the first checked as it passes."""
    for index, batch in enumerate(generator):
        if index == 0:
            check_batch_input(model, _images(batch))
        yield batch


def _watched_dataset(model, dataset):
    """`dataset` with its images fixed to the model's shape (a batch of another shape is
    an error before the model sees it) and its first batch checked with `check_values`."""
    import tensorflow as tf

    spec = _images(dataset.element_spec)
    if not isinstance(spec, tf.TensorSpec):  # ragged or sparse images: left to Keras
        return dataset
    if keras.distribution.distribution() is not None:
        # Keras shards a dataset by reading its batch size from the pipeline, which a map
        # hides; its element spec was checked up front.
        return dataset
    height, width, channels = _image_shape(model)
    checked = []

    def check_first(images):
        if not checked:
            checked.append(True)
            check_values(model, images.numpy())
        return True

    def check(images):
        images = tf.ensure_shape(images, (None, height, width, channels))
        if spec.dtype.is_floating and getattr(model, "include_preprocessing", False):
            with tf.control_dependencies([tf.py_function(check_first, [images], tf.bool)]):
                images = tf.identity(images)
        return images

    def fn(*element):
        return _images(element if isinstance(dataset.element_spec, tuple) else element[0],
                       replace=check)

    return dataset.map(fn)


def check_shape(model, shape):
    """Raises a ValueError naming the problem when images of `shape` can't be fed in."""
    shape = tuple(shape)
    height, width, channels = _image_shape(model)
    expected = f"(batch, {height}, {width}, {channels})"
    if len(shape) == 3:
        raise ValueError(
            f"{model.name} expects a batch of images of shape {expected}, but got an input "
            f"of shape {shape} without a batch axis: for a single image, pass `image[None]`."
        )
    if len(shape) != 4:
        raise ValueError(f"{model.name} expects images of shape {expected}, got shape {shape}.")
    if shape[0] == 0:
        raise ValueError(f"{model.name} got an empty batch (input shape {shape}).")
    if shape[-1] is not None and shape[-1] != channels:
        raise ValueError(
            f"{model.name} was built for {channels}-channel images "
            f"(num_channels={channels}) but got {shape[-1]} channels "
            f"(input shape {shape})."
        )
    if any(s is not None and s != e for s, e in zip(shape[1:3], (height, width))):
        raise ValueError(
            f"{model.name} was built for {height}x{width} images "
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
    one-element list or dict of one, or a `tf.data.Dataset` (its element spec); other
    inputs are left to `watched`."""
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
                f"{model.name} takes a batch of images as one array of shape "
                f"(batch, {', '.join(map(str, _image_shape(model)))}), got a "
                f"Python {type(x).__name__} of {len(x)} items: pass `np.stack(images)`."
            )
    spec = _images(getattr(x, "element_spec", None))
    if hasattr(spec, "shape") and hasattr(spec.shape, "as_list"):
        if spec.shape.rank is not None:
            check_shape(model, spec.shape.as_list())
        check_dtype(model, spec.dtype)
        return
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        check_shape(model, x.shape)
        check_dtype(model, x.dtype)
        check_values(model, x)


def _image_shape(model):
    """(height, width, channels) of the images `model` takes."""
    return tuple(model.inputs[0].shape[1:])


def _is_tf_dataset(x):
    tf = sys.modules.get("tensorflow")  # without TensorFlow, there is no tf.data
    return tf is not None and isinstance(x, tf.data.Dataset)


def _images(element, replace=None):
    """The images of a batch or element spec: (images, labels[, weights]), (images,),
    {name: images} or images; with `replace`, the element with `replace(images)` instead."""
    if isinstance(element, (tuple, list)) and element:
        return (_images(element[0], replace), *element[1:]) if replace else _images(element[0])
    if isinstance(element, dict) and len(element) == 1:
        (key, images), = element.items()
        return {key: _images(images, replace)} if replace else _images(images)
    return replace(element) if replace else element


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
