"""The functional ViT: architecture, presets, initialisation, precision, training, saving, errors."""

import importlib.util
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_vit
from layer_harness import float32_tolerance

# The original implementation's parameter counts at 224x224 with a 1000-class head.
REFERENCE_PARAMS = {
    "ti16": 5_717_416,
    "s16": 22_050_664,
    "s32": 22_878_952,
    "b16": 86_567_656,
    "b32": 88_224_232,
    "b8": 86_576_872,
    "l16": 304_326_632,
    "l32": 306_535_400,
    "h14": 632_045_800,
}
BACKENDS = ("tensorflow", "jax", "torch")


def numpy_outputs(model, images):
    return ops.convert_to_numpy(model(images))


def test_presets_are_listed_with_descriptions():
    listed = keras_vit.presets.list_presets()
    assert set(listed) >= set(REFERENCE_PARAMS)
    assert all(listed[name] for name in REFERENCE_PARAMS)


@pytest.mark.slow
@pytest.mark.parametrize("preset", REFERENCE_PARAMS)
def test_preset_parameter_count_matches_the_original(preset):
    model = keras_vit.ViT.from_preset(preset, weights=None)
    assert model.count_params() == REFERENCE_PARAMS[preset]
    assert model.output_shape == (None, 1000)


def test_from_preset_applies_overrides():
    model = keras_vit.ViT.from_preset(
        "ti16", weights=None, image_size=64, num_classes=7, num_layers=1, drop_path_rate=0.1
    )
    assert model.input_shape == (None, 64, 64, 3)
    assert model.output_shape == (None, 7)
    assert model.hidden_dim == 192 and model.num_layers == 1
    assert model.get_layer("encoder_block_0").drop_path_rate == 0.0


def test_forward_shapes_names_and_summary(tiny_config, images):
    model = keras_vit.ViT(**tiny_config)
    assert numpy_outputs(model, images).shape == (2, 10)
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["images", "rescaling", "patch_embedding", "class_token", "position_embedding"]
    assert names[-3:] == ["encoder_norm", "pooling", "head"]
    assert model.get_layer("position_embedding").embedding.shape == (1, 17, 32)
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    assert "encoder_block_1" in "\n".join(lines)


@pytest.mark.parametrize("pooling, tokens", [("token", 17), ("gap", 16)])
def test_pooling_modes(tiny_config, images, pooling, tokens):
    model = keras_vit.ViT(pooling=pooling, **tiny_config)
    assert model.get_layer("position_embedding").embedding.shape[1] == tokens
    assert (pooling == "token") == ("class_token" in [layer.name for layer in model.layers])
    assert numpy_outputs(model, images).shape == (2, 10)


def test_include_top_false_returns_pooled_features(tiny_config, images):
    features = keras_vit.ViT(include_top=False, **tiny_config)
    assert numpy_outputs(features, images).shape == (2, 32)
    with_repr = keras_vit.ViT(include_top=False, representation_size=24, **tiny_config)
    out = numpy_outputs(with_repr, images)
    assert out.shape == (2, 24) and np.abs(out).max() <= 1.0  # tanh


def test_features_feed_the_head(tiny_config, images):
    """The classifier is the head applied to the include_top=False features."""
    model = keras_vit.ViT(**tiny_config)
    head = model.get_layer("head")
    head.kernel.assign(np.random.default_rng(0).normal(size=head.kernel.shape))
    features = keras.Model(model.input, model.get_layer("pooling").output)
    expected = ops.convert_to_numpy(head(features(images)))
    np.testing.assert_allclose(numpy_outputs(model, images), expected, rtol=1e-5, atol=1e-5)


def test_non_square_images_and_grayscale(tiny_config):
    config = {**tiny_config, "image_size": (32, 48), "num_channels": 1}
    model = keras_vit.ViT(**config)
    assert model.get_layer("position_embedding").grid_size == (4, 6)
    x = np.zeros((3, 32, 48, 1), "uint8")
    assert numpy_outputs(model, x).shape == (3, 10)


def test_preprocessing_rescales_pixels_to_minus_one_one(tiny_config, images):
    with_pre = keras_vit.ViT(**tiny_config)
    head = with_pre.get_layer("head")  # zero-initialised: every image's logits would be 0
    head.kernel.assign(np.random.default_rng(0).normal(size=head.kernel.shape))
    without = keras_vit.ViT(include_preprocessing=False, **tiny_config)
    without.set_weights(with_pre.get_weights())
    assert np.ptp(numpy_outputs(with_pre, images)) > 0.1
    np.testing.assert_allclose(
        numpy_outputs(with_pre, images),
        numpy_outputs(without, images / 127.5 - 1.0),
        rtol=float32_tolerance(),
        atol=float32_tolerance(),
    )
    uint8_images = images.astype("uint8")
    np.testing.assert_allclose(
        numpy_outputs(with_pre, uint8_images),
        numpy_outputs(with_pre, uint8_images.astype("float32")),
        atol=1e-6,
    )


def test_initialisation_follows_the_original():
    model = keras_vit.ViT(
        image_size=64, patch_size=8, hidden_dim=256, num_layers=1, num_heads=4, mlp_dim=512
    )
    weight = lambda layer, attr: ops.convert_to_numpy(getattr(model.get_layer(layer), attr))
    block = model.get_layer("encoder_block_0")
    np.testing.assert_array_equal(weight("class_token", "token"), 0.0)
    np.testing.assert_array_equal(weight("head", "kernel"), 0.0)
    assert abs(weight("position_embedding", "embedding").std() - 0.02) < 0.002
    for dense in (block.mlp_dense_1, block.mlp_dense_2):
        bias = ops.convert_to_numpy(dense.bias)
        assert 0 < np.abs(bias).max() < 1e-5
        kernel = ops.convert_to_numpy(dense.kernel)
        limit = np.sqrt(6 / sum(kernel.shape))
        assert limit * 0.9 < np.abs(kernel).max() <= limit
    query = ops.convert_to_numpy(block.attention.query_dense.kernel)
    assert query.shape == (256, 4, 64)
    assert np.sqrt(3 / 256) * 0.9 < np.abs(query).max() <= np.sqrt(3 / 256)
    assert model.get_layer("encoder_norm").epsilon == 1e-6


def test_config_round_trip(tiny_config):
    model = keras_vit.ViT(pooling="gap", representation_size=16, drop_path_rate=0.1, **tiny_config)
    config = model.get_config()
    json.dumps(config)
    clone = keras_vit.ViT.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_forward(tiny_config, images, policy):
    keras.config.set_dtype_policy(policy)
    model = keras_vit.ViT(**tiny_config)
    compute = policy.split("_")[1]
    assert model.get_layer("encoder_block_0").compute_dtype == compute
    assert model.get_layer("patch_embedding").projection.kernel.dtype == "float32"
    logits = model(images)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    keras.config.set_dtype_policy("float32")
    reference = keras_vit.ViT(**tiny_config)
    reference.set_weights(model.get_weights())
    reference.get_layer("head").kernel.assign(np.ones((32, 10)) * 0.1)
    model.get_layer("head").kernel.assign(np.ones((32, 10)) * 0.1)
    np.testing.assert_allclose(
        ops.convert_to_numpy(model(images)), numpy_outputs(reference, images), atol=0.1
    )


def test_explicit_dtype_argument(tiny_config, images):
    model = keras_vit.ViT(dtype="mixed_bfloat16", **tiny_config)
    assert model.get_layer("encoder_block_1").compute_dtype == "bfloat16"
    assert model.get_config()["dtype"] == "mixed_bfloat16"
    assert numpy_outputs(model, images).shape == (2, 10)


def test_fit_on_tf_data(tiny_config):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 10, (16,))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model = keras_vit.ViT(dropout_rate=0.1, drop_path_rate=0.1, **tiny_config)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    before = [ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(dataset, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    after = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert sum(not np.array_equal(a, b) for a, b in zip(before, after)) == len(before)


def test_compile_auto_turns_xla_on_for_tensorflow(tiny_config):
    """Keras turns XLA off for TensorFlow on a CPU; a ViT's "auto" turns it on."""
    model = keras_vit.ViT(**tiny_config)
    model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.compile(optimizer="adamw", loss="mse")
    if keras.backend.backend() == "tensorflow":
        assert model.jit_compile is True
    else:
        assert model.jit_compile == plain.jit_compile
    model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy", jit_compile=False)
    assert model.jit_compile is False
    model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy", run_eagerly=True)
    assert model.jit_compile is False


def test_a_compiled_model_loads_compiled(tiny_config, images, tmp_path):
    model = keras_vit.ViT(**tiny_config)
    model.compile(
        optimizer=keras.optimizers.AdamW(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.train_on_batch(images, np.array([1, 2]))
    assert model.get_compile_config()["jit_compile"] == "auto"
    path = str(tmp_path / "compiled.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when it skips compiling a loaded model
        loaded = keras.saving.load_model(path)
    assert loaded.compiled and isinstance(loaded.optimizer, keras.optimizers.AdamW)
    assert loaded.jit_compile == model.jit_compile
    np.testing.assert_allclose(
        float(loaded.optimizer.learning_rate), float(model.optimizer.learning_rate)
    )
    assert np.isfinite(loaded.train_on_batch(images, np.array([1, 2])))


def test_save_and_load_round_trip(tiny_config, images, tmp_path):
    model = keras_vit.ViT(pooling="gap", **tiny_config)
    model.get_layer("head").kernel.assign(np.random.default_rng(0).normal(size=(32, 10)))
    path = str(tmp_path / "vit.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_vit.ViT)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(numpy_outputs(loaded, images), numpy_outputs(model, images))


LOAD_SCRIPT = """
import sys, numpy as np, keras, keras_vit
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(np.load(sys.argv[2]))))
"""


@pytest.mark.slow
@pytest.mark.parametrize("other", BACKENDS)
def test_keras_file_loads_under_another_backend(tiny_config, images, tmp_path, other):
    if other == keras.backend.backend():
        pytest.skip("same backend: covered by test_save_and_load_round_trip")
    model = keras_vit.ViT(**tiny_config)
    model.get_layer("head").kernel.assign(np.random.default_rng(0).normal(size=(32, 10)))
    model.save(tmp_path / "vit.keras")
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "KERAS_BACKEND": other}
    subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, tmp_path / "vit.keras", tmp_path / "images.npy",
         tmp_path / "out.npy"],
        env=env,
        check=True,
    )
    tolerance = float32_tolerance(accelerator=1e-2)  # each backend's own TF32 rounding
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), numpy_outputs(model, images), rtol=tolerance,
        atol=tolerance,
    )


BAD_CONFIGS = {
    "image size not divisible": (dict(image_size=30), "divisible by patch_size"),
    "heads do not divide width": (dict(num_heads=5), r"hidden_dim \(32\) must be divisible"),
    "zero depth": (dict(num_layers=0), "num_layers must be a positive integer"),
    "negative width": (dict(hidden_dim=-32), "hidden_dim must be a positive integer"),
    "zero image size": (dict(image_size=0), "image_size must be a positive int"),
    "zero channels": (dict(num_channels=0), "num_channels must be a positive integer"),
    "bad pooling": (dict(pooling="max"), "pooling must be one of .*'probe'"),
    "bad dropout": (dict(dropout_rate=1.5), r"dropout_rate must be in \[0, 1\)"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_configuration_fails_clearly(tiny_config, case):
    overrides, message = BAD_CONFIGS[case]
    with pytest.raises(ValueError, match=message):
        keras_vit.ViT(**{**tiny_config, **overrides})


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown preset 'b17'.*b16.*ti16"):
        keras_vit.ViT.from_preset("b17", weights=None)


def test_wrong_channel_count_fails_clearly(tiny_config):
    model = keras_vit.ViT(**tiny_config)
    with pytest.raises(ValueError, match="built for 3-channel images .* got 1 channels"):
        model(np.zeros((2, 32, 32, 1), "float32"))


def test_single_image_without_batch_axis_fails_clearly(tiny_config, images):
    model = keras_vit.ViT(**tiny_config)
    with pytest.raises(ValueError, match=r"without a batch axis.*image\[None\]"):
        model(images[0])
    with pytest.raises(ValueError, match="without a batch axis"):
        model.predict(images[0], verbose=0)


def test_wrong_image_size_fails_clearly(tiny_config):
    model = keras_vit.ViT(**tiny_config)
    with pytest.raises(ValueError, match="built for 32x32 images but got 48x48"):
        model(np.zeros((1, 48, 48, 3), "float32"))


def test_a_bad_batch_leaves_a_trained_model_usable(tiny_config, images, tmp_path):
    """Under JAX a shape error raised while Keras traces a step used to leave the model's
    variables purged (every later call: "'NoneType' object is not callable"); under
    TensorFlow the second bad call failed with an unrelated message."""
    model = keras_vit.ViT(**tiny_config)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    labels = np.array([1, 2])
    model.fit(images, labels, epochs=1, verbose=0)
    before = model.predict(images, verbose=0)
    wrong = np.zeros((2, 16, 16, 3), "float32")
    calls = [lambda: model.predict(wrong, verbose=0), lambda: model.predict(wrong, verbose=0),
             lambda: model.evaluate(wrong, labels, verbose=0),
             lambda: model.fit(wrong, labels, verbose=0),
             lambda: model.fit(images, labels, validation_data=(wrong, labels), verbose=0),
             lambda: model.train_on_batch(wrong, labels),
             lambda: model.predict_on_batch(wrong)]
    if importlib.util.find_spec("tensorflow") is not None:  # and a tf.data batch
        import tensorflow as tf

        calls.append(lambda: model.predict(tf.data.Dataset.from_tensor_slices(wrong).batch(2),
                                           verbose=0))
    for call in calls:
        with pytest.raises(ValueError, match="built for 32x32 images but got 16x16"):
            call()
    np.testing.assert_array_equal(model.predict(images, verbose=0), before)
    model.fit(images, labels, epochs=1, verbose=0)
    assert len(model.get_weights()) == len(model.weights)
    model.save(tmp_path / "model.keras")


@pytest.mark.parametrize("batch, message", [
    (np.zeros((0, 32, 32, 3), "float32"), "empty batch"),
    ([np.zeros((32, 32, 3), "float32")] * 2, r"Python list of 2 items: pass `np.stack\(images\)`"),
    (np.zeros((2, 32, 32, 3), "complex64"), "real-valued pixel values, got images of dtype complex64"),
    ({"a": np.zeros((2, 32, 32, 3)), "b": np.zeros((2, 32, 32, 3))}, "one input"),
])
def test_unusable_batches_fail_clearly(tiny_config, batch, message):
    model = keras_vit.ViT(**tiny_config)
    with pytest.raises(ValueError, match=message):
        model.predict(batch, verbose=0)


@pytest.mark.parametrize("batch, what", [
    (np.ones((2, 32, 32, 3), "int8"), "images of dtype int8"),
    (np.ones((2, 32, 32, 3), bool), "images of dtype bool"),
    (np.full((2, 32, 32, 3), 0.5, "float32"), r"float images within \[0, 1\]"),
    (np.full((2, 32, 32, 3), -0.5, "float32"), "negative values"),
])
def test_pixels_outside_0_255_warn_once(tiny_config, batch, what):
    model = keras_vit.ViT(**tiny_config)
    with pytest.warns(UserWarning, match=f"{what}.*include_preprocessing=True.*0..255"):
        model.predict(batch, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict(batch, verbose=0)  # once per model
        model(batch)
        plain = keras_vit.ViT(**tiny_config, include_preprocessing=False)
        plain.predict(batch, verbose=0)
    assert not [w for w in caught if "include_preprocessing" in str(w.message)]


def test_raw_pixels_do_not_warn(tiny_config, images):
    model = keras_vit.ViT(**tiny_config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in (images, images.astype("uint8"), np.zeros_like(images), np.ones_like(images)):
            model.predict(batch, verbose=0)
            model(batch)
    assert not [w for w in caught if "include_preprocessing" in str(w.message)]
