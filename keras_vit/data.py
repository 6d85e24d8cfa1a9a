"""Input pipelines that feed `model.fit` on every Keras backend.

Sources:
    * `load_fashion_mnist`: Fashion-MNIST from its idx files (Debian's
      `dataset-fashion-mnist` package, a folder of your own, or TFDS as a fallback), read
      by `keras_vit.datafiles` (sizes bounded, hostile files refused). Pure numpy, so it
      also works where TensorFlow is not installed.
    * `from_tfds`: any TensorFlow Datasets dataset by name.
    * `from_directory`: a folder with one sub-folder of images per class.
    * `from_arrays`: numpy arrays.

Each source gives an unbatched `tf.data.Dataset` of `(image, integer label)`;
`build_pipeline` turns it into batches of `(float32 images 0..255, one-hot labels)` with
resizing, random crop and flip, the Keras core augmentations (RandAugment, RandomErasing,
MixUp, CutMix), shuffling and prefetching for training, or deterministically for evaluation.

The per-image augmentation (`AugmentConfig`, `make_augmenter`, `augment_batch`) lives in
`keras_vit.augment` and is importable from here too. TensorFlow is imported lazily: only
the tf.data functions need it.
"""

import os
from pathlib import Path

import keras
import numpy as np

from keras_vit.augment import AugmentConfig, augment_batch, make_augmenter  # noqa: F401
from keras_vit.datafiles import read_idx, write_idx  # noqa: F401

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _tf():
    try:
        import tensorflow as tf
    except ImportError as error:  # pragma: no cover - exercised with TF hidden
        raise ImportError(
            "tf.data pipelines need TensorFlow (`pip install tensorflow-cpu`); "
            "`load_fashion_mnist` and the recipes' numpy path work without it."
        ) from error
    return tf


# --------------------------------------------------------------------------- Fashion-MNIST


def _find_idx(directory, stem):
    for name in (stem + ".gz", stem):
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    return None


def fashion_mnist_dirs(directory=None):
    """The folders searched for the Fashion-MNIST idx files, in order."""
    if directory is not None:
        return [Path(directory)]
    dirs = []
    if os.environ.get("FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["FASHION_MNIST_DIR"]))
    dirs.append(Path(DEBIAN_FASHION_MNIST_DIR))
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    dirs.append(Path(keras_home) / "datasets" / "fashion-mnist")
    return dirs


def load_fashion_mnist(split="train", directory=None, limit=None, download=True):
    """Fashion-MNIST as numpy: images (N, 28, 28, 1) uint8 0..255 and labels (N,) int32.

    Reads the idx files from `directory`, else from $FASHION_MNIST_DIR, Debian's
    /usr/share/datasets/fashion-mnist or ~/.keras/datasets/fashion-mnist; if none has
    them and `download` is True, TFDS `fashion_mnist` downloads them (needs TensorFlow
    and internet). `limit` keeps the first `limit` examples.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"Unknown Fashion-MNIST split {split!r}; use 'train' or 'test'.")
    image_stem, label_stem = FASHION_MNIST_FILES[split]
    searched = fashion_mnist_dirs(directory)
    for folder in searched:
        images_path, labels_path = _find_idx(folder, image_stem), _find_idx(folder, label_stem)
        if images_path and labels_path:
            images, labels = read_idx(images_path), read_idx(labels_path)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise ValueError(
                    f"{images_path} / {labels_path}: expected (N, H, W) images and (N,) "
                    f"labels, got {images.shape} and {labels.shape}."
                )
            images, labels = images[..., None], labels.astype("int32")
            break
    else:
        if directory is not None or not download:
            raise FileNotFoundError(
                f"Fashion-MNIST idx files ({image_stem}[.gz], {label_stem}[.gz]) not found in "
                f"{', '.join(map(str, searched))}. Install Debian's `dataset-fashion-mnist` "
                "package, or set FASHION_MNIST_DIR, or allow the TFDS download."
            )
        images, labels = _fashion_mnist_from_tfds(split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def _fashion_mnist_from_tfds(split):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise FileNotFoundError(
            "Fashion-MNIST idx files not found locally and tensorflow-datasets is not "
            "installed to download them. Install Debian's `dataset-fashion-mnist` or "
            "`pip install tensorflow-cpu tensorflow-datasets importlib_resources`."
        ) from error
    data = tfds.as_numpy(tfds.load("fashion_mnist", split=split, batch_size=-1))
    return data["image"].astype("uint8"), data["label"].astype("int32")


# --------------------------------------------------------------------------- sources


def from_arrays(images, labels):
    """An unbatched tf.data.Dataset of (image, label) from numpy arrays."""
    tf = _tf()
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    return tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))


def from_tfds(name, split, data_dir=None, download=True, manual_dir=None, **load_kwargs):
    """An unbatched tf.data.Dataset of (image, label) from TensorFlow Datasets.

    Returns `(dataset, info)`. `manual_dir` is where datasets such as `imagenet2012`
    find their manually downloaded archives. Raises a ValueError for an unknown name.
    """
    import tensorflow_datasets as tfds

    if name not in tfds.list_builders():
        close = [b for b in tfds.list_builders() if name.split("/")[0].lower()[:4] in b][:8]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise ValueError(f"Unknown TFDS dataset {name!r}.{hint}")
    download_config = None
    if manual_dir is not None:
        download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    dataset, info = tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        download=download,
        as_supervised=True,
        with_info=True,
        download_and_prepare_kwargs={"download_config": download_config} if download else None,
        **load_kwargs,
    )
    return dataset, info


def from_directory(path, image_size, num_channels=3, seed=0, shuffle=True):
    """An unbatched tf.data.Dataset of (image, label) from one sub-folder per class.

    Images are resized to `image_size` (an int or (h, w)). Returns `(dataset, class_names)`.
    Raises a FileNotFoundError for a missing folder and a ValueError for one with no images.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"Data folder {str(path)!r} does not exist.")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    count = sum(
        1
        for d in class_dirs
        for f in d.rglob("*")
        if f.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not class_dirs or count == 0:
        raise ValueError(
            f"Data folder {str(path)!r} has no images: expected one sub-folder per class "
            f"holding {', '.join(IMAGE_EXTENSIONS)} files."
        )
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    color_mode = {1: "grayscale", 3: "rgb", 4: "rgba"}[num_channels]
    dataset = keras.utils.image_dataset_from_directory(
        str(path),
        labels="inferred",
        label_mode="int",
        color_mode=color_mode,
        batch_size=None,
        image_size=size,
        shuffle=shuffle,
        seed=seed,
        verbose=False,
    )
    return dataset, list(dataset.class_names)


# --------------------------------------------------------------------------- MixUp and CutMix


def mix_batch(images, labels, config, mixup_layer=None, cutmix_layer=None):
    """Applies MixUp and/or CutMix (one per batch, chosen at random) to one-hot labels."""
    tf = _tf()
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
    tf = _tf()
    size = int(dataset.cardinality())
    if size == tf.data.INFINITE_CARDINALITY:
        raise ValueError("The dataset is infinite; pass a finite dataset.")
    if size < 0:
        size = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
    return size


def _preprocess_fn(image_size, num_channels, training, resize_size=None):
    """Per-example: cast to float32 0..255, fix channels, resize (training: random crop)."""
    tf = _tf()

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
    tf = _tf()
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
