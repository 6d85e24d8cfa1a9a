"""Reading checkpoint files as hostile input: `.npz`, `.safetensors` and `config.json`.

Every size is checked against the bytes really in the file before anything is allocated:
a `.npz` member must hold exactly the bytes its array header declares (and the declared
total is bounded by the file's size on disk, so a zip bomb is refused), a `.safetensors`
file is validated by the `safetensors` package (offsets in bounds, contiguous, not
overlapping, the whole file covered) and its header checked for duplicate names, and a
JSON config is size-limited. Any failure is a ValueError that names the file.
"""

import json
import os
import zipfile

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy, for safetensors' BF16)
import numpy as np

from keras_vit.datafiles import npz_members, read_npy_stream

MAX_CONFIG_BYTES = 1 << 20

MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors package's own limit
_SAFETENSORS_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32",
                       "U16", "U8", "BOOL"}


def read_tensors(path):
    """Returns {key: array} of a `.npz` or `.safetensors` file (told apart by its bytes)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04":
            return _read_npz(path)
        return _read_safetensors(path)
    except MemoryError:
        raise
    except Exception as e:  # hostile bytes fail in many ways; all mean "not a valid file"
        raise ValueError(
            f"Could not read the checkpoint {path!r}: {e}. The file is not a valid "
            ".npz/.safetensors checkpoint (truncated, corrupt or another kind of file); if "
            "it was downloaded, delete it and download it again."
        ) from e


def _read_npz(path):
    with zipfile.ZipFile(path) as archive:
        tensors = {}
        for key, member in npz_members(archive, os.path.getsize(path), "the checkpoint").items():
            with archive.open(member) as f:
                tensors[key] = read_npy_stream(f, member.file_size, f"array {member.filename!r}")
        return tensors


def _read_safetensors(path):
    from safetensors import safe_open

    names = _check_safetensors_header(path)
    tensors = {}
    with safe_open(path, framework="numpy") as f:  # validates the offsets
        for key in names:
            array = f.get_tensor(key)
            tensors[key] = array.astype(np.float32) if array.dtype.name == "bfloat16" else array
    return tensors


def _check_safetensors_header(path):
    """The tensor names of a safetensors file, after checking what the `safetensors`
    package lets through: duplicate names (it keeps the last) and the dtypes."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        if not 0 < header_size <= min(size - 8, MAX_SAFETENSORS_HEADER):
            raise ValueError(f"header of {header_size} bytes in a {size}-byte file")
        header = f.read(header_size)

    def unique(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError(f"the header names a tensor twice ({sorted(keys)[:5]}...)")
        return dict(items)

    header = json.loads(header, object_pairs_hook=unique)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    names = [k for k in header if k != "__metadata__"]
    for key in names:
        dtype = header[key].get("dtype") if isinstance(header[key], dict) else None
        if dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {key!r} has dtype {dtype!r}, which keras_vit does not "
                             f"read (it reads {', '.join(sorted(_SAFETENSORS_DTYPES))})")
    return names


def read_json(path, what="config"):
    """A JSON object from `path`, size-limited; a ValueError names the file otherwise."""
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"The {what} {path!r} has {size} bytes: too large for a config file.")
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read())
    except (ValueError, RecursionError) as e:
        raise ValueError(f"The {what} {path!r} is not valid JSON ({e}).") from e
    if not isinstance(value, dict):
        raise ValueError(f"The {what} {path!r} holds a {type(value).__name__}, not a JSON object.")
    return value
