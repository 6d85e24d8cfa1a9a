"""Input pipelines: idx files, numpy arrays, image folders and (mock) TFDS data."""

import gzip

import numpy as np
import pytest

from keras_vit import data

tf = pytest.importorskip("tensorflow")


def write_fashion_mnist(folder, train=48, test=24, gz=True, seed=0):
    """Tiny Fashion-MNIST idx files in the official format."""
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for split, n in (("train", train), ("test", test)):
        images, labels = data.FASHION_MNIST_FILES[split]
        data.write_idx(folder / (images + suffix), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        data.write_idx(folder / (labels + suffix), (np.arange(n) % 10).astype(np.uint8))
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_and_exact_format(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    data.write_idx(path, array)
    raw = gzip.open(path).read() if gz else path.read_bytes()
    # magic 0x00000803 (uint8, 3 dims), then big-endian sizes, then the bytes.
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert raw[4:16] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    np.testing.assert_array_equal(data.read_idx(path), array)


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an idx file"):
        data.read_idx(tmp_path / "bad")
    data.write_idx(tmp_path / "ok", np.zeros((4, 5), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "short")


def test_load_fashion_mnist_from_idx(tmp_path):
    write_fashion_mnist(tmp_path, gz=False)
    x, y = data.load_fashion_mnist("train", tmp_path)
    assert x.shape == (48, 28, 28, 1) and x.dtype == np.uint8
    assert y.dtype == np.int32 and list(y[:3]) == [0, 1, 2]
    x, y = data.load_fashion_mnist("test", tmp_path, limit=10)
    assert x.shape == (10, 28, 28, 1) and len(y) == 10


def test_load_fashion_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_fashion_mnist("train", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="Unknown Fashion-MNIST split"):
        data.load_fashion_mnist("validation", tmp_path)


def test_debian_fashion_mnist_if_installed():
    if data._find_idx(data.DEBIAN_FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte") is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    x, y = data.load_fashion_mnist("test", data.DEBIAN_FASHION_MNIST_DIR)
    assert x.shape == (10_000, 28, 28, 1) and np.bincount(y).tolist() == [1000] * 10


def test_training_pipeline_batches_and_augments(tmp_path):
    x, y = data.load_fashion_mnist("train", write_fashion_mnist(tmp_path))
    augment = data.AugmentConfig(translate=0.1, flip=True, random_erasing=0.5, rand_augment=1,
                                 mixup=0.5, cutmix=0.5)
    ds = data.build_pipeline(data.from_arrays(x, y), training=True, batch_size=16,
                             num_classes=10, augment=augment, seed=1)
    batches = list(ds)
    assert len(batches) == 3  # 48 // 16, remainder dropped
    images, labels = batches[0]
    assert images.shape == (16, 28, 28, 1) and images.dtype == tf.float32
    assert labels.shape == (16, 10)
    np.testing.assert_allclose(tf.reduce_sum(labels, -1).numpy(), 1.0, rtol=1e-5)
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0


def test_eval_pipeline_is_deterministic_and_keeps_every_example(tmp_path):
    x, y = data.load_fashion_mnist("test", write_fashion_mnist(tmp_path))
    ds = data.build_pipeline(data.from_arrays(x, y), training=False, batch_size=10,
                             num_classes=10, augment=data.AugmentConfig(flip=True))
    first = np.concatenate([b[0].numpy() for b in ds])
    second = np.concatenate([b[0].numpy() for b in ds])
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, x.astype("float32"))  # order kept, no augmentation
    assert [b[0].shape[0] for b in ds] == [10, 10, 4]


def test_resize_random_crop_and_channels():
    x = np.random.default_rng(0).integers(0, 256, (8, 20, 20, 1), dtype=np.uint8)
    ds = data.build_pipeline(data.from_arrays(x, np.zeros(8)), training=True, batch_size=4,
                             num_classes=10, image_size=16, resize_size=18, num_channels=3)
    assert next(iter(ds))[0].shape == (4, 16, 16, 3)
    x4 = np.zeros((8, 16, 16, 4), np.uint8)
    with pytest.raises(ValueError, match="4-channel images but the model takes 3"):
        data.build_pipeline(data.from_arrays(x4, np.zeros(8)), training=False, batch_size=4,
                            num_classes=10, num_channels=3)


def test_batch_size_larger_than_dataset():
    ds = data.from_arrays(np.zeros((5, 28, 28, 1), np.uint8), np.zeros(5))
    with pytest.raises(ValueError, match="larger than the dataset \\(5 examples\\)"):
        data.build_pipeline(ds, training=True, batch_size=8, num_classes=10)


def test_from_directory(tmp_path):
    import keras

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            keras.utils.save_img(tmp_path / name / f"{i}.png",
                                 np.full((10, 12, 3), 40 * i, np.uint8))
    ds, classes = data.from_directory(tmp_path, image_size=8)
    assert classes == ["cat", "dog"]
    batch = next(iter(data.build_pipeline(ds, training=False, batch_size=6, num_classes=2)))
    assert batch[0].shape == (6, 8, 8, 3) and batch[1].shape == (6, 2)


def test_from_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.from_directory(tmp_path / "missing", image_size=8)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="has no images"):
        data.from_directory(tmp_path, image_size=8)


def test_from_tfds_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        ds, info = data.from_tfds("cifar10", "train")
        batch = next(iter(data.build_pipeline(
            ds, training=True, batch_size=4, num_classes=10, image_size=16, resize_size=20,
            augment=data.AugmentConfig(flip=True, random_erasing=0.5))))
        assert info.features["label"].num_classes == 10
        assert batch[0].shape == (4, 16, 16, 3)
        with pytest.raises(ValueError, match="Unknown TFDS dataset 'cifar11'"):
            data.from_tfds("cifar11", "train")
