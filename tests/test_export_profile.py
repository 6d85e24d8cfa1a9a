"""keras_vit.export.xnnpack_split and gpu_compatibility: where a TFLite file's ops run.

The XNNPACK split is checked against LiteRT itself with delegate node fusion off (every
op XNNPACK takes becomes its own DELEGATE node, with that op's output tensors), and
against the op count in the file; the GPU rules against small TensorFlow functions whose
verdict the GPU delegate's rules fix, and on tiny keras_vit float32 and float16 files.
"""

import contextlib
import io
from importlib.util import find_spec

import keras
import numpy as np
import pytest

from keras_vit import ViT, export
from keras_vit.backend.private_apis import tflite_nodes

pytestmark = pytest.mark.skipif(
    find_spec("tensorflow") is None or find_spec("ai_edge_litert") is None,
    reason="needs tensorflow and ai-edge-litert",
)
TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="exports in this process under TensorFlow (a subprocess elsewhere)",
)


def _write(tmp_path, name, fn, shape):
    """A float32 TFLite file of the TensorFlow function `fn` of one input of `shape`."""
    import tensorflow as tf

    function = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(converter.convert())
    return str(path)


def _unfused_split(path):
    """(delegated, all) op-name counts from LiteRT with delegate node fusion off: each op
    XNNPACK takes is then one DELEGATE node with exactly that op's outputs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, experimental_disable_delegate_node_fusion=True)
    interpreter.allocate_tensors()
    nodes = tflite_nodes(interpreter)
    by_outputs = {tuple(outputs): name for _, name, _, outputs in nodes if name != "DELEGATE"}
    delegated = [by_outputs[tuple(outputs)] for _, name, _, outputs in nodes if name == "DELEGATE"]
    return _count(delegated), _count(name for _, name, _, _ in nodes if name != "DELEGATE")


def _count(names):
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _file_op_count(path):
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(bytearray(f.read()), 0)
    return model.Subgraphs(0).OperatorsLength()


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """Every TFLite variant keras_vit writes, of a tiny classifier, by variant."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("profile")
    model = ViT(image_size=32, patch_size=8, hidden_dim=32, num_layers=1, num_heads=4,
                mlp_dim=64, num_classes=10)
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    export.export(model, folder, quantize=list(export.QUANTIZATIONS), representative_data=images,
                  eval_images=images[:2], name="tiny", num_calibration_samples=8, verbose=False)
    return {q: str(folder / f"tiny_{export.FILE_SUFFIXES[q]}.tflite") for q in export.QUANTIZATIONS}


@TF_ONLY
def test_xnnpack_split_agrees_with_litert_unfused(tiny_files):
    for variant, path in tiny_files.items():
        split = export.xnnpack_split(path)
        delegated, everything = _unfused_split(path)
        assert split["delegated"] == delegated, variant
        assert split["fallback"] == {
            name: n - delegated.get(name, 0) for name, n in everything.items()
            if n > delegated.get(name, 0)}, variant
        assert split["num_ops"] == _file_op_count(path), variant
        assert sum(split["delegated"].values()) + sum(split["fallback"].values()) == split["num_ops"]
        assert split["partitions"] >= 1
    # float32: XNNPACK takes every op, in one partition
    assert export.xnnpack_split(tiny_files["float32"])["fallback"] == {}
    assert export.xnnpack_split(tiny_files["float32"])["partitions"] == 1


def test_xnnpack_split_leaves_an_op_xnnpack_lacks(tmp_path):
    import tensorflow as tf

    path = _write(tmp_path, "cumsum", lambda x: tf.tanh(tf.math.cumsum(x, axis=1)) * x, [1, 8])
    split = export.xnnpack_split(path)
    assert split["fallback"] == {"CUMSUM": 1}
    assert split["delegated"] == _unfused_split(path)[0] == {"MUL": 1, "TANH": 1}
    assert split["partitions"] == 1 and split["num_ops"] == 3


def test_gpu_compatibility_applies_the_delegate_rules(tmp_path):
    import tensorflow as tf

    def verdict(name, fn, shape):
        return [(r["op"], r["reason"]) for r in
                export.gpu_compatibility(_write(tmp_path, name, fn, shape))]

    # x[:, 0] drops an axis (shrink_axis_mask): refused; x[:, 0:1] keeps it: taken.
    assert verdict("token", lambda x: x[:, 0] * 2.0, [1, 5, 4]) == [
        ("STRIDED_SLICE", "Slice does not support shrink_axis_mask parameter.")]
    assert verdict("token_kept", lambda x: x[:, 0:1] * 2.0, [1, 5, 4]) == []
    # an outer-product MUL ([1, 5, 1] x [1, 1, 4]) is refused, a broadcast of one side is not
    assert verdict("outer", lambda x: tf.reduce_mean(x, -1, keepdims=True)
                   * tf.reduce_mean(x, 1, keepdims=True), [1, 5, 4]) == [
        ("MUL", "MUL requires one tensor that not less than second in all dimensions.")]
    assert verdict("scale", lambda x: x * tf.reduce_mean(x, -1, keepdims=True), [1, 5, 4]) == []
    assert verdict("softmax", lambda x: tf.nn.softmax(x) + tf.nn.gelu(x), [1, 5, 4]) == []
    assert ("UNIQUE", "Not supported op UNIQUE") in verdict(
        "unique", lambda x: tf.unique(tf.reshape(x, [-1])).y, [1, 4])


def test_gpu_compatibility_refuses_a_bad_path(tmp_path):
    with pytest.raises(ValueError, match=r"\.tflite"):
        export.gpu_compatibility(tmp_path / "model.onnx")
    with pytest.raises(FileNotFoundError, match="No TFLite file"):
        export.xnnpack_split(tmp_path / "missing.tflite")


def test_analyzer_still_skips_its_gpu_check(tmp_path):
    """Canary: LiteRT's analyzer prints no GPU warning even for an op the GPU delegate lacks
    (UNIQUE). When this fails, the analyzer checks again, and gpu_compatibility (which
    adds its warnings) could leave the rules to it."""
    import tensorflow as tf

    path = _write(tmp_path, "unique", lambda x: tf.unique(tf.reshape(x, [-1])).y, [1, 4])
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_path=path, gpu_compatibility=True)
    assert "UNIQUE" in text.getvalue() and "GPU COMPATIBILITY WARNING" not in text.getvalue()


@TF_ONLY
def test_gpu_compatibility_of_the_float_files(tiny_files):
    """The float32 and float16 files: the GPU delegate takes every op (the "tflite" graph
    form writes the layer norm without an outer-product MUL and reads the class token
    without a strided slice that drops an axis, the two it refused)."""
    for variant in ("float32", "float16"):
        assert export.gpu_compatibility(tiny_files[variant]) == [], variant
