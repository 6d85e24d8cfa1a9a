"""Hostile data files (`.npy`, `.npz`, idx and idx.gz) for tests/test_hostile_files.py (through
tests/hostile_worker.py, under a memory cap) and tests/test_datafiles.py: tiny files that
declare huge arrays, compression bombs, pickles, and seeded mutations of valid files."""

import gzip
import io
import os
import struct
import zipfile

import numpy as np

GIB = 1 << 30


def damage(data, kind, rng):
    """`data` cut short (kind 0) or with one to eight bits flipped (kind 1)."""
    if kind == 0:
        return data[: rng.integers(len(data))]
    flipped = bytearray(data)
    for position in rng.integers(len(data), size=rng.integers(1, 9)):
        flipped[position] ^= 1 << rng.integers(8)
    return bytes(flipped)


def npy_bytes(array, shape=None, descr=None, fortran=False):
    """A .npy file holding `array`'s bytes under a (possibly edited) header."""
    buffer = io.BytesIO()
    header = {"descr": descr or np.lib.format.dtype_to_descr(array.dtype),
              "fortran_order": fortran, "shape": tuple(array.shape) if shape is None else shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + np.ascontiguousarray(array).tobytes()


def idx_header(shape, code=0x08):
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def gzip_of_zeros(path, header, nbytes, chunk=16 << 20):
    """A gzip file of `header` then `nbytes` zero bytes, made fast as a chain of gzip members
    (the format allows several; every reader decompresses them all, one after the other)."""
    member = gzip.compress(bytes(chunk), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(header))
        for _ in range(nbytes // chunk):
            f.write(member)
    return str(path)


def bomb_files(folder):
    """{case: path} of files whose headers or contents would need gigabytes if believed."""
    folder = str(folder)
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    files = {"idx_gz_1gib_of_zeros": gzip_of_zeros(
        path("bomb-idx3-ubyte.gz"), idx_header((GIB // 1024, 32, 32)), GIB)}
    files["idx_gz_10_bytes_declared_1gib_held"] = gzip_of_zeros(
        path("long-idx1-ubyte.gz"), idx_header((10,)), GIB)
    with open(path("huge-idx3-ubyte"), "wb") as f:
        f.write(idx_header((2**20, 2**12, 2**12)) + bytes(1000))
    files["idx_declaring_16tib"] = path("huge-idx3-ubyte")
    with open(path("huge.npy"), "wb") as f:  # a 1 KiB file declaring 8.9 GiB
        f.write(npy_bytes(np.zeros(224, "float32"), shape=(80_000, 30_000)))
    files["npy_1kb_declaring_8_9gib"] = path("huge.npy")
    with open(path("random.npy"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(1000))
    files["npy_of_random_bytes"] = path("random.npy")
    with zipfile.ZipFile(path("bomb.npz"), "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("images.npy", "w", force_zip64=True) as f:
            f.write(npy_bytes(np.zeros(0, "uint8"), shape=(GIB // 1024, 32, 32)))
            for _ in range(64):
                f.write(bytes(16 << 20))
    files["npz_zip_bomb_1gib"] = path("bomb.npz")
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path("pickle.npz"), "w") as archive:
        archive.writestr("images.npy", buffer.getvalue())
    files["npz_holding_a_pickle"] = path("pickle.npz")
    return files


def data_bases(folder):
    """One valid tiny file per data format."""
    from keras_vit.datafiles import write_idx

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    labels = np.arange(6, dtype=np.int32)
    bases = {"npy": os.path.join(folder, "base.npy"),
             "npy_fortran": os.path.join(folder, "base_fortran.npy"),
             "npz": os.path.join(folder, "base.npz"),
             "npz_stored": os.path.join(folder, "base_stored.npz"),
             "idx": os.path.join(folder, "base-idx3-ubyte"),
             "idx_gz": os.path.join(folder, "base-idx1-ubyte.gz")}
    np.save(bases["npy"], images)
    np.save(bases["npy_fortran"], np.asfortranarray(images.astype("float32")))
    np.savez_compressed(bases["npz"], images=images, labels=labels)
    np.savez(bases["npz_stored"], x=images, y=labels)
    write_idx(bases["idx"], images)
    write_idx(bases["idx_gz"], labels)
    return bases


_SHAPES = [(0,), (10**9, 0), (1,), (3, 3), (10**6,), (2**31, 2), (), (-1, -384), (6, 8, 8, 1)]
_DESCRS = ["|O", "<U3", ">f8", "|V8", "<c8", "|b1", "<M8[s]", "[('a', '<f4')]", "<f2"]


def _edit_npy(data, rng):
    """A .npy whose header declares another shape, dtype or order than its bytes hold."""
    array = np.lib.format.read_array(io.BytesIO(data))
    kind = rng.integers(3)
    if kind == 0:
        return npy_bytes(array, shape=_SHAPES[rng.integers(len(_SHAPES))])
    if kind == 1:
        return npy_bytes(array, descr=_DESCRS[rng.integers(len(_DESCRS))])
    return npy_bytes(array, fortran=True)


def _edit_idx(raw, rng):
    """An idx file with another type code, dimension count or size, or more or fewer bytes."""
    kind = rng.integers(4)
    if kind == 0:
        return raw[:2] + bytes([[0x00, 0x0B, 0x0C, 0x0E, 0x99][rng.integers(5)]]) + raw[3:]
    if kind == 1:
        return raw[:3] + bytes([[0, 1, 2, 4, 255][rng.integers(5)]]) + raw[4:]
    if kind == 2:
        position = 4 + 4 * rng.integers(raw[3])
        size = [0, 1, 7, 2**31, 2**32 - 1][rng.integers(5)]
        return raw[:position] + struct.pack(">I", size) + raw[position + 4:]
    return raw + bytes(int(rng.integers(1, 100))) if rng.integers(2) else raw[:-1]


def mutate_data(fmt, base, rng, out):
    """Writes a mutated copy of the data file `base` (of format `fmt`) to `out`."""
    data = open(base, "rb").read()
    kind = rng.integers(4)
    if kind < 2:
        data = damage(data, kind, rng)
    elif fmt.startswith("npy"):
        data = _edit_npy(data, rng)
    elif fmt.startswith("npz"):
        with zipfile.ZipFile(base) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        name = sorted(members)[rng.integers(len(members))]
        members[name] = _edit_npy(members[name], rng)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, value in members.items():
                archive.writestr(key, value)
        return out
    elif fmt == "idx_gz":
        data = gzip.compress(_edit_idx(gzip.decompress(data), rng))
    else:
        data = _edit_idx(data, rng)
    with open(out, "wb") as f:
        f.write(data)
    return out
