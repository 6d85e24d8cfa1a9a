"""Where the images come from: Fashion-MNIST as numpy, and unbatched tf.data datasets of
`(image, integer label)` from TensorFlow Datasets, a folder of images or numpy arrays.

    * `load_fashion_mnist`: Fashion-MNIST from its idx files (Debian's
      `dataset-fashion-mnist` package, a folder of your own, or TFDS as a fallback), read
      by `keras_vit.datafiles` (sizes bounded, hostile files refused). Pure numpy, so it
      also works where TensorFlow is not installed.
    * `from_tfds`: any TensorFlow Datasets dataset by name.
    * `from_directory`: a folder with one sub-folder of images per class.
    * `from_arrays`: numpy arrays.

`keras_vit.data` batches them (and re-exports every name here). TensorFlow is imported
lazily, by `require_tensorflow`: only the tf.data sources need it.
"""

import os
from pathlib import Path

import keras
import numpy as np

from keras_vit.datafiles import read_idx

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


def require_tensorflow():
    """The `tensorflow` module, or an ImportError that says what needs it and what does not."""
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


# --------------------------------------------------------------------------- tf.data sources


def from_arrays(images, labels):
    """An unbatched tf.data.Dataset of (image, label) from numpy arrays."""
    tf = require_tensorflow()
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

