"""The "tflite" and "integer" graph forms (layer norm as plain products; attention one
head at a time) and the int8 TFLite pass that gives XNNPACK its matmuls: the same function
as the standard form, checked against an independent NumPy forward pass."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit import ViT, config
from keras_vit.norm import LayerNormalization
from tiny import randomised, reference_case

TINY = dict(image_size=16, patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32,
            num_classes=3)
CONFIGS = {
    "original": dict(),
    "registers_layer_scale_pre_norm": dict(num_register_tokens=2, layer_scale_init=0.1,
                                           pre_norm=True, gelu_approximate=False),
    "gap_pooled_norm": dict(pooling="gap", pooled_norm=True),
}


@pytest.mark.parametrize("form", ["tflite", "integer", "integer_exp"])
@pytest.mark.parametrize("name", CONFIGS)
def test_tflite_forms_compute_the_reference_function(name, form):
    model, images, expected = reference_case({**TINY, **CONFIGS[name]})
    with config.graph_form(form):
        one = np.concatenate([ops.convert_to_numpy(model(images[i:i + 1])) for i in range(2)])
        batch = ops.convert_to_numpy(model(images))  # a batch of two: the batched path
    for ours in (one, batch):
        assert np.max(np.abs(ours - expected)) / np.max(np.abs(expected)) < 1e-4


def test_unnormalised_attention_equals_the_standard_form_with_large_scores():
    """"integer_exp" attention, exp(s - rowmax(s)) @ v / rowsum, is softmax(s) @ v, also
    where exp(s) alone would overflow float32 (scores in the thousands)."""
    model = ViT(**{**TINY, "include_top": False})
    randomised(model)
    queries = [v for v in model.weights if v.path.endswith("query/kernel")]
    assert len(queries) == TINY["num_layers"]
    for variable in queries:
        variable.assign(ops.convert_to_numpy(variable) * 300.0)
    images = np.random.default_rng(8).integers(0, 256, (1, 16, 16, 3)).astype("float32")
    standard = ops.convert_to_numpy(model(images))
    with config.graph_form("integer_exp"):
        unnormalised = ops.convert_to_numpy(model(images))
    assert np.all(np.isfinite(unnormalised))
    np.testing.assert_allclose(unnormalised, standard, rtol=1e-4, atol=1e-4 * np.max(np.abs(standard)))


def test_integer_layer_norm_matches_numpy():
    layer = LayerNormalization(epsilon=1e-3)
    x = np.random.default_rng(2).normal(3.0, 2.0, (2, 5, 8)).astype("float32")
    layer.build(x.shape)
    gamma, beta = (np.random.default_rng(s).normal(size=8).astype("float32") for s in (3, 4))
    layer.set_weights([gamma, beta])
    centred = x.astype("float64") - x.mean(-1, keepdims=True)
    expected = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-3) * gamma + beta
    for form in ("tflite", "integer"):
        with config.graph_form(form):
            np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-4)


def test_graph_form_switch_checks_and_restores():
    assert config.get_graph_form() == "standard"
    with config.graph_form("integer"):
        assert config.get_graph_form() == "integer"
    assert config.get_graph_form() == "standard"
    with pytest.raises(ValueError, match="graph form must be one of"):
        config.set_graph_form("int8")


def _interpreter(content):
    """An interpreter without XNNPACK, so that its ops are the file's own."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def _matmul_operands(interpreter):
    """The quantization (scale, zero point) of each BATCH_MATMUL's right-hand operand."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [tensors[op["inputs"][1]]["quantization"]
            for op in interpreter._get_ops_details() if op["op_name"] == "BATCH_MATMUL"]


def _with_zero_point(content, zero_point):
    """`content` with every BATCH_MATMUL right-hand operand moved to `zero_point`, its
    scale kept: the asymmetric parameters TFLite's calibration gives."""
    from ai_edge_litert import schema_py_generated as schema
    import flatbuffers

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    graph = model.subgraphs[0]
    for op in graph.operators:
        if codes[op.opcodeIndex] == schema.BuiltinOperator.BATCH_MATMUL:
            graph.tensors[op.inputs[1]].quantization.zeroPoint = np.asarray([zero_point])
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="converts under TensorFlow in-process (once is enough: the "
                    "other backends export through the same TensorFlow subprocess)")
def test_full_int8_file_gives_xnnpack_its_matmuls(tmp_path):
    from keras_vit import export
    from keras_vit.export import tflite_graph

    model = ViT(**{**TINY, "include_top": False, "num_heads": 4})
    randomised(model)
    images = np.random.default_rng(5).integers(0, 256, (16, 16, 16, 3)).astype("float32")
    path = export.export_tflite(model, tmp_path / "m.tflite", quantize="int8",
                                representative_data=images)
    assert "SQUARED_DIFFERENCE" not in export.tflite_ops(path)
    with open(path, "rb") as f:
        content = path_bytes = f.read()
    operands = _matmul_operands(_interpreter(content))
    assert len(operands) == TINY["num_layers"] * 4 * 2  # both attention products, per head
    assert all(zero_point == 0 for _, zero_point in operands)
    features = ops.convert_to_numpy(model(images[:4]))
    ours = export.run_tflite(path, images[:4])[0]
    cosine = np.sum(ours * features, -1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(features, axis=-1)
    assert np.min(cosine) > 0.98

    # The pass itself: operands at zero point 9 come back at 0 with the span they had.
    shifted = _with_zero_point(path_bytes, 9)
    moved_content, moved = tflite_graph.xnnpack_ranges(shifted)
    assert moved["matmul_operands"] == len(operands)
    for (scale, _), (new_scale, zero_point) in zip(operands, _matmul_operands(_interpreter(moved_content))):
        assert zero_point == 0
        assert math.isclose(new_scale, scale * (128 + 9) / 127, rel_tol=1e-6)
    assert tflite_graph.xnnpack_ranges(moved_content)[1] == {"matmul_operands": 0,
                                                             "concatenated_inputs": 0}


def _tiny_features_file(tmp_path, quantize, seed):
    """(min cosine of the file's features to the model's on 4 images, its interpreter, its
    tensors by index, its op details, its path) of a tiny features ViT exported with
    `quantize`."""
    from keras_vit import export

    model = ViT(**{**TINY, "include_top": False})
    randomised(model)
    images = np.random.default_rng(seed).integers(0, 256, (16, 16, 16, 3)).astype("float32")
    path = export.export_tflite(model, tmp_path / "m.tflite", quantize=quantize,
                                representative_data=images)
    with open(path, "rb") as f:
        interpreter = _interpreter(f.read())
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    features = ops.convert_to_numpy(model(images[:4]))
    ours = export.run_tflite(path, images[:4])[0]
    cosine = np.sum(ours * features, -1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(features, axis=-1)
    return np.min(cosine), interpreter, tensors, interpreter._get_ops_details(), path


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="converts under TensorFlow in-process (once is enough)")
def test_mixed_int8_file_keeps_only_the_softmax_in_float(tmp_path):
    min_cosine, interpreter, tensors, details, _ = _tiny_features_file(tmp_path, "mixed", 6)
    float_ops = {op["op_name"] for op in details if tensors[op["outputs"][0]]["dtype"] == np.float32}
    assert float_ops == {"SOFTMAX", "DEQUANTIZE"}
    assert all(zero_point == 0 for _, zero_point in _matmul_operands(interpreter))
    assert min_cosine > 0.98


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="converts under TensorFlow in-process (once is enough)")
def test_matmul_int8_file_computes_only_the_matmuls_in_int8(tmp_path):
    from keras_vit import export

    min_cosine, interpreter, tensors, details, path = _tiny_features_file(tmp_path, "matmul", 7)
    int8_ops, float_ops = {}, set()
    for op in details:
        if tensors[op["outputs"][0]]["dtype"] == np.int8:
            int8_ops[op["op_name"]] = int8_ops.get(op["op_name"], 0) + 1
        else:
            float_ops.add(op["op_name"])
    # int8 out of: the patch embedding; per block the query, key and value projections of
    # each head, the output projection, 2 MLP layers and each head's two attention
    # products (scores; unnormalised weights times values); and the QUANTIZE ops that feed
    # them. The weights exp(s - rowmax(s)) and their division by the row sums stay float.
    assert set(int8_ops) == {"CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "QUANTIZE"}
    assert int8_ops["FULLY_CONNECTED"] == TINY["num_layers"] * (3 * TINY["num_heads"] + 3)
    assert int8_ops["BATCH_MATMUL"] == TINY["num_layers"] * TINY["num_heads"] * 2
    assert {"REDUCE_MAX", "EXP", "SUM", "DIV"} <= float_ops
    assert "SOFTMAX" not in float_ops
    assert all(zero_point == 0 for _, zero_point in _matmul_operands(interpreter))
    split = export.xnnpack_split(path)
    assert split["fallback"] == {} and split["partitions"] == 1
    assert min_cosine > 0.99
