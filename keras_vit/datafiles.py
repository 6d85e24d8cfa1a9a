"""Reading data files as hostile input: `.npy`, `.npz` and idx files (optionally gzipped).

Before anything is allocated, the bytes an array header declares are checked against the
file and against a cap. An uncompressed array must hold exactly the bytes its header
declares; a compressed one (a `.gz`, a `.npz` member) may declare at most
`MAX_COMPRESSION_RATIO` times the compressed size on disk plus `COMPRESSION_SLACK` (so a
zip or gzip bomb is refused), and it is decompressed in a stream that stops at the declared
size and refuses a stream holding more or less. What one call reads may not exceed
`max_bytes=`, else $KERAS_VIT_MAX_DATA_BYTES, else `DEFAULT_MAX_BYTES` (4 GiB). Only arrays
of numbers are read: no pickles, no Python objects. Any failure is a one-line ValueError
that names the file.

The checkpoint reader (`keras_vit.weights.files`) reads `.npz` members with the same
functions, without the cap (a checkpoint is as big as its model).
"""

import gzip
import math
import os
import struct
import zipfile

import numpy as np

from keras_vit.arguments import check_positive

DEFAULT_MAX_BYTES = 4 << 30
MAX_COMPRESSION_RATIO = 64  # images and weights compress a few times, a bomb a thousandfold
COMPRESSION_SLACK = 256 << 20
_CHUNK = 16 << 20

# idx type codes -> numpy dtypes (big-endian on disk).
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def max_data_bytes(max_bytes=None):
    """`max_bytes`, else $KERAS_VIT_MAX_DATA_BYTES, else DEFAULT_MAX_BYTES, checked > 0."""
    if max_bytes is not None:
        check_positive(max_bytes=max_bytes)
        return max_bytes
    text = os.environ.get("KERAS_VIT_MAX_DATA_BYTES")
    if text is None:
        return DEFAULT_MAX_BYTES
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError(
            f"KERAS_VIT_MAX_DATA_BYTES must be a positive whole number of bytes, got {text!r}."
        )
    return int(text)


def _reading(path, read, *args):
    """`read(path, *args)`, any failure of a hostile file becoming one ValueError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No data file at {path!r}.")
    try:
        return read(path, *args)
    except MemoryError:
        raise
    except Exception as e:  # hostile bytes fail in many ways; all mean "not a valid file"
        reason = " ".join(str(e).split()).rstrip(".") or type(e).__name__
        raise ValueError(f"Could not read the data file {path!r}: {reason}.") from e


def _check_ratio(declared, stored, what):
    """Refuses `declared` uncompressed bytes that `stored` compressed bytes cannot hold
    (more than MAX_COMPRESSION_RATIO times, plus the slack): a bomb or a corrupt file."""
    if declared > MAX_COMPRESSION_RATIO * stored + COMPRESSION_SLACK:
        raise ValueError(
            f"{what} declares {declared} bytes in {stored} compressed bytes, more than "
            f"{MAX_COMPRESSION_RATIO}x: a compression bomb or a corrupt file"
        )


def _check_limit(declared, limit, what):
    if declared > limit:
        raise ValueError(
            f"{what} declares {declared} bytes, more than the limit of {limit} (pass "
            "max_bytes= or set KERAS_VIT_MAX_DATA_BYTES to read larger files)"
        )


def _read_exactly(f, nbytes, what):
    """`nbytes` bytes of the stream `f` into a new uint8 array, then checks it has no more."""
    buffer = np.empty(nbytes, np.uint8)
    view, position = memoryview(buffer), 0
    while position < nbytes:
        count = f.readinto(view[position: position + _CHUNK])
        if not count:
            raise ValueError(f"{what} ends after {position} of the {nbytes} bytes its header "
                             "declares: truncated or corrupt")
        position += count
    if f.read(1):
        raise ValueError(f"{what} holds more data than the {nbytes} bytes its header declares")
    return buffer


def read_npy_stream(f, size, what, limit=None):
    """The array of a `.npy` stream of `size` bytes, after checking that its header
    declares numbers (no Python objects) in exactly the bytes that follow it, at most
    `limit` of them."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError as e:
        raise ValueError(f"{what} is not a .npy array ({e})") from e
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"{what} is a .npy array of unknown version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else (
        np.lib.format.read_array_header_2_0)
    try:
        shape, fortran, dtype = read_header(f)
    except (ValueError, SyntaxError, TypeError) as e:
        raise ValueError(f"{what} has a malformed .npy header ({e})") from e
    if dtype.hasobject or dtype.kind not in "biufc":
        raise ValueError(f"{what} holds {dtype} values, not numbers (Python objects and "
                         "pickles are never read)")
    if any(d < 0 for d in shape):
        raise ValueError(f"{what} declares the shape {shape}")
    expected = math.prod(shape) * dtype.itemsize
    if f.tell() + expected != size:
        raise ValueError(
            f"{what} declares shape {shape} ({expected} bytes) but holds "
            f"{size - f.tell()} bytes"
        )
    if limit is not None:
        _check_limit(expected, limit, what)
    array = _read_exactly(f, expected, what).view(dtype)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def npz_members(archive, size, what):
    """{key: ZipInfo} of a `.npz` zip `archive` (a file of `size` bytes), after checking
    that every member is a uniquely named `.npy` and that all together are no zip bomb."""
    members = {}
    for member in archive.infolist():
        if not member.filename.endswith(".npy"):
            raise ValueError(f"member {member.filename!r} is not a .npy array")
        key = member.filename[: -len(".npy")]
        if key in members:
            raise ValueError(f"array {key!r} is stored twice")
        members[key] = member
    _check_ratio(sum(m.file_size for m in members.values()), size, what)
    return members


def _npz(path, keys, limit):
    with zipfile.ZipFile(path) as archive:
        members = npz_members(archive, os.path.getsize(path), "the archive")
        if keys is None:
            return list(members)
        missing = [k for k in keys if k not in members]
        if missing:
            raise ValueError(f"it has no array {missing[0]!r} (it holds {sorted(members)})")
        arrays = {}
        for key in keys:  # together at most `limit` bytes
            with archive.open(members[key]) as f:
                arrays[key] = read_npy_stream(f, members[key].file_size, f"array {key!r}", limit)
            limit -= arrays[key].nbytes
        return arrays


def npz_keys(path):
    """The names of the arrays of a `.npz` file, checked as `read_npz` checks them."""
    return _reading(path, _npz, None, None)


def read_npz(path, keys, max_bytes=None):
    """{key: array} of the arrays `keys` of a `.npz` file, bounded as the module says."""
    return _reading(path, _npz, list(keys), max_data_bytes(max_bytes))


def _npy(path, limit):
    with open(path, "rb") as f:
        return read_npy_stream(f, os.path.getsize(path), "the file", limit)


def read_npy(path, max_bytes=None):
    """The array of a `.npy` file, bounded as the module says (never unpickled)."""
    return _reading(path, _npy, max_data_bytes(max_bytes))


def _idx(path, limit):
    size = os.path.getsize(path)
    gz = path.endswith(".gz")
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
            raise ValueError(f"not an idx file (bad magic number {magic!r})")
        dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
        dims = f.read(4 * ndim)
        if len(dims) != 4 * ndim:
            raise ValueError(f"truncated or corrupt: the header is cut short ({ndim} dimensions)")
        shape = struct.unpack(f">{ndim}I", dims)
        expected = math.prod(shape) * dtype.itemsize
        what = f"the header (shape {shape})"
        if gz:
            _check_ratio(expected, size, what)
        elif 4 + 4 * ndim + expected != size:
            raise ValueError(f"truncated or corrupt: its header says shape {shape} ({expected} "
                             f"bytes), found {size - 4 - 4 * ndim} bytes")
        _check_limit(expected, limit, what)
        array = _read_exactly(f, expected, f"the idx data (shape {shape})").view(dtype)
    if not dtype.isnative:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array.reshape(shape)


def read_idx(path, max_bytes=None):
    """The array of an idx file (gzipped if its name ends in .gz), bounded as the module says."""
    return _reading(path, _idx, max_data_bytes(max_bytes))


def write_idx(path, array):
    """Writes `array` as an idx file, gzipped if `path` ends in .gz (used by the tests)."""
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"idx can't store dtype {array.dtype}.")
    code = codes[dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = array.astype(_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(str(path), "wb") as f:
        f.write(header + payload)
