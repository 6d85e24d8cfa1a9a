"""Input pipelines: idx files, numpy arrays, image folders and (mock) TFDS data."""

import gzip

import keras
import numpy as np
import pytest

from keras_vit import data
from tiny import write_fashion_mnist

tf = pytest.importorskip("tensorflow")


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
    try:
        x, y = data.load_fashion_mnist("test", data.DEBIAN_FASHION_MNIST_DIR)
    except FileNotFoundError:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
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


# --------------------------------------------------------------------------- augmentation
# Each augmentation must change the pixels it is asked to, in training only: an augmenter
# that does nothing (or MixUp/CutMix that pass batches through) fails these.


def distinct_images(n=16, size=28, seed=0):
    """Float images whose every pixel differs (1..255, no zeros: zero fill shows)."""
    return np.random.default_rng(seed).uniform(1, 255, (n, size, size, 1)).astype("float32")


def shift(image, dy, dx):
    """`image` moved down by dy and right by dx pixels, zero-filled."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    src = image[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def is_shift_of(out, image, largest):
    return any(np.array_equal(out, shift(image, dy, dx))
               for dy in range(-largest, largest + 1) for dx in range(-largest, largest + 1))


AUGMENTATIONS = {
    "translate": dict(translate=0.2),
    "flip": dict(flip=True),
    "random_erasing": dict(random_erasing=1.0),
}  # RandAugment: in the pipeline below (eager under JAX it compiles op by op, slowly)


def test_no_augmentation_asked_means_no_layers():
    assert data.make_augmenter(data.AugmentConfig(mixup=1.0, cutmix=1.0)) == []


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_changes_pixels_in_training_only(name):
    layers = data.make_augmenter(data.AugmentConfig(**AUGMENTATIONS[name]), seed=1)
    assert len(layers) == 1
    x = distinct_images()
    out = keras.ops.convert_to_numpy(data.augment_batch(layers, x))
    assert out.shape == x.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 255.0
    changed = np.array([not np.array_equal(o, i) for o, i in zip(out, x)])
    for layer in layers:  # at inference the layers pass images through
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    if name == "flip":  # each image as it was or mirrored, some of each
        mirrored = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)])
        assert (mirrored | ~changed).all() and 0 < mirrored.sum() < len(x)
    elif name == "translate":  # shifted by up to 20 % of 28 px, zero-filled
        assert changed.sum() >= len(x) // 2
        assert all(is_shift_of(o, i, largest=6) for o, i in zip(out, x))
    else:  # random erasing with probability 1: a box (2-33 % of the area) per image
        fractions = (out != x).mean(axis=(1, 2, 3))
        assert (fractions > 0).all() and (fractions < 0.4).all(), fractions


def one_batch(images, augment, seed=0):
    """The training pipeline's single batch of `images` (labels 0..n-1: one class each)."""
    n = len(images)
    ds = data.build_pipeline(data.from_arrays(images, np.arange(n)), training=True,
                             batch_size=n, num_classes=n, augment=augment, seed=seed)
    (batch,) = list(ds)
    return batch[0].numpy(), batch[1].numpy()


def test_training_pipeline_augments_each_image():
    x = distinct_images()
    images, labels = one_batch(x, data.AugmentConfig(flip=True))
    originals = x[labels.argmax(-1)]  # the pipeline shuffles; the labels say which is which
    np.testing.assert_array_equal(labels.max(-1), 1.0)  # no MixUp asked: one-hot
    mirrored = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(images, originals)])
    same = np.array([np.array_equal(o, i) for o, i in zip(images, originals)])
    assert (mirrored | same).all() and 0 < mirrored.sum() < len(x)
    plain, plain_labels = one_batch(x, None)
    np.testing.assert_array_equal(plain, x[plain_labels.argmax(-1)])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="in tf.data RandAugment runs on TensorFlow whatever the backend, and "
                           "under JAX it takes ~20 s to set up: once is enough")
def test_rand_augment_changes_most_images():
    x = distinct_images()
    images, labels = one_batch(x, data.AugmentConfig(rand_augment=2))
    originals = x[labels.argmax(-1)]
    changed = [not np.allclose(o, i, atol=0.5) for o, i in zip(images, originals)]
    assert sum(changed) >= len(x) // 2
    assert 0.0 <= images.min() and images.max() <= 255.0


def test_mixup_mixes_images_and_labels_alike():
    x = distinct_images()
    images, labels = one_batch(x, data.AugmentConfig(mixup=1.0))
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-5)
    assert (labels >= 0).all() and (labels.max(-1) < 0.99).sum() >= 4  # mixed, not one-hot
    # Each image is the labels' blend of the originals (one class per original image).
    expected = np.einsum("bc,chwk->bhwk", labels, x)
    np.testing.assert_allclose(images, expected, rtol=1e-4, atol=1e-2)


def test_cutmix_pastes_boxes_and_weighs_labels_by_area():
    x = distinct_images()
    images, labels = one_batch(x, data.AugmentConfig(cutmix=1.0))
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-5)
    assert (labels.max(-1) < 0.99).sum() >= 4  # mixed, not one-hot
    for image, label in zip(images, labels):
        sources = np.flatnonzero(label > 1e-6)
        from_source = np.stack([image == x[c] for c in sources])  # (sources, h, w, 1)
        assert from_source.any(0).all()  # every pixel is one of the mixed images' pixel
        np.testing.assert_allclose(from_source.mean(axis=(1, 2, 3)), label[sources], atol=0.1)


def test_array_batches_are_reshuffled_full_one_hot_batches():
    images = np.arange(10, dtype="uint8")[:, None, None, None] * np.ones((1, 2, 3, 1), "uint8")
    labels = np.arange(10) % 3  # image i shows the number i, its label is i % 3
    batches = data.ArrayBatches(images, labels, batch_size=4, num_classes=3, seed=0)
    assert len(batches) == 2  # 10 // 4: full batches only
    orders = []
    for _ in range(2):
        order = []
        for index in range(len(batches)):
            x, y = batches[index]
            assert x.shape == (4, 2, 3, 1) and x.dtype == np.float32 and y.dtype == np.float32
            shown = x[:, 0, 0, 0].astype(int)
            np.testing.assert_array_equal(y, np.eye(3)[shown % 3])  # labels follow images
            order += shown.tolist()
        assert len(set(order)) == 8  # no image twice in an epoch
        orders.append(order)
        batches.on_epoch_end()
    assert orders[0] != orders[1]  # reshuffled
    in_order = data.ArrayBatches(images, labels, batch_size=5, num_classes=3, shuffle=False)
    assert in_order[1][0][:, 0, 0, 0].tolist() == [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="larger than the dataset"):
        data.ArrayBatches(images, labels, batch_size=11, num_classes=3)
