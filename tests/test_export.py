"""Export to SavedModel and TFLite from the current backend, with parity and bad-input checks.

Under JAX and PyTorch each export runs a TensorFlow subprocess, so the exports are made once
per module (`exported`) and the tests read the files.
"""

import collections
import gzip
import os
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest

from export_helpers import pixels, tiny_vit
from keras_vit import ViT, export, precision
from keras_vit.__main__ import main
from keras_vit.backend.private_apis import flatten_layers
from keras_vit.export import tflite, worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every variant and a SavedModel of one tiny model, in one export call."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("export")
    model = tiny_vit()
    # A random model's logits are nearly tied on many images; int8 parity is judged on the
    # 16 of 256 images that the Keras model classifies with the widest margin.
    candidates = pixels(256, seed=1)
    logits = np.sort(keras.ops.convert_to_numpy(model.predict(candidates, verbose=0)), axis=-1)
    images = candidates[np.argsort(logits[:, -2] - logits[:, -1])[:16]]
    labels = keras.ops.convert_to_numpy(model.predict(images, verbose=0)).argmax(-1)
    reports = export.export(
        model,
        str(folder),
        quantize=["float32", "float16", "dynamic", "int8"],
        saved_model=True,
        representative_data=pixels(64, seed=2),
        eval_images=images,
        eval_labels=labels,
        name="tiny",
        report_path=str(folder / "report.md"),
        verbose=False,
    )
    return {"folder": folder, "model": model, "images": images, "labels": labels,
            "reports": {r["variant"]: r for r in reports}}


def test_export_writes_every_variant(exported):
    folder = exported["folder"]
    for suffix in ("fp32", "fp16", "dynamic_int8", "int8"):
        assert (folder / f"tiny_{suffix}.tflite").is_file()
    assert (folder / "tiny_saved_model" / "saved_model.pb").is_file()
    report = (folder / "report.md").read_text()
    assert "| variant |" in report and "tiny_int8" not in report and "int8" in report
    sizes = {v: r["size_bytes"] for v, r in exported["reports"].items()}
    assert sizes["float16"] < sizes["float32"] and sizes["int8"] < sizes["float16"]


def test_tflite_files_use_builtin_ops_only(exported):
    for path in exported["folder"].glob("*.tflite"):
        ops = export.check_builtin_ops(path)  # raises on Flex or custom ops
        assert not any(op.startswith("Flex") or op == "ERF" for op in ops)
        assert "GELU" in ops  # exact GELU became the builtin op, not an Erf


def test_parity_within_tolerances(exported):
    reports = exported["reports"]
    assert reports["saved_model"]["max_abs_diff"] < 1e-4
    assert reports["float32"]["max_abs_diff"] < 1e-4
    assert reports["float32"]["top1_agreement"] == 1.0
    assert reports["float16"]["max_abs_diff"] < 5e-2
    assert reports["dynamic"]["top1_agreement"] >= 0.9
    assert reports["int8"]["top1_agreement"] >= 0.9
    for report in reports.values():
        assert report["latency_ms"] > 0 and report["accuracy"] is not None


def test_int8_file_is_full_integer_on_raw_uint8_pixels(exported):
    """The int8 file takes raw uint8 pixels, computes in int8 and still agrees with Keras."""
    from ai_edge_litert.interpreter import Interpreter

    path = exported["folder"] / "tiny_int8.tflite"
    interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    assert inp["dtype"] == np.uint8
    assert list(inp["shape"]) == [1, 32, 32, 3]
    scale, zero_point = inp["quantization"]
    assert abs(scale - 1.0) < 1e-6 and zero_point == 0
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    # Weights and activations are int8: a float or dynamic-range file has (almost) only
    # float32 tensors between its input and output, and no QUANTIZE op.
    dtypes = collections.Counter(np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details())
    assert dtypes["int8"] > 5 * dtypes["float32"], dtypes
    assert "QUANTIZE" in export.tflite_ops(path)
    # int8 weights: on this tiny model the flatbuffer's overhead keeps it above a quarter.
    assert path.stat().st_size < 0.6 * (exported["folder"] / "tiny_fp32.tflite").stat().st_size
    top1 = export.run_tflite(path, exported["images"])[0].argmax(-1)
    assert np.mean(top1 == exported["labels"]) >= 0.9


def test_parity_report_reruns_on_a_file(exported):
    report = export.parity_report(
        exported["model"], exported["folder"] / "tiny_fp32.tflite", exported["images"][:4]
    )
    assert report["num_images"] == 4 and report["max_abs_diff"] < 1e-4
    assert "| tiny_fp32.tflite |" in export.format_report([report])


def test_on_device_example_classifies_an_image(exported, tmp_path):
    image = exported["images"][0].astype(np.uint8)
    np.save(tmp_path / "image.npy", image)
    (tmp_path / "labels.txt").write_text("\n".join(f"label_{i}" for i in range(10)))
    expected = int(np.argmax(keras.ops.convert_to_numpy(exported["model"](image[None].astype("float32")))))
    for variant in ("fp32", "int8"):
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, "examples", "classify_litert.py"),
             str(exported["folder"] / f"tiny_{variant}.tflite"), str(tmp_path / "image.npy"),
             "--labels", str(tmp_path / "labels.txt"), "--top", "1"],
            capture_output=True, text=True, check=True,
        ).stdout
        assert out.split()[0] == f"label_{expected}", variant


def test_mixed_precision_model_exports_in_float32(tmp_path):
    model = tiny_vit(dtype="mixed_bfloat16")
    copy = precision.as_float32(model)
    assert copy is not model and copy.dtype_policy.name == "float32"
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in flatten_layers(copy))
    path = export.export_tflite(model, tmp_path / "mixed.tflite")
    report = export.parity_report(model, path, pixels(4))
    assert report["max_abs_diff"] < 1e-4  # against the float32 copy it was made from


# ---------------------------------------------------------------------------------------
# Bad input: clear errors before any conversion.


def test_unknown_quantization_mode(tmp_path):
    with pytest.raises(ValueError, match="Unknown quantization mode 'int4'"):
        export.export_tflite(tiny_vit(), tmp_path / "m.tflite", quantize="int4")


def test_int8_without_representative_data(tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        export.export_tflite(tiny_vit(), tmp_path / "m.tflite", quantize="int8")


def test_output_folder_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.export_tflite(tiny_vit(), tmp_path / "missing" / "m.tflite")


def test_no_silent_overwrite(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.export_tflite(tiny_vit(), tmp_path / "m.tflite")
    (tmp_path / "saved").mkdir()
    with pytest.raises(FileExistsError):
        export.export_saved_model(tiny_vit(), tmp_path / "saved")
    assert (tmp_path / "m.tflite").read_bytes() == b"keep me"


def test_tflite_needs_a_fixed_input_size(tmp_path):
    inputs = keras.Input(shape=(None, None, 3))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="fixed input size"):
        export.export_tflite(model, tmp_path / "m.tflite")


def test_flex_ops_are_detected(tmp_path):
    tf = pytest.importorskip("tensorflow")

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def erf(x):
        return tf.math.erf(x)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([erf.get_concrete_function()], erf)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS
    ]
    path = tmp_path / "flex.tflite"
    path.write_bytes(converter.convert())
    assert "FlexErf" in export.tflite_ops(path)
    with pytest.raises(RuntimeError, match="FlexErf"):
        export.check_builtin_ops(path)


def test_cli_reports_bad_input(tmp_path, capsys):
    model_path = tmp_path / "model.keras"
    tiny_vit().save(model_path)
    status = main(["export", str(model_path), "--quantize", "int4"])
    assert status == 2 and "Unknown quantization mode" in capsys.readouterr().err
    status = main(["export", str(model_path), "--quantize", "int8"])
    assert status == 2 and "representative" in capsys.readouterr().err


class Converting(Exception):
    """Raised by the `converting` fixture when an export starts its (slow) conversion."""


@pytest.fixture
def converting(monkeypatch):
    """Makes any conversion raise `Converting`: bad input must be rejected before it."""
    def convert(*args, **kwargs):
        raise Converting("started converting before rejecting the input")

    monkeypatch.setattr(worker, "run_under", convert)


@pytest.mark.parametrize("labels, message", [
    ([3], r"got 1 label\(s\), shape \(1,\), for 4 evaluation image"),
    (np.zeros((4, 10)), r"got 40 label\(s\), shape \(4, 10\), for 4 evaluation image"),
    ([0, 1, 2, -1], r"label -1 \(at index 3\).* 0\.\.9"),
    (np.array([0, 1, 2, 10], dtype=np.uint8), r"label 10 \(at index 3\).* 0\.\.9"),
    ([0, 1, 2.5, 3], r"label 2\.5 \(at index 2\).* 0\.\.9"),
    (["a", "b", "c", "d"], "integer class ids"),
], ids=["one_label", "one_hot", "negative", "too_large", "fraction", "strings"])
def test_eval_labels_are_checked_before_converting(tmp_path, converting, labels, message):
    with pytest.raises(ValueError, match=message):
        export.export(tiny_vit(), tmp_path, eval_images=pixels(4), eval_labels=labels,
                      verbose=False)
    with pytest.raises(ValueError, match="without eval_images"):
        export.export(tiny_vit(), tmp_path, eval_labels=labels, verbose=False)
    assert not os.listdir(tmp_path)


def test_parity_report_checks_labels_before_running(exported, monkeypatch):
    monkeypatch.setattr(tflite, "run_tflite", lambda *args: pytest.fail("ran before checking"))
    path, images = exported["folder"] / "tiny_fp32.tflite", exported["images"][:4]
    with pytest.raises(ValueError, match=r"got 1 label\(s\), shape \(1,\), for 4 evaluation"):
        export.parity_report(exported["model"], path, images, [0])
    with pytest.raises(ValueError, match=r"label 10 .* 0\.\.9"):
        export.parity_report(exported["model"], path, images, [0, 1, 2, 10])


@pytest.mark.parametrize("samples", [0, -1, 2.5])
def test_calibration_samples_must_be_a_positive_int(tmp_path, converting, samples):
    model, message = tiny_vit(), f"num_calibration_samples must be a positive integer, got {samples}"
    with pytest.raises(ValueError, match=message):
        export.export_tflite(model, tmp_path / "m.tflite", quantize="int8",
                             representative_data=pixels(4), num_calibration_samples=samples)
    with pytest.raises(ValueError, match=message):
        export.export(model, tmp_path, quantize="int8", representative_data=pixels(4),
                      num_calibration_samples=samples, verbose=False)
    assert not os.listdir(tmp_path)


def test_output_paths_are_checked_before_converting(tmp_path, converting):
    model = tiny_vit()
    (tmp_path / "report.md").mkdir()
    with pytest.raises(IsADirectoryError, match="report.md' is a folder"):
        export.export(model, tmp_path, report_path=tmp_path / "report.md", overwrite=True,
                      verbose=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="output folder .*file' is a file"):
        export.export(model, tmp_path / "file", verbose=False)
    with pytest.raises(NotADirectoryError, match="Can't create the output folder .*file/out'"):
        export.export(model, tmp_path / "file" / "out", verbose=False)
    with pytest.raises(NotADirectoryError, match="file' is a file, not a folder"):
        export.export_saved_model(model, tmp_path / "file", overwrite=True)
    with pytest.raises(Converting):  # a missing output folder is created
        export.export(model, tmp_path / "new" / "out", verbose=False)
    assert sorted(os.listdir(tmp_path)) == ["file", "new", "report.md"]
    assert not os.listdir(tmp_path / "new" / "out") and not os.listdir(tmp_path / "report.md")


def test_unwritable_output_folders_fail_before_converting(tmp_path, converting):
    model_path, locked = tmp_path / "model.keras", tmp_path / "locked"
    tiny_vit().save(model_path)
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user (root) can write in a read-only folder")
        with pytest.raises(PermissionError, match="Can't write in .*locked'"):
            export.export(model_path, locked, verbose=False)
        with pytest.raises(PermissionError, match="Can't write in .*locked'"):
            export.export(model_path, tmp_path, report_path=locked / "report.md", verbose=False)
        with pytest.raises(PermissionError, match="Can't write in .*locked'"):
            export.export_tflite(model_path, locked / "m.tflite")
        assert main(["export", str(model_path), "--output-dir", str(locked)]) == 2
        assert not os.listdir(locked)
    finally:
        locked.chmod(0o755)


def test_cli_checks_input_before_converting(tmp_path, capsys, converting):
    model_path = tmp_path / "model.keras"
    tiny_vit().save(model_path)
    np.save(tmp_path / "images.npy", pixels(4).astype(np.uint8))
    np.save(tmp_path / "one.npy", np.array([3]))
    np.save(tmp_path / "bad.npy", np.array([0, 1, 2, 10]))
    files = sorted(os.listdir(tmp_path))
    command = ["export", str(model_path)]
    eval_data = ["--eval-data", str(tmp_path / "images.npy"), "--eval-labels"]
    assert main([*command, *eval_data, str(tmp_path / "one.npy")]) == 2
    assert "got 1 label(s), shape (1,), for 4 evaluation image(s)" in capsys.readouterr().err
    assert main([*command, *eval_data, str(tmp_path / "bad.npy")]) == 2
    assert "0..9" in capsys.readouterr().err
    assert main([*command, "--eval-labels", str(tmp_path / "one.npy")]) == 2
    assert "--eval-labels needs --eval-data" in capsys.readouterr().err
    assert main([*command, "--format", "saved_model", "--quantize", "int8"]) == 2
    assert "add tflite to --format" in capsys.readouterr().err
    (tmp_path / "report.md").mkdir()
    assert main([*command, "--report", str(tmp_path / "report.md"), "--overwrite"]) == 2
    assert "is a folder" in capsys.readouterr().err
    for option in ("--calibration-samples", "--threads"):
        for value in ("0", "-3", "two"):
            with pytest.raises(SystemExit) as exit_info:
                main([*command, option, value])
            assert exit_info.value.code == 2
            assert f"{option}: must be a positive integer, got '{value}'" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == sorted(files + ["report.md"])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="one real CLI run suffices")
def test_cli_exports_with_idx_data(tmp_path, capsys):
    model_path = tmp_path / "model.keras"
    tiny_vit(image_size=16, patch_size=4, num_channels=1).save(model_path)
    images = pixels(20, shape=(16, 16, 1))[..., 0].astype(np.uint8)
    for name, array in (("images-idx3-ubyte.gz", images),
                        ("labels-idx1-ubyte.gz", np.arange(20, dtype=np.uint8) % 10)):
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
            f.write(array.tobytes())
    status = main([
        "export", str(model_path), "--quantize", "float32", "int8",
        "--representative", str(tmp_path / "images-idx3-ubyte.gz"),
        "--eval-data", str(tmp_path / "images-idx3-ubyte.gz"),
        "--eval-labels", str(tmp_path / "labels-idx1-ubyte.gz"),
        "--report", str(tmp_path / "report.md"),
    ])
    assert status == 0
    assert (tmp_path / "model_fp32.tflite").is_file() and (tmp_path / "model_int8.tflite").is_file()
    out = capsys.readouterr().out
    assert "Keras (float32)" in out and "| int8 | uint8 |" in out
    assert "| int8 | uint8 |" in (tmp_path / "report.md").read_text()


def test_collect_images_from_batches_adds_the_channel_axis():
    batches = [(np.zeros((3, 8, 8)), np.zeros(3)), (np.ones((3, 8, 8)), np.ones(3))]
    images = export.collect_images(iter(batches), (8, 8, 1), limit=4)
    assert images.shape == (4, 8, 8, 1) and images.dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        export.collect_images(np.zeros((2, 9, 9, 1)), (8, 8, 1))


def test_shipped_fashion_mnist_tflite_files_match_keras():
    """The shipped TFLite files use builtin ops only and agree with the shipped model."""
    from keras_vit import data

    folder = os.path.join(ROOT, "saved_models", "fashion_mnist")
    model = ViT.from_preset("fashion_mnist")
    images, labels = data.load_fashion_mnist("test", limit=200, download=False)
    images = images.astype("float32")
    keras_labels = model.predict(images, verbose=0).argmax(-1)
    for variant, min_agreement in (("fp32", 1.0), ("matmul_int8", 0.95), ("int8", 0.95)):
        path = os.path.join(folder, f"model_{variant}.tflite")
        export.check_builtin_ops(path)
        tflite_labels = export.run_tflite(path, images)[0].argmax(-1)
        assert (tflite_labels == keras_labels).mean() >= min_agreement, variant
        assert (tflite_labels == labels).mean() >= 0.9, variant


def test_the_worker_finds_each_job_kind_by_module_name():
    """The worker imports no format module: it looks each job kind's module up by name
    when a job runs, and refuses an unknown kind before loading any model."""
    import importlib

    for kind, module in worker.JOB_MODULES.items():
        assert callable(importlib.import_module(module).run_job), kind
    with pytest.raises(ValueError, match="Unknown export job 'jpeg'"):
        worker.run_jobs("no_such_model.keras", [{"kind": "jpeg", "path": "x.jpg"}])
