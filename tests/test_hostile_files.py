"""Hostile checkpoint and data files: tiny files that ask for huge models or arrays, compression
bombs, pickles, broken safetensors headers, non-finite or complex weights, bad configs, and a
seeded fuzz of every reader. Whatever the file, loading gives a model (or arrays) or a
ValueError / FileNotFoundError that says what is wrong."""

import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from checkpoint_files import (
    HEADS, google_params, write_big_vision, write_hf, write_timm, write_vit_jax)
from hostile_data import bomb_files
from keras_vit import ViT

WORKER = pathlib.Path(__file__).with_name("hostile_worker.py")
MEMORY_CAP_MB = 2000
FUZZ_CASES, FUZZ_SECONDS = 300, 120


def _safetensors(path, header, body):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    pathlib.Path(path).write_bytes(len(text).to_bytes(8, "little") + text + body)
    return str(path)


def _timm_header(path):
    data = pathlib.Path(path).read_bytes()
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]), data[8 + size:]


def _memory_bomb_files(tmp):
    """Tiny files whose claimed architecture would need many GB if believed."""
    from safetensors.numpy import load_file, save_file

    files = {}
    timm = write_timm(tmp / "head.safetensors", google_params())
    t = load_file(timm)
    t["head.weight"], t["head.bias"] = np.zeros((10**9, 0), "float32"), np.zeros((0,), "float32")
    save_file(t, timm)
    files["timm_head_of_1e9_classes"] = timm

    scanned = write_big_vision(tmp / "scanned.npz", google_params(), scanned=True)
    with np.load(scanned) as f:
        p = dict(f)
    p["params/Transformer/encoderblock/LayerNorm_0/scale"] = np.zeros((10**9, 0), "float32")
    files["big_vision_1e9_stacked_layers"] = write_vit_jax(tmp / "scanned_bomb.npz", p)

    p = google_params()
    p["Transformer/encoderblock_1000000/LayerNorm_0/scale"] = np.ones(32, "float32")
    files["vit_jax_block_1000000"] = write_vit_jax(tmp / "far_block.npz", p)

    keras_path = tmp / "model.keras"
    ViT(image_size=32, patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=16,
        num_classes=3).save(keras_path)
    with zipfile.ZipFile(keras_path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["mlp_dim"] = 10**8
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp / "huge_mlp.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    files["keras_config_mlp_dim_1e8"] = str(tmp / "huge_mlp.keras")

    (tmp / "hf").mkdir()
    hf = write_hf(tmp / "hf", google_params())
    config = json.loads((tmp / "hf" / "config.json").read_text())
    config["intermediate_size"] = 10**7
    (tmp / "hf" / "config.json").write_text(json.dumps(config))
    files["hf_config_intermediate_size_1e7"] = hf
    return files


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    """One capped subprocess loads the memory-bomb files, then fuzzes every reader."""
    tmp = tmp_path_factory.mktemp("hostile")
    cases = tmp / "cases.json"
    (tmp / "data").mkdir()
    cases.write_text(json.dumps({"checkpoints": _memory_bomb_files(tmp),
                                 "data": bomb_files(tmp / "data")}))
    work = tmp / "fuzz"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, str(WORKER), str(work), str(cases), str(MEMORY_CAP_MB),
         str(FUZZ_CASES), str(FUZZ_SECONDS)],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 240, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case, message", [
    ("timm_head_of_1e9_classes", r"'head.weight' has an empty dimension \(shape \(0, 1000000000\)\)"),
    ("big_vision_1e9_stacked_layers", r"has shape \(1000000000, 0\): expected \(layers, width\)"),
    ("vit_jax_block_1000000", r"numbers its blocks up to 1000000: more than 512 blocks"),
    ("keras_config_mlp_dim_1e8", r"describes a model of 3,300,\d+,\d+ parameters, but its "
                                 r"model.weights.h5 holds only"),
    ("hf_config_intermediate_size_1e7", r"inconsistent: 'encoder.layer.0.intermediate.dense.weight' "
                                        r"has shape \(32, 64\).*needs \(32, 10000000\)"),
])
def test_tiny_files_asking_for_huge_models_are_refused(worker_results, case, message):
    outcome = worker_results["cases"][case]
    assert outcome["result"] == "ValueError", outcome
    assert re.search(message, outcome["message"]), outcome["message"]


def test_fuzzed_checkpoints_load_or_fail_with_a_clear_error(worker_results):
    """Seeded truncations, byte flips and shape / offset / dtype / config edits of valid
    vit_jax, big_vision, timm (with and without its config.json), Hugging Face and .keras
    files, under a memory cap."""
    assert all(o["result"] == "loaded" for o in worker_results["bases"].values()), worker_results["bases"]
    fuzz = worker_results["fuzz"]
    assert len(fuzz) >= 200, f"only {len(fuzz)} cases ran in {FUZZ_SECONDS} s"
    bad = [o for o in fuzz if o["result"] not in ("loaded", "ValueError", "FileNotFoundError")
           or (o["result"] != "loaded" and len(o["message"]) < 20)]
    assert not bad, bad[:5]
    kinds = {o["file"].split("_", 1)[1].split(".")[0].split("/")[0] for o in fuzz}
    assert kinds == {"vit_jax", "big_vision", "timm", "timm_config", "hf", "keras"}
    assert sum(o["result"] == "loaded" for o in fuzz) > 0  # byte flips in the weights load


def _clear_data_error(outcome, path):
    """A ValueError (or FileNotFoundError) of one line that names the file, and no numpy
    advice to unpickle."""
    return (outcome["result"] in ("ValueError", "FileNotFoundError") and path in outcome["message"]
            and "\n" not in outcome["message"] and "pickle=" not in outcome["message"])


@pytest.mark.parametrize("case, message", [
    ("idx_gz_1gib_of_zeros", r"declares 1073741824 bytes in \d+ compressed bytes, more than 64x"),
    ("idx_gz_10_bytes_declared_1gib_held", r"holds more data than the 10 bytes its header declares"),
    ("idx_declaring_16tib", r"header says shape \(1048576, 4096, 4096\).*found 1000 bytes"),
    ("npy_1kb_declaring_8_9gib", r"the file declares shape \(80000, 30000\) \(9600000000 bytes\) but holds 896 bytes"),
    ("npy_of_random_bytes", r"the file is not a .npy array \(the magic string is not correct"),
    ("npz_zip_bomb_1gib", r"the archive declares \d+ bytes in \d+ compressed bytes, more than 64x"),
    ("npz_holding_a_pickle", r"array 'images' holds object values, not numbers"),
])
def test_data_files_declaring_huge_arrays_or_pickles_are_refused(worker_results, case, message):
    """Refused before anything is allocated (under the worker's memory cap, in well under a
    second each), in one line naming the file."""
    outcome = worker_results["data_cases"][case]
    assert outcome["result"] == "ValueError", outcome
    assert re.search(message, outcome["message"]), outcome["message"]
    assert re.match(r"Could not read the data file '/.+': ", outcome["message"]), outcome["message"]
    assert _clear_data_error(outcome, outcome["message"].split("'")[1]), outcome
    assert outcome["seconds"] < 5, outcome


def test_fuzzed_data_files_load_or_fail_with_a_clear_error(worker_results):
    """Seeded truncations, byte flips and shape / dtype / order / size edits of valid .npy,
    .npz, idx and idx.gz files, read by `load_arrays` (the reader of `explain` and `export`)
    under a memory cap."""
    assert all(o["result"] == "loaded" for o in worker_results["data_bases"].values()), \
        worker_results["data_bases"]
    fuzz = worker_results["data_fuzz"]
    assert len(fuzz) == FUZZ_CASES
    bad = [o for o in fuzz if o["result"] != "loaded" and not _clear_data_error(o, o["path"])]
    assert not bad, bad[:5]
    assert {o["format"] for o in fuzz} == set(worker_results["data_bases"])
    assert sum(o["result"] == "loaded" for o in fuzz) > 0  # byte flips in the pixels load
    assert sum(o["result"] == "ValueError" for o in fuzz) > FUZZ_CASES // 2


# ----------------------------------------------------------------------------- safetensors


@pytest.fixture
def timm_file(tmp_path):
    return write_timm(tmp_path / "model.safetensors", google_params())


def _edit_offsets(timm_file, edit):
    header, body = _timm_header(timm_file)
    edit(header, len(body))
    return _safetensors(timm_file, header, body)


@pytest.mark.parametrize("edit, message", [
    # The same bytes, addressed from the end of the data: NumPy slicing would accept them.
    (lambda h, n: h["norm.bias"].update(data_offsets=[o - n for o in h["norm.bias"]["data_offsets"]]),
     "invalid value: integer `-"),
    (lambda h, n: h["norm.bias"].update(data_offsets=h["norm.weight"]["data_offsets"]),
     "invalid offset"),
])
def test_safetensors_negative_and_overlapping_offsets_are_refused(timm_file, edit, message):
    path = _edit_offsets(timm_file, edit)
    with pytest.raises(ValueError, match=f"Could not read the checkpoint.*{message}"):
        ViT.from_preset(path, num_heads=HEADS)


def test_safetensors_duplicate_names_are_refused(timm_file):
    header, body = _timm_header(timm_file)
    text = json.dumps(header)
    entry = json.dumps({"norm.bias": header["norm.bias"]})[1:-1]
    path = _safetensors(timm_file, (text[:-1] + ", " + entry + "}").encode(), body)
    with pytest.raises(ValueError, match="names a tensor twice"):
        ViT.from_preset(path, num_heads=HEADS)


@pytest.mark.parametrize("header", [b"[1, 2]", b"[" * 100_000, b'{"norm.bias": 5}', b"{not json"])
def test_malformed_safetensors_headers_are_a_clear_error(tmp_path, header):
    path = _safetensors(tmp_path / "model.safetensors", header, bytes(8))
    with pytest.raises(ValueError, match="Could not read the checkpoint.*not a valid"):
        ViT.from_preset(path)


def test_unknown_safetensors_dtype_is_named(timm_file):
    path = _edit_offsets(timm_file, lambda h, n: h["norm.bias"].update(dtype="Q99"))
    with pytest.raises(ValueError, match="tensor 'norm.bias' has dtype 'Q99', which keras_vit does not read"):
        ViT.from_preset(path, num_heads=HEADS)


# ----------------------------------------------------------------------------- values and configs


@pytest.mark.parametrize("value, message", [
    (np.nan, "holds NaN or infinite values"),
    (np.inf, "holds NaN or infinite values"),
    (1j, "has dtype complex64: weights must be floating point"),
])
def test_non_finite_and_complex_weights_are_refused(tmp_path, value, message):
    p = google_params()
    key = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"
    array = p[key].astype("complex64") if np.iscomplexobj(value) else p[key]
    array.reshape(-1)[5] = value
    p[key] = array
    with pytest.raises(ValueError, match=f"'{key}' {message}"):
        ViT.from_preset(write_vit_jax(tmp_path / "bad.npz", p))


@pytest.mark.parametrize("eps", [0, -1e-6, "1e-6", None])
def test_non_positive_layer_norm_epsilon_is_refused(tmp_path, eps):
    write_hf(tmp_path, google_params())
    config = json.loads((tmp_path / "config.json").read_text())
    config["layer_norm_eps"] = eps
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="layer_norm_eps must be a positive number"):
        ViT.from_preset(str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="layer_norm_epsilon must be a positive number"):
        ViT(image_size=32, patch_size=8, hidden_dim=32, num_layers=1, num_heads=4,
            mlp_dim=64, layer_norm_epsilon=eps if eps is not None else float("nan"))


def test_truncated_keras_file_is_called_truncated(tmp_path):
    path = tmp_path / "model.keras"
    ViT(image_size=32, patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=16,
        num_classes=3).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match="truncated, corrupt") as error:
        ViT.from_preset(str(path))
    assert "not found" not in str(error.value).lower()


def test_misspelt_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"'num_clases' \(did you mean 'num_classes'\?\)"):
        ViT(image_size=32, patch_size=8, hidden_dim=32, num_layers=1, num_heads=4,
            mlp_dim=64, num_clases=10)
    path = write_vit_jax(tmp_path / "model.npz", google_params())
    with pytest.raises(ValueError, match="Unrecognized keyword argument.*'bogus'"):
        ViT.from_preset(path, bogus=1)
    with pytest.raises(ValueError, match=r"'drop_pth_rate' \(did you mean 'drop_path_rate'\?\)"):
        ViT.from_preset("ti16", weights=None, drop_pth_rate=0.1)
