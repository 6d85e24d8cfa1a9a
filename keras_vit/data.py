"""Input pipelines that feed `model.fit` on every Keras backend.

The sources (`load_fashion_mnist`, `from_tfds`, `from_directory`, `from_arrays`) live in
`keras_vit.datasets` and are importable from here. Each tf.data source gives an unbatched
`tf.data.Dataset` of `(image, integer label)`; `build_pipeline` turns it into batches of
`(float32 images 0..255, one-hot labels)` with resizing, random crop and flip, the Keras
core augmentations (RandAugment, RandomErasing, MixUp, CutMix), shuffling and prefetching
for training, or deterministically for evaluation.

`ArrayBatches` batches numpy arrays instead, with no TensorFlow: a `keras.utils.PyDataset`
of shuffled full batches (the augmentation then runs on the device, e.g. in
`keras_vit.training.AugmentedModel`).

The per-image augmentation (`AugmentConfig`, `make_augmenter`, `augment_batch`) lives in
`keras_vit.augment` and is importable from here too. TensorFlow is imported lazily: only
the tf.data functions need it.
"""

import keras
import numpy as np

from keras_vit.augment import AugmentConfig, augment_batch, make_augmenter  # noqa: F401
from keras_vit.datafiles import read_idx, write_idx  # noqa: F401
from keras_vit.datasets import (  # noqa: F401
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    IMAGE_EXTENSIONS,
    fashion_mnist_dirs,
    from_arrays,
    from_directory,
    from_tfds,
    load_fashion_mnist,
    require_tensorflow,
)

# --------------------------------------------------------------------------- MixUp and CutMix


def mix_batch(images, labels, config, mixup_layer=None, cutmix_layer=None):
    """Applies MixUp and/or CutMix (one per batch, chosen at random) to one-hot labels."""
    tf = require_tensorflow()
    branches = []
    if config.mixup:
        branches.append((config.mixup, mixup_layer or keras.layers.MixUp(alpha=config.mixup_alpha)))
    if config.cutmix:
        branches.append((config.cutmix, cutmix_layer or keras.layers.CutMix()))
    draw = tf.random.uniform(())
    threshold = 0.0
    for probability, layer in branches:
        lower, threshold = threshold, threshold + probability

        def apply(layer=layer):
            out = layer({"images": images, "labels": labels}, training=True)
            return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)

        images, labels = tf.cond(
            (draw >= lower) & (draw < threshold), apply, lambda: (images, labels)
        )
    return images, labels


# --------------------------------------------------------------------------- pipelines


def dataset_size(dataset):
    """The number of examples of an unbatched dataset (counted if TF doesn't know it)."""
    tf = require_tensorflow()
    size = int(dataset.cardinality())
    if size == tf.data.INFINITE_CARDINALITY:
        raise ValueError("The dataset is infinite; pass a finite dataset.")
    if size < 0:
        size = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
    return size


def _preprocess_fn(image_size, num_channels, training, resize_size=None):
    """Per-example: cast to float32 0..255, fix channels, resize (training: random crop)."""
    tf = require_tensorflow()

    def fn(image, label):
        image = tf.cast(image, tf.float32)
        if image.shape.rank == 2:
            image = image[..., None]
        if num_channels is not None:
            channels = image.shape[-1]
            if channels == 1 and num_channels == 3:
                image = tf.image.grayscale_to_rgb(image)
            elif channels == 3 and num_channels == 1:
                image = tf.image.rgb_to_grayscale(image)
            elif channels is not None and channels != num_channels:
                raise ValueError(
                    f"The data has {channels}-channel images but the model takes "
                    f"{num_channels} channels."
                )
        if image_size is not None:
            size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            if training and resize_size is not None:
                big = (resize_size, resize_size) if isinstance(resize_size, int) else resize_size
                image = tf.image.resize(image, big)
                image = tf.image.random_crop(image, (*size, image.shape[-1]))
            elif tuple(image.shape[:2]) != size:
                image = tf.image.resize(image, size)
        return image, tf.cast(label, tf.int32)

    return fn


def build_pipeline(
    dataset,
    *,
    training,
    batch_size,
    num_classes,
    image_size=None,
    num_channels=None,
    resize_size=None,
    augment=None,
    shuffle_buffer=10_000,
    seed=None,
    repeat=False,
    cache=True,
):
    """Batches an unbatched (image, label) dataset for `model.fit` / `model.evaluate`.

    Yields `(images float32 (B, H, W, C) 0..255, labels float32 one-hot (B, num_classes))`.

    training=True: cache, shuffle, per-example resize (to `resize_size` then a random
    `image_size` crop, if `resize_size` is given), batch with drop_remainder, the
    `augment` augmenter (an `AugmentConfig`), MixUp/CutMix, prefetch. training=False:
    deterministic: resize, batch (keeping the last partial batch), prefetch.
    `num_channels` converts grayscale<->RGB or raises for other mismatches.
    Raises a ValueError when a training `batch_size` exceeds the number of examples.
    """
    tf = require_tensorflow()
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    size = dataset_size(dataset)
    if size == 0:
        raise ValueError("The dataset is empty.")
    if not training:
        batch_size = min(batch_size, size)  # evaluation keeps every example anyway
    if batch_size > size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the dataset ({size} examples); "
            "use a smaller batch size."
        )
    autotune = tf.data.AUTOTUNE
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(min(shuffle_buffer, size), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(
        _preprocess_fn(image_size, num_channels, training, resize_size),
        num_parallel_calls=autotune,
        deterministic=not training,
    )
    dataset = dataset.batch(batch_size, drop_remainder=training)
    one_hot = lambda images, labels: (images, tf.one_hot(labels, num_classes))
    dataset = dataset.map(one_hot)
    if training and augment is not None:
        augmenter = make_augmenter(augment, seed=seed)
        if augmenter:
            dataset = dataset.map(
                lambda images, labels: (augment_batch(augmenter, images), labels),
                num_parallel_calls=autotune,
            )
        if augment.mixup or augment.cutmix:
            mixup = keras.layers.MixUp(alpha=augment.mixup_alpha, seed=seed)
            cutmix = keras.layers.CutMix(seed=seed)
            dataset = dataset.map(
                lambda images, labels: mix_batch(images, labels, augment, mixup, cutmix),
                num_parallel_calls=autotune,
            )
    if training and repeat:
        dataset = dataset.repeat()
    return dataset.prefetch(autotune)


# --------------------------------------------------------------------------- numpy batches


class ArrayBatches(keras.utils.PyDataset):
    """Shuffled full batches of numpy images and one-hot labels, reshuffled every epoch.

    images (N, H, W, C) of any number type, labels (N,) integers in [0, num_classes) ->
    `len(self)` = N // batch_size batches of (images float32 (batch_size, H, W, C), labels
    float32 one-hot (batch_size, num_classes)); the last N % batch_size examples of each
    shuffled order are left out. No TensorFlow needed, and every batch has the same
    shape, so a compiled train step is traced once. `shuffle=False` keeps the order.
    Raises a ValueError when `batch_size` exceeds N.
    """

    def __init__(self, images, labels, batch_size, num_classes, shuffle=True, seed=0):
        super().__init__()
        if batch_size > len(images):
            raise ValueError(
                f"batch_size {batch_size} is larger than the dataset ({len(images)} examples); "
                "use a smaller batch size."
            )
        self.images, self.labels = images, labels
        self.batch_size, self.num_classes = batch_size, num_classes
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(images))
        self.on_epoch_end()

    def __len__(self):
        return len(self.images) // self.batch_size

    def __getitem__(self, index):
        idx = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        x = self.images[idx].astype("float32")
        y = np.eye(self.num_classes, dtype="float32")[self.labels[idx]]
        return x, y

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)
