"""Loads hostile checkpoint and data files under a memory cap, in a process of its own; run
by tests/test_hostile_files.py.

    python tests/hostile_worker.py WORKDIR CASES.json MEMORY_CAP_MB FUZZ_CASES FUZZ_SECONDS

CASES.json holds {"checkpoints": {case: path}, "data": {case: path}}: each checkpoint is
loaded with `ViT.from_preset`, each data file with `keras_vit.export.load_arrays` (the
reader of `keras-vit explain` and `export`). Then FUZZ_CASES seeded mutations
(truncations, byte flips, shape / offset / dtype / config edits) of valid tiny files in
every checkpoint format are loaded, for at most FUZZ_SECONDS, and FUZZ_CASES mutations of
valid tiny data files (.npy, .npz, idx, idx.gz) are read. Prints one JSON object:
{"cases": {name: outcome}, "data_cases": {name: outcome}, "fuzz": [outcome, ...],
"data_fuzz": [outcome, ...], "bases": ..., "data_bases": ...}, where an outcome is
{"result": "loaded" | exception class name, "message": ..., "seconds": ...}.
"""

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
import hostile_data  # noqa: E402


def _load_model(path, **overrides):
    """"loaded" (a model with finite weights) or why not."""
    from keras_vit import ViT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ViT.from_preset(path, **overrides)
    values = [np.asarray(w) for w in model.get_weights()]
    if not all(np.isfinite(v).all() for v in values):
        return "NonFiniteWeights", "the loaded model holds NaN or inf"
    return "loaded", f"{model.count_params()} parameters"


def _load_data(path):
    from keras_vit.export import load_arrays

    images, labels = load_arrays(path)
    return "loaded", f"images {images.shape} {images.dtype}, labels {getattr(labels, 'shape', None)}"


def outcome(path, load=_load_model, **overrides):
    """What `load(path, **overrides)` does with a file: its (result, message) or the
    exception, with its message and the time taken."""
    start = time.time()
    try:
        result, message = load(path, **overrides)
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
        members[name] = hostile_data.npy_bytes(array, shape=shape)
    elif kind == 1:  # a valid array of another shape
        members[name] = hostile_data.npy_bytes(np.resize(array, _WEIRD_SHAPES[rng.integers(4)] or (1,)))
    elif kind == 2:  # another dtype
        dtype = ["float16", "float64", "int32", "bool", "complex64", "uint8"][rng.integers(6)]
        members[name] = hostile_data.npy_bytes(array.astype(dtype))
    else:  # NaN or inf in the values
        bad = array.astype("float32").copy()
        bad.reshape(-1)[rng.integers(bad.size)] = [np.nan, np.inf][rng.integers(2)]
        members[name] = hostile_data.npy_bytes(bad)
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
    if kind < 2:  # truncation or byte flips
        open(out, "wb").write(hostile_data.damage(data, kind, rng))
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
    results = {"cases": {name: outcome(path) for name, path in cases["checkpoints"].items()},
               "data_cases": {name: outcome(path, _load_data) for name, path in cases["data"].items()},
               "fuzz": [], "data_fuzz": []}
    bases = base_files(workdir)
    results["bases"] = {fmt: outcome(path, **_overrides(fmt)) for fmt, path in bases.items()}
    rng = np.random.default_rng(0)
    deadline = time.time() + fuzz_seconds
    for index in range(fuzz_cases):
        if time.time() > deadline:
            break
        fmt, path = fuzz_case(bases, rng, workdir, index)
        results["fuzz"].append({"file": os.path.relpath(path, workdir), **outcome(path, **_overrides(fmt))})
    data_bases = hostile_data.data_bases(workdir)
    results["data_bases"] = {fmt: outcome(path, _load_data) for fmt, path in data_bases.items()}
    formats, rng = sorted(data_bases), np.random.default_rng(1)
    for index in range(fuzz_cases):
        fmt = formats[rng.integers(len(formats))]
        out = os.path.join(workdir, f"datafuzz{index}_{os.path.basename(data_bases[fmt])}")
        hostile_data.mutate_data(fmt, data_bases[fmt], rng, out)
        results["data_fuzz"].append({"file": os.path.basename(out), "format": fmt,
                                     "path": out, **outcome(out, _load_data)})
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
