"""ONNX export (through PyTorch) from the current backend, checked with ONNX Runtime.

Under TensorFlow and JAX each export runs a PyTorch subprocess, so the main export is made
once per module (`exported`) and the tests read the file.
"""

import keras
import numpy as np
import pytest

from export_helpers import pixels, tiny_vit
from keras_vit import export
from keras_vit.__main__ import main

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("onnx")
    model = tiny_vit()
    images = pixels(8)
    labels = keras.ops.convert_to_numpy(model.predict(images, verbose=0)).argmax(-1)
    reports = export.export(model, str(folder), quantize=[], onnx=True, eval_images=images,
                            eval_labels=labels, name="tiny", verbose=False)
    return {"path": folder / "tiny.onnx", "model": model, "images": images, "reports": reports}


def test_export_writes_onnx_with_parity(exported):
    assert exported["path"].is_file()
    (report,) = exported["reports"]
    assert report["variant"] == "onnx" and report["input_dtype"] == "float32"
    assert report["max_abs_diff"] < 1e-4 and report["top1_agreement"] == 1.0
    assert report["accuracy"] == report["keras_accuracy"] == 1.0
    assert report["runtime"].startswith("ONNX Runtime")
    assert "| onnx | float32 |" in export.format_report([report])


def test_onnx_graph_takes_any_batch_size(exported):
    graph = onnx.load(str(exported["path"])).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    session = onnxruntime.InferenceSession(str(exported["path"]),
                                           providers=["CPUExecutionProvider"])
    expected = keras.ops.convert_to_numpy(exported["model"](exported["images"]))
    for batch in (1, 3, 8):
        logits = session.run(None, {"images": exported["images"][:batch]})[0]
        np.testing.assert_allclose(logits, expected[:batch], atol=1e-4)


def test_mixed_precision_model_exports_in_float32_with_uint8_input_and_an_opset(tmp_path):
    model = tiny_vit(dtype="mixed_bfloat16")
    path = export.export_onnx(model, tmp_path / "mixed.onnx", input_dtype="uint8", opset=18)
    opsets = {o.domain: o.version for o in onnx.load(path).opset_import}
    assert opsets[""] == 18
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    report = export.parity_report(model, path, pixels(4))
    assert report["input_dtype"] == "uint8"
    assert report["max_abs_diff"] < 1e-4  # against the float32 copy, on the same pixels


def test_bad_onnx_requests_fail_clearly(tmp_path, monkeypatch):
    model = tiny_vit()
    with pytest.raises(ValueError, match="must end in .onnx"):
        export.export_onnx(model, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="input_dtype"):
        export.export_onnx(model, tmp_path / "m.onnx", input_dtype="int8")
    (tmp_path / "m.onnx").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.export_onnx(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == b"keep me"
    monkeypatch.setitem(export.checks.ONNX_PACKAGES, "no_such_module_xyz", "no-such-package")
    with pytest.raises(ImportError, match=r"no-such-package: pip install no-such-package "):
        export.export_onnx(model, tmp_path / "n.onnx")
    assert not (tmp_path / "n.onnx").exists()


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="one real CLI run suffices")
def test_cli_exports_onnx(tmp_path, capsys):
    model_path = tmp_path / "model.keras"
    tiny_vit().save(model_path)
    assert main(["export", str(model_path), "--format", "onnx", "tflite"]) == 0
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model_fp32.tflite").is_file()
    out = capsys.readouterr().out
    assert "| onnx | float32 |" in out and "| float32 | float32 |" in out
