"""DINOv3 features models downstream (issue 24 item 6): the tiny DINOv3-S/16 and S+/16 forms
(2-D RoPE, no position table, 4 registers, layer scale, no q/k/v biases, class-token
features; S+ with a SwiGLU MLP) fine-tune with a new head through `fit` and round-trip
`.keras`, give attention rollout over their patches only, are covered variable by variable
by `ViT.get_layout_map`, and export to TFLite float32 + int8 with builtin ops and a parity
report, as benchmarks/export_families.py does at real size.

What the other tests hold already is not repeated: attention maps with RoPE against a NumPy
reference and the bare RoPE TFLite export (test_rope.py), a loaded GELU DINOv3's fine-tuning
(test_dinov3.py), the layout map's rules per option (test_distribution.py).
"""

import os
import re
import sys
from importlib.util import find_spec

import keras
import numpy as np
import pytest
from keras import ops

from export_helpers import pixels
from keras_vit import ViT, distribution, export, insight

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import export_families  # noqa: E402

TINY_SIZE = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=2, num_heads=4, mlp_dim=64)
FORMS = {
    "dinov3_s16": {**export_families.FAMILIES["DINOv3-S/16"], **TINY_SIZE},
    "dinov3_s16_plus": {**export_families.FAMILIES["DINOv3-S/16"], **TINY_SIZE,
                        "mlp_type": "swiglu"},
}
PREFIX = 5  # the class token and 4 registers


def _model(form, **overrides):
    keras.utils.set_random_seed(0)
    return export_families.randomised(ViT(**{**FORMS[form], **overrides}))


def test_forms_are_dinov3s():
    model = ViT(**FORMS["dinov3_s16_plus"])
    assert (model.rope, model.position_embedding, model.num_register_tokens) == ("dinov3", "none", 4)
    assert not model.include_top and model.pooling == "token" and model.mlp_type == "swiglu"
    assert "position_embedding" not in [layer.name for layer in model.layers]


@pytest.mark.parametrize("form", list(FORMS))
def test_fine_tunes_with_a_new_head_and_round_trips(form, tmp_path):
    features = _model(form)
    path = tmp_path / "features.keras"
    features.save(path)
    model = ViT.from_preset(str(path), num_classes=3)
    for a, b in zip(features.weights, model.weights):  # the backbone is the features model's
        assert a.path == b.path
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    images, labels = pixels(4, seed=1), np.array([0, 1, 2, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    head = ops.convert_to_numpy(model.get_layer("head").kernel).copy()
    block = ops.convert_to_numpy(model.get_layer("encoder_block_0").mlp_dense_1.kernel).copy()
    history = model.fit(images, labels, epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][1] < history.history["loss"][0]
    assert not np.array_equal(ops.convert_to_numpy(model.get_layer("head").kernel), head)
    assert not np.array_equal(
        ops.convert_to_numpy(model.get_layer("encoder_block_0").mlp_dense_1.kernel), block)
    model.save(tmp_path / "tuned.keras")
    loaded = keras.saving.load_model(tmp_path / "tuned.keras")
    assert (loaded.rope, loaded.mlp_type) == (model.rope, model.mlp_type)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images)),
                               ops.convert_to_numpy(model(images)), rtol=1e-5, atol=1e-5)
    resized = ViT.from_preset(str(tmp_path / "tuned.keras"), image_size=(48, 40))
    assert ops.convert_to_numpy(resized(pixels(2, seed=3, shape=(48, 40, 3)))).shape == (2, 3)


def test_attention_rollout_is_over_the_patches_and_follows_the_maps():
    model = _model("dinov3_s16_plus")
    images = pixels(2, seed=4)
    maps = insight.attention_maps(model, images)
    assert maps.shape == (2, 2, 4, PREFIX + 16, PREFIX + 16)
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
    rollout = insight.attention_rollout(model, images)
    assert rollout.shape == (2, 4, 4)
    np.testing.assert_allclose(rollout, insight.rollout_from_attention(maps, PREFIX, (4, 4)),
                               rtol=1e-6, atol=1e-7)
    # RoPE is in the maps: the same weights without it attend differently.
    unrotated = {k: v for k, v in FORMS["dinov3_s16_plus"].items() if k != "rope_theta"}
    plain = ViT(**{**unrotated, "rope": None})
    plain.set_weights(model.get_weights())
    assert np.abs(insight.attention_maps(plain, images) - maps).max() > 1e-3


def test_layout_map_covers_every_variable_once():
    """Every variable of the S+ form (SwiGLU's gate and up split like the first MLP matrix)
    has exactly one rule, sharded or replicated."""
    devices = [f"cpu:{i}" for i in range(8)]
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    model = ViT(**FORMS["dinov3_s16_plus"])
    layouts = ViT.get_layout_map(mesh)
    rules = list(layouts) + list(distribution.REPLICATED_VARIABLES)
    for variable in model.variables:
        matching = [rule for rule in rules if re.fullmatch(rule, variable.path)]
        assert len(matching) == 1, (variable.path, matching)
    block = "encoder_block_1/"
    for part in ("mlp_gate", "mlp_dense_1"):
        assert layouts[block + part + "/kernel"].axes == (None, "model")
    assert layouts[block + "mlp_dense_2/kernel"].axes == ("model", None)
    assert layouts[block + "attention/query/kernel"].axes == (None, "model", None)
    assert layouts["register_tokens/tokens"] is None and layouts[block + "mlp_scale"] is None


@pytest.mark.skipif(find_spec("tensorflow") is None or find_spec("ai_edge_litert") is None,
                    reason="TFLite export needs tensorflow and ai-edge-litert")
def test_tflite_float32_and_int8_builtin_ops_with_a_parity_report(tmp_path):
    keras.config.set_dtype_policy("float32")
    model = _model("dinov3_s16")
    images = pixels(16, seed=1)
    reports = export.export(
        model, tmp_path, quantize=["float32", "int8"], representative_data=pixels(64, seed=2),
        eval_images=images, name="dinov3", report_path=tmp_path / "report.md", verbose=False)
    by_variant = {r["variant"]: r for r in reports}
    for variant in ("fp32", "int8"):
        ops_ = export.check_builtin_ops(tmp_path / f"dinov3_{variant}.tflite")
        assert not any(op.startswith("Flex") for op in ops_)
    fp32, int8 = by_variant["float32"], by_variant["int8"]
    assert fp32["outputs"] == "features" and fp32["num_images"] == 16
    assert fp32["max_relative_error"] < 1e-5 and fp32["retrieval_agreement"] == 1.0
    assert int8["min_cosine"] > 0.99 and int8["retrieval_agreement"] >= 0.9
    assert "| min cosine | max relative error | retrieval agreement |" in (
        tmp_path / "report.md").read_text()
