"""What the recipes train on: one interface, two input pipelines.

A training input (`ArrayInput`: numpy arrays, no TensorFlow; `DatasetInput`: tf.data
datasets) is given to `loop.train`, which asks it for a `Feed` for the model it built:

    feed = training_input.feed(model, config, seed, data_devices)
    feed.fit_model.fit(feed.train, validation_data=feed.validation, **feed.fit_kwargs)

Both feed batches of (images float32 (B, H, W, C) 0..255, one-hot labels float32
(B, num_classes)), full batches for training and equal ones for evaluation.
"""

import dataclasses

import keras
import numpy as np

from keras_vit import data as vit_data
from keras_vit import training


@dataclasses.dataclass
class Feed:
    """What `fit` gets from a training input.

    `fit_model` is the model to compile and fit: the ViT, or the ViT wrapped in
    `training.AugmentedModel` when the augmentation runs on the device. `train` and
    `validation` yield the batches; `steps_per_epoch` full batches cover the `num_train`
    training examples once; `fit_kwargs` are more arguments for `fit`.
    """

    fit_model: keras.Model
    train: object
    validation: object
    steps_per_epoch: int
    num_train: int
    fit_kwargs: dict


class ArrayInput:
    """numpy train and test arrays, each (images (N, H, W, C), integer labels (N,)):
    training batches from `keras_vit.data.ArrayBatches`, the augmentation on the device.
    No TensorFlow needed. A schedule in steps (`total_steps`) is not supported."""

    name = "numpy"

    def __init__(self, train, test):
        self.train, self.test = train, test

    def feed(self, model, config, seed, data_devices):
        """The `Feed` for `model` (a ViT) and `config` (a `RecipeConfig`); evaluation
        batches split evenly over `data_devices` replicas."""
        images, labels = self.train
        check_channels(model, images.shape[-1])
        if config.total_steps:
            raise ValueError("total_steps needs the tf.data pipeline.")
        num_classes = config.model["num_classes"]
        batches = vit_data.ArrayBatches(images, labels, config.batch_size, num_classes,
                                        seed=seed)
        x_test, y_test = self.test
        validation = (x_test.astype("float32"), np.eye(num_classes, dtype="float32")[y_test])
        fit_model = training.AugmentedModel(model, vit_data.make_augmenter(config.augment,
                                                                           seed=seed))
        val_batch = eval_batch_size(len(x_test), config.eval_batch_size, data_devices)
        return Feed(fit_model, batches, validation, steps_per_epoch=len(batches),
                    num_train=len(images), fit_kwargs=dict(validation_batch_size=val_batch))


class DatasetInput:
    """Unbatched tf.data train and test datasets of (image, integer label), batched by
    `keras_vit.data.build_pipeline` with the augmentation in the pipeline.

    `num_train` saves counting the training set; `resize_size` resizes training images to
    it before the random crop to the model's size (fine-tuning). With `total_steps` the
    training pipeline repeats.
    """

    name = "tf.data"

    def __init__(self, train, test, num_train=None, resize_size=None):
        self.train, self.test = train, test
        self.num_train, self.resize_size = num_train, resize_size

    def feed(self, model, config, seed, data_devices):
        """The `Feed` for `model` (a ViT) and `config` (a `RecipeConfig`); evaluation
        batches split evenly over `data_devices` replicas."""
        check_channels(model, self.train.element_spec[0].shape[-1])
        num_train = self.num_train or vit_data.dataset_size(self.train)
        shapes = dict(num_classes=config.model["num_classes"], image_size=model.image_size,
                      num_channels=model.num_channels)
        train = vit_data.build_pipeline(
            self.train, training=True, batch_size=config.batch_size, augment=config.augment,
            seed=seed, resize_size=self.resize_size, repeat=bool(config.total_steps), **shapes)
        val_batch = eval_batch_size(vit_data.dataset_size(self.test), config.eval_batch_size,
                                    data_devices)
        validation = vit_data.build_pipeline(self.test, training=False, batch_size=val_batch,
                                             **shapes)
        return Feed(model, train, validation, steps_per_epoch=num_train // config.batch_size,
                    num_train=num_train, fit_kwargs={})


def array_input(train, test, pipeline="auto"):
    """A training input for numpy (images, labels) arrays: `pipeline` "numpy" gives an
    `ArrayInput`, "tf.data" a `DatasetInput` of them, "auto" the latter when TensorFlow is
    installed."""
    if pipeline == "auto":
        pipeline = "tf.data" if tf_available() else "numpy"
    if pipeline == "numpy":
        return ArrayInput(train, test)
    return DatasetInput(vit_data.from_arrays(*train), vit_data.from_arrays(*test))


def eval_batch_size(n, largest, multiple_of=1):
    """The largest divisor of n up to `largest` that is a multiple of `multiple_of` (the
    data-parallel replicas), so evaluation batches all share a shape and split evenly. With
    one replica and no divisor above a quarter of `largest`, `largest` (a smaller last batch).
    """
    top = min(largest, n)
    divisors = [b for b in range(multiple_of, top + 1, multiple_of) if n % b == 0]
    if not divisors:
        raise ValueError(
            f"The {n} evaluation examples cannot be split into equal batches over the "
            f"{multiple_of} data-parallel replicas: use a multiple of {multiple_of} "
            "(e.g. --limit-test).")
    if multiple_of == 1 and divisors[-1] < top // 4:
        return top
    return divisors[-1]


def tf_available():
    """Whether TensorFlow can be imported."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def check_channels(model, channels):
    """A ValueError unless images with `channels` channels (None: unknown) fit `model`."""
    if channels is not None and channels != model.num_channels:
        raise ValueError(
            f"The images have {channels} channel(s) but the model takes "
            f"{model.num_channels} (num_channels={model.num_channels})."
        )
