"""The private Keras and LiteRT APIs behind keras_vit.backend.private_apis still behave as
keras_vit uses them: a release that changes one fails here, by name."""

import keras
import numpy as np
import pytest

from keras_vit import ViT
from keras_vit.backend import private_apis


def test_flatten_layers_reaches_nested_sublayers(tiny_config):
    model = ViT(**tiny_config)
    layers = private_apis.flatten_layers(model)
    assert layers[0] is model
    block = model.get_layer("encoder_block_0")
    assert block in layers and block.attention in layers
    assert block.attention not in model.layers  # the public list has only direct children


def test_keras_mask_reads_the_mask_a_masking_layer_attaches():
    x = keras.ops.convert_to_tensor(np.array([[[1.0], [0.0]]], "float32"))
    masked = keras.layers.Masking(mask_value=0.0)(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(private_apis.keras_mask(masked)),
                                  [[True, False]])
    assert private_apis.keras_mask(x) is None and private_apis.keras_mask(None) is None


def test_uses_weight_decay_follows_the_exclusions():
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    bias = keras.Variable(np.ones((2,), "float32"), name="bias")
    optimizer = keras.optimizers.AdamW(weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    assert private_apis.uses_weight_decay(optimizer, kernel)
    assert not private_apis.uses_weight_decay(optimizer, bias)


def test_tflite_op_names_lists_the_ops(tmp_path):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")

    class Add(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def __call__(self, x):
            return tf.tanh(x) * x

    module = Add()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.__call__.get_concrete_function()], module)
    path = tmp_path / "add.tflite"
    path.write_bytes(converter.convert())
    assert private_apis.tflite_op_names(path) == ["MUL", "TANH"]


def test_tflite_nodes_lists_ops_and_delegate_partitions(tmp_path):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    function = tf.function(lambda x: tf.tanh(x) * x,
                           input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    path = tmp_path / "tanh.tflite"
    path.write_bytes(converter.convert())
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()  # the default XNNPACK delegate takes both ops
    nodes = private_apis.tflite_nodes(interpreter)
    assert [name for _, name, _, _ in nodes] == ["TANH", "MUL", "DELEGATE"]
    (_, _, tanh_in, tanh_out), (_, _, mul_in, mul_out), (_, _, d_in, d_out) = nodes
    assert set(mul_in) == set(tanh_in + tanh_out) and d_in == tanh_in and d_out == mul_out


def test_the_jax_trainer_detaches_the_values_and_holds_the_last_step_s():
    if keras.backend.backend() != "jax":
        pytest.skip("Keras detaches the variables' values under JAX only")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    seen = []

    class Look(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            seen.append(([private_apis.stored_value(v) for v in model.variables],
                         private_apis.jax_trainer_state(model)))

    model.predict(np.ones((2, 3), "float32"), callbacks=[Look()], verbose=0)
    (values, state), = seen
    assert values == [None, None]  # detached during the call
    assert [np.asarray(v).shape for v in state["trainable_variables"]] == [(3, 2), (2,)]
    assert all(private_apis.stored_value(v) is not None for v in model.variables)
    assert private_apis.jax_trainer_state(model) is None  # forgotten when the call ends
    model._jax_state, model._jax_state_synced = state, False
    private_apis.forget_jax_trainer_state(model)
    assert private_apis.jax_trainer_state(model) is None and model._jax_state_synced
