"""Loads hostile checkpoint files under a memory cap, in a process of its own; run by
tests/test_hostile_files.py.

    python tests/hostile_worker.py WORKDIR CASES.json MEMORY_CAP_MB FUZZ_CASES FUZZ_SECONDS

CASES.json maps case names to file paths; each is loaded with `ViT.from_preset`. Then
FUZZ_CASES seeded mutations (truncations, byte flips, shape / offset / dtype / config
edits) of valid tiny files in every format are loaded, for at most FUZZ_SECONDS. Prints
one JSON object: {"cases": {name: outcome}, "fuzz": [outcome, ...]}, where an outcome is
{"result": "loaded" | exception class name, "message": ..., "seconds": ...}.
"""

import io
import json
import os
import resource
import sys
import time
import warnings
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checkpoint_files as cf  # noqa: E402


def outcome(path, **overrides):
    """What `ViT.from_preset(path, **overrides)` does with a file: "loaded" (a model with
    finite weights) or the exception, with its message and the time taken."""
    from keras_vit import ViT

    start = time.time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ViT.from_preset(path, **overrides)
        values = [np.asarray(w) for w in model.get_weights()]
        if not all(np.isfinite(v).all() for v in values):
            result, message = "NonFiniteWeights", "the loaded model holds NaN or inf"
        else:
            result, message = "loaded", f"{model.count_params()} parameters"
    except MemoryError as e:
        result, message = "MemoryError", str(e)
    except Exception as e:  # noqa: BLE001 - the test asserts which kinds are allowed
        result, message = type(e).__name__, str(e)
    return {"result": result, "message": message[:500], "seconds": round(time.time() - start, 3)}


# ----------------------------------------------------------------------------- mutations


def _npz_members(path):
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _write_npz(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy_bytes(array, shape=None, descr=None):
    """A .npy member holding `array`'s bytes under a (possibly edited) header."""
    buffer = io.BytesIO()
    header = {"descr": descr or np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
              "shape": tuple(array.shape) if shape is None else shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + np.ascontiguousarray(array).tobytes()


_WEIRD_SHAPES = [(0,), (10**9, 0), (1,), (3, 3), (10**6,), (2**31, 2), ()]
_WEIRD_NUMBERS = [0, -1, 1, 3, 10**9, 2**62, 1.5, "8", None, [], True]


def mutate_npz(path, rng, out):
    members = _npz_members(path)
    name = sorted(members)[rng.integers(len(members))]
    with zipfile.ZipFile(path) as archive, archive.open(name) as f:
        array = np.lib.format.read_array(f)
    kind = rng.integers(4)
    if kind == 0:  # the header declares another shape than the bytes hold
        shape = _WEIRD_SHAPES[rng.integers(len(_WEIRD_SHAPES))]
        members[name] = _npy_bytes(array, shape=shape)
    elif kind == 1:  # a valid array of another shape
        members[name] = _npy_bytes(np.resize(array, _WEIRD_SHAPES[rng.integers(4)] or (1,)))
    elif kind == 2:  # another dtype
        dtype = ["float16", "float64", "int32", "bool", "complex64", "uint8"][rng.integers(6)]
        members[name] = _npy_bytes(array.astype(dtype))
    else:  # NaN or inf in the values
        bad = array.astype("float32").copy()
        bad.reshape(-1)[rng.integers(bad.size)] = [np.nan, np.inf][rng.integers(2)]
        members[name] = _npy_bytes(bad)
    _write_npz(out, members)


def mutate_safetensors(path, rng, out):
    data = open(path, "rb").read()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    body = data[8 + size:]
    name = sorted(k for k in header if k != "__metadata__")[rng.integers(len(header) - ("__metadata__" in header))]
    entry = header[name]
    kind = rng.integers(4)
    if kind == 0:
        entry["shape"] = list(_WEIRD_SHAPES[rng.integers(len(_WEIRD_SHAPES))])
    elif kind == 1:
        begin, end = entry["data_offsets"]
        entry["data_offsets"] = [[-8, end], [0, end], [begin, len(body) + 64],
                                 [end, begin], [begin, end + 4]][rng.integers(5)]
    elif kind == 2:
        entry["dtype"] = ["F16", "I32", "BOOL", "C64", "F8_E4M3", "Q99", 7, None][rng.integers(8)]
    else:
        entry[["shape", "data_offsets", "dtype"][rng.integers(3)]] = _WEIRD_NUMBERS[rng.integers(len(_WEIRD_NUMBERS))]
    text = json.dumps(header).encode()
    open(out, "wb").write(len(text).to_bytes(8, "little") + text + body)


def mutate_config(path, rng, out_dir):
    config = json.loads(open(os.path.join(os.path.dirname(path), "config.json")).read())
    field = ["image_size", "num_attention_heads", "intermediate_size", "layer_norm_eps",
             "hidden_act", "hidden_size"][rng.integers(6)]
    config[field] = (_WEIRD_NUMBERS + [float("nan"), 1e-30, -1e-6, "relu", 10**7])[rng.integers(16)]
    return _copy_with_config(path, config, out_dir)


def _copy_with_config(path, config, out_dir):
    """Writes `config` as out_dir/config.json beside a copy of the weights at `path`."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f)
    out = os.path.join(out_dir, "model.safetensors")
    open(out, "wb").write(open(path, "rb").read())
    return out


_TIMM_FIELDS = [("model_args", "num_heads"), ("model_args", "img_size"), ("model_args", "act_layer"),
                ("model_args", "global_pool"), ("model_args", "qk_norm"), ("pretrained_cfg", "mean"),
                ("pretrained_cfg", "input_size"), (None, "num_classes"), (None, "architecture"),
                (None, "model_args"), (None, "pretrained_cfg")]


def mutate_timm_config(path, rng, out_dir):
    config = json.loads(open(os.path.join(os.path.dirname(path), "config.json")).read())
    values = _WEIRD_NUMBERS + [float("nan"), "relu", "", [None, 1], {"a": 1}, [3, "x", 4], 10**7]
    for _ in range(3):
        section, field = _TIMM_FIELDS[rng.integers(len(_TIMM_FIELDS))]
        target = config if section is None else config.get(section)
        if isinstance(target, dict):
            target[field] = values[rng.integers(len(values))]
    return _copy_with_config(path, config, out_dir)


def fuzz_case(bases, rng, workdir, index):
    """Writes one mutated file; returns its format and path."""
    fmt = sorted(bases)[rng.integers(len(bases))]
    base = bases[fmt]
    suffix = os.path.splitext(base)[1]
    out = os.path.join(workdir, f"fuzz{index}_{fmt}{suffix}")
    data = open(base, "rb").read()
    kind = rng.integers(4)
    if kind == 0:  # truncation
        open(out, "wb").write(data[: rng.integers(len(data))])
    elif kind == 1:  # byte flips
        flipped = bytearray(data)
        for position in rng.integers(len(data), size=rng.integers(1, 9)):
            flipped[position] ^= 1 << rng.integers(8)
        open(out, "wb").write(bytes(flipped))
    elif fmt == "hf" and kind == 3:
        return fmt, mutate_config(base, rng, os.path.join(workdir, f"fuzz{index}_hf"))
    elif fmt == "timm_config" and kind >= 2:
        return fmt, mutate_timm_config(base, rng, os.path.join(workdir, f"fuzz{index}_timm"))
    elif suffix == ".npz":
        mutate_npz(base, rng, out)
    elif suffix == ".safetensors":
        mutate_safetensors(base, rng, out)
    else:  # .keras: truncation or flips only
        open(out, "wb").write(data[: rng.integers(len(data))])
    return fmt, out


def _overrides(fmt):
    return {"num_heads": cf.HEADS} if fmt == "timm" else {}  # timm files have no head count


def _timm_with_config(folder, params):
    """A timm file with a config.json as timm's save_for_hf writes it."""
    os.makedirs(folder, exist_ok=True)
    path = cf.write_timm(os.path.join(folder, "model.safetensors"), params)
    config = {"architecture": "vit_base_patch16_224", "num_classes": cf.CLASSES,
              "global_pool": "token",
              "model_args": {"img_size": 32, "patch_size": cf.PATCH, "embed_dim": cf.D, "depth": cf.LAYERS,
                             "num_heads": cf.HEADS, "num_classes": cf.CLASSES},
              "pretrained_cfg": {"tag": "test", "input_size": [3, 32, 32],
                                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def base_files(workdir):
    """One valid tiny file per format (the HF one with its config.json)."""
    p = cf.google_params()
    os.makedirs(os.path.join(workdir, "hf"), exist_ok=True)
    bases = {
        "vit_jax": cf.write_vit_jax(os.path.join(workdir, "base.npz"), p),
        "big_vision": cf.write_big_vision(os.path.join(workdir, "base_bv.npz"), p, scanned=True),
        "timm": cf.write_timm(os.path.join(workdir, "base.safetensors"), p),
        "hf": cf.write_hf(os.path.join(workdir, "hf"), p),
        "timm_config": _timm_with_config(os.path.join(workdir, "timm"), p),
    }
    from keras_vit import ViT

    keras_path = os.path.join(workdir, "base.keras")
    ViT(image_size=32, patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=16,
        num_classes=3).save(keras_path)
    bases["keras"] = keras_path
    return bases


def main(workdir, cases_path, cap_mb, fuzz_cases, fuzz_seconds):
    import keras_vit  # noqa: F401  (imports the backend before the cap is set)

    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize")) * 1024
    limit = vm + cap_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with open(cases_path) as f:
        cases = json.load(f)
    results = {"cases": {name: outcome(path) for name, path in cases.items()}, "fuzz": []}
    bases = base_files(workdir)
    results["bases"] = {fmt: outcome(path, **_overrides(fmt)) for fmt, path in bases.items()}
    rng = np.random.default_rng(0)
    deadline = time.time() + fuzz_seconds
    for index in range(fuzz_cases):
        if time.time() > deadline:
            break
        fmt, path = fuzz_case(bases, rng, workdir, index)
        results["fuzz"].append({"file": os.path.relpath(path, workdir), **outcome(path, **_overrides(fmt))})
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
