"""Data files read as hostile input (`keras_vit.datafiles`, through `load_arrays` as `explain`
and `export` use it): good files read as NumPy reads them, and malformed, oversized or
pickled files are a one-line ValueError naming the file, checked before any allocation.
The memory-bomb versions (gigabytes declared or held) run under a memory cap in
tests/test_hostile_files.py."""

import gzip
import io
import os
import zipfile

import numpy as np
import pytest

from hostile_data import idx_header, npy_bytes
from keras_vit import data, datafiles
from keras_vit.__main__ import main as keras_vit_main
from keras_vit.export import load_arrays

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _one_line_naming(error, path):
    message = str(error.value)
    assert repr(os.fspath(path)) in message, message
    assert "\n" not in message and "pickle=" not in message, message
    return message


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.asfortranarray(np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)),
    np.arange(6, dtype=">i4"),
    np.array(3.5),
    np.zeros((0, 5), np.int64),
    np.array([True, False]),
])
def test_npy_files_read_as_numpy_reads_them(tmp_path, array):
    path = tmp_path / "a.npy"
    np.save(path, array)
    images, labels = load_arrays(path)
    reference = np.load(path)
    assert labels is None and images.dtype == reference.dtype and images.shape == reference.shape
    np.testing.assert_array_equal(images, reference)
    assert images.flags.writeable


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_files_read_as_numpy_reads_them(tmp_path, save):
    path = tmp_path / "a.npz"
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    save(path, x_test=images, y_test=np.arange(5), unused=np.zeros(3))
    got_images, got_labels = load_arrays(path)
    with np.load(path) as reference:
        np.testing.assert_array_equal(got_images, reference["x_test"])
        np.testing.assert_array_equal(got_labels, reference["y_test"])
    assert datafiles.npz_keys(path) == ["x_test", "y_test", "unused"]


def test_fashion_mnist_idx_gz_read_as_gzip_and_numpy_read_them():
    path = os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz")
    if not os.path.isfile(path):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    raw = gzip.decompress(open(path, "rb").read())
    reference = np.frombuffer(raw[16:], np.uint8).reshape(10_000, 28, 28)
    np.testing.assert_array_equal(data.read_idx(path), reference)
    np.testing.assert_array_equal(load_arrays(path)[0], reference)


def test_idx_of_big_endian_values_reads_native(tmp_path):
    values = np.array([[-70000, 1], [2, 2**30]], dtype=np.int32)
    path = tmp_path / "v-idx2-int.gz"
    path.write_bytes(gzip.compress(idx_header((2, 2), code=0x0C) + values.astype(">i4").tobytes()))
    got = datafiles.read_idx(path)
    assert got.dtype == np.dtype("int32") and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_npy_of_random_bytes_is_not_advised_to_unpickle(tmp_path):
    path = tmp_path / "random.npy"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ValueError) as error:
        load_arrays(path)
    assert "is not a .npy array (the magic string is not correct" in _one_line_naming(error, path)


@pytest.mark.parametrize("descr, kind", [("|O", "object"), ("<U3", "<U3"), ("|V8", "|V8")])
def test_npy_and_npz_of_objects_or_text_are_refused(tmp_path, descr, kind):
    array = np.zeros(3, np.float64)
    (tmp_path / "a.npy").write_bytes(npy_bytes(array, descr=descr))
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as archive:
        archive.writestr("images.npy", npy_bytes(array, descr=descr))
    for path in (tmp_path / "a.npy", tmp_path / "a.npz"):
        with pytest.raises(ValueError) as error:
            load_arrays(path)
        assert f"holds {kind} values, not numbers" in _one_line_naming(error, path)


def test_npy_declaring_more_than_it_holds_is_refused(tmp_path):
    path = tmp_path / "a.npy"
    path.write_bytes(npy_bytes(np.zeros(10, np.float32), shape=(10, 1000)))
    with pytest.raises(ValueError) as error:
        load_arrays(path)
    assert "declares shape (10, 1000) (40000 bytes) but holds 40 bytes" in _one_line_naming(error, path)


@pytest.mark.parametrize("held, message", [
    (b"\0" * 1000, "holds more data than the 10 bytes its header declares"),
    (b"\0" * 9, "ends after 9 of the 10 bytes its header declares: truncated or corrupt"),
], ids=["more", "less"])
def test_idx_gz_stream_stops_at_the_declared_size(tmp_path, held, message):
    path = tmp_path / "a-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header((10,)) + held))
    with pytest.raises(ValueError) as error:
        data.read_idx(path)
    assert message in _one_line_naming(error, path)


def test_idx_gz_declaring_more_than_its_size_can_hold_is_refused(tmp_path):
    path = tmp_path / "a-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header((1 << 19, 32, 32))))  # 512 MiB in ~40 bytes
    with pytest.raises(ValueError) as error:
        load_arrays(path)
    assert "declares 536870912 bytes in" in _one_line_naming(error, path)
    assert "more than 64x" in str(error.value)


def test_npz_members_are_checked_against_the_file_size(tmp_path):
    """A zip's directory that declares a 3.75 GiB member in a file of a few hundred bytes (a
    zip bomb declares its size honestly: tests/test_hostile_files.py reads a real one)."""
    path = tmp_path / "bomb.npz"
    np.savez(path, images=np.zeros(10, np.uint8))
    raw = bytearray(path.read_bytes())
    directory = raw.index(b"PK\x01\x02")
    raw[directory + 24: directory + 28] = (0xF0000000).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as error:
        load_arrays(path)
    assert "the archive declares 4026531840 bytes in" in _one_line_naming(error, path)


def _write_images(tmp_path, nbytes=1000):
    np.save(tmp_path / "a.npy", np.zeros(nbytes, np.uint8))
    np.savez(tmp_path / "a.npz", images=np.zeros(nbytes, np.uint8))
    data.write_idx(tmp_path / "a-idx1-ubyte.gz", np.zeros(nbytes, np.uint8))
    return [tmp_path / "a.npy", tmp_path / "a.npz", tmp_path / "a-idx1-ubyte.gz"]


def test_data_files_over_the_limit_are_refused(tmp_path, monkeypatch):
    for path in _write_images(tmp_path):
        assert load_arrays(path, max_bytes=1000)[0].shape == (1000,)
        with pytest.raises(ValueError) as error:
            load_arrays(path, max_bytes=999)
        assert "more than the limit of 999" in _one_line_naming(error, path)
        monkeypatch.setenv("KERAS_VIT_MAX_DATA_BYTES", "999")
        with pytest.raises(ValueError, match="KERAS_VIT_MAX_DATA_BYTES to read larger files"):
            load_arrays(path)
        monkeypatch.delenv("KERAS_VIT_MAX_DATA_BYTES")


@pytest.mark.parametrize("value", ["0", "-1", "lots", "1e9"])
def test_data_limit_must_be_a_positive_whole_number(tmp_path, monkeypatch, value):
    path = _write_images(tmp_path)[0]
    monkeypatch.setenv("KERAS_VIT_MAX_DATA_BYTES", value)
    with pytest.raises(ValueError, match=f"KERAS_VIT_MAX_DATA_BYTES must be a positive whole "
                                         f"number of bytes, got '{value}'"):
        load_arrays(path)
    monkeypatch.delenv("KERAS_VIT_MAX_DATA_BYTES")
    for bad in (0, 1.5, True, "1000"):
        with pytest.raises(ValueError, match="max_bytes must be a positive integer"):
            load_arrays(path, max_bytes=bad)


def test_explain_reports_a_bad_data_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "random.npy"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    assert keras_vit_main(["explain", "ti16", "--images", str(path),
                           "--output-dir", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and repr(str(path)) in lines[0], lines
    assert "pickle" not in lines[0]


def test_zip_members_other_than_arrays_are_refused(tmp_path):
    path = tmp_path / "a.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", buffer.getvalue())
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("images.npy", buffer.getvalue())
    with pytest.raises(ValueError) as error:
        load_arrays(path)
    assert "array 'images' is stored twice" in _one_line_naming(error, path)
