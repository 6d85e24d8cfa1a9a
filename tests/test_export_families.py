"""TFLite float32 and full int8 export of tiny DINOv2 and SigLIP features models (no head):
builtin ops only, and parity of their feature vectors with Keras.

The families' configurations are benchmarks/export_families.py's, shrunk to 32x32 images,
with its random weights. Each family is exported once per module (`exported`), both files
in one `export` call (one TensorFlow subprocess under JAX and PyTorch).
"""

import os
import sys
from importlib.util import find_spec

import keras
import numpy as np
import pytest

from export_helpers import pixels
from keras_vit import ViT, export

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import export_families  # noqa: E402

pytestmark = pytest.mark.skipif(
    find_spec("tensorflow") is None or find_spec("ai_edge_litert") is None,
    reason="TFLite export needs tensorflow and ai-edge-litert",
)

TINY_SIZE = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=2, num_heads=4, mlp_dim=64)
FAMILIES = {
    "dinov2": {**export_families.FAMILIES["DINOv2-S/14"], **TINY_SIZE},
    "dinov2_registers": {**export_families.FAMILIES["DINOv2-S/14"], **TINY_SIZE,
                         "num_register_tokens": 2},
    "siglip": {**export_families.FAMILIES["SigLIP-B/16"], **TINY_SIZE},
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request, tmp_path_factory):
    """A family's float32 and int8 files and their parity reports, from one export call."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp(request.param)
    model = export_families.randomised(ViT(**FAMILIES[request.param]))
    images = pixels(16, seed=1)
    reports = export.export(
        model, folder, quantize=["float32", "int8"], representative_data=pixels(64, seed=2),
        eval_images=images, name="model", report_path=folder / "report.md", verbose=False,
    )
    return {"folder": folder, "model": model, "images": images,
            "reports": {r["variant"]: r for r in reports}}


def test_families_are_features_models_with_their_options():
    dinov2, registers, siglip = (ViT(**config) for config in FAMILIES.values())
    assert not dinov2.include_top and not siglip.include_top
    assert dinov2.get_layer("encoder_block_0").layer_scale_init is not None
    assert dinov2.get_layer("encoder_block_0").mlp_activation == "gelu"  # exact, as DINOv2's
    assert registers.get_layer("register_tokens").num_tokens == 2
    assert siglip.get_layer("encoder_block_0").mlp_activation == "gelu_tanh"
    assert siglip.get_layer("pooling").mlp_activation == "gelu_tanh"
    assert "class_token" not in [layer.name for layer in siglip.layers]


def test_features_differ_per_image(exported):
    """Random weights make the parity check meaningful: each image gets its own features,
    further from every other image's than the int8 file's error."""
    features = keras.ops.convert_to_numpy(exported["model"].predict(exported["images"], verbose=0))
    assert features.shape == (16, 32)
    distance = np.linalg.norm(features[:, None] - features[None], axis=-1)
    relative = distance / np.linalg.norm(features, axis=-1)[:, None]
    np.fill_diagonal(relative, np.inf)
    assert relative.min() > exported["reports"]["int8"]["max_relative_error"]


def test_files_use_builtin_ops_only(exported):
    for variant in ("fp32", "int8"):
        ops = export.check_builtin_ops(exported["folder"] / f"model_{variant}.tflite")
        assert not any(op.startswith("Flex") or op == "ERF" for op in ops)
        assert "GELU" in ops  # exact and tanh GELU both become the builtin op


def test_int8_file_is_full_integer_on_raw_uint8_pixels(exported):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(exported["folder"] / "model_int8.tflite"))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and tuple(inp["quantization"]) == (1.0, 0)
    assert out["dtype"] == np.float32 and list(out["shape"]) == [1, 32]
    dtypes = [np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()]
    assert dtypes.count("int8") > 5 * dtypes.count("float32")


def test_feature_parity_within_tolerances(exported):
    fp32, int8 = exported["reports"]["float32"], exported["reports"]["int8"]
    for report in (fp32, int8):
        assert report["outputs"] == "features" and report["top1_agreement"] is None
        assert report["num_images"] == 16 and report["latency_ms"] > 0
    assert fp32["max_abs_diff"] < 1e-4 and fp32["max_relative_error"] < 1e-5
    assert fp32["min_cosine"] > 1 - 1e-6 and fp32["retrieval_agreement"] == 1.0
    assert int8["min_cosine"] > 0.99 and int8["max_relative_error"] < 0.15
    assert int8["retrieval_agreement"] >= 0.9


def test_report_table_shows_feature_parity(exported):
    table = (exported["folder"] / "report.md").read_text()
    assert "| min cosine | max relative error | retrieval agreement |" in table
    assert "| int8 | uint8 |" in table and "accuracy" not in table


def test_labels_are_refused_for_a_features_model(exported, tmp_path):
    model, images = exported["model"], exported["images"][:4]
    with pytest.raises(ValueError, match="outputs features"):
        export.parity_report(model, exported["folder"] / "model_fp32.tflite", images, [0] * 4)
    with pytest.raises(ValueError, match="outputs features"):
        export.export(model, tmp_path, eval_images=images, eval_labels=[0] * 4, verbose=False)
    assert not os.listdir(tmp_path)
