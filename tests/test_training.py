"""Optimisers, schedules, precision, on-device augmentation, resume and the time budget."""

import json

import keras
import numpy as np
import pytest

from keras_vit import data, precision, training
from keras_vit.jit import resolve_jit_compile
from tiny import TINY_FASHION_MNIST
from keras_vit.model import ViT


def small_vit(**overrides):
    return ViT(**{**TINY_FASHION_MNIST, **overrides})


def toy_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, 28, 28, 1)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, n)]
    return x, y


def test_weight_decay_skips_biases_norms_position_embedding_and_class_token():
    model = small_vit()
    optimizer = training.make_adamw(0.1, weight_decay=0.5)
    decayed, excluded = training.decayed_variables(optimizer, model)
    excluded_paths = {v.path for v in excluded}
    for v in model.trainable_variables:
        should_skip = v.name in ("bias", "gamma", "beta", "embedding", "token")
        assert (v.path in excluded_paths) == should_skip, v.path
    assert any("position_embedding" in p for p in excluded_paths)
    assert any("class_token" in p for p in excluded_paths)
    assert any("attention" in v.path for v in decayed) and all(v.name == "kernel" for v in decayed)
    zoo = ViT(**{**TINY_FASHION_MNIST, "pooling": "map"}, num_register_tokens=2,
              layer_scale_init=0.1, class_token_position=False)
    _, zoo_excluded = training.decayed_variables(optimizer, zoo)
    assert {"pooling/probe", "register_tokens/tokens", "encoder_block_0/attention_scale",
            "encoder_block_0/mlp_scale"} <= {v.path for v in zoo_excluded}

    # Really excluded: with zero gradients Adam's step is 0, so only weight decay moves
    # variables, by a factor (1 - lr * wd) = 0.95.
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    optimizer.apply([keras.ops.zeros(v.shape, v.dtype) for v in model.trainable_variables],
                    model.trainable_variables)
    for v in model.trainable_variables:
        expected = before[v.path] * (1.0 if v.path in excluded_paths else 0.95)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=v.path)


def test_warmup_cosine_schedule():
    schedule = training.WarmupCosine(1e-3, total_steps=110, warmup_steps=10, end=1e-5)
    lr = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(lr, [0.0, 5e-4, 1e-3, 0.5 * (1e-3 + 1e-5), 1e-5, 1e-5], rtol=1e-5)
    restored = training.WarmupCosine.from_config(schedule.get_config())
    assert restored.get_config() == schedule.get_config()
    with pytest.raises(ValueError):
        training.WarmupCosine(1e-3, total_steps=5, warmup_steps=10)


def test_sgd_finetuning_optimizer_and_loss():
    sgd = training.make_sgd(0.01)
    assert sgd.momentum == 0.9 and sgd.global_clipnorm == 1.0 and not sgd.weight_decay
    assert training.make_adamw(1e-3).global_clipnorm == 1.0
    loss = training.make_loss(0.1)
    y = np.eye(2, dtype="float32")[[0]]
    # label smoothing 0.1 over 2 classes: targets (0.95, 0.05).
    expected = -(0.95 * np.log(0.5) + 0.05 * np.log(0.5))
    np.testing.assert_allclose(float(loss(y, np.zeros((1, 2), "float32"))), expected, rtol=1e-5)


def test_mixed_precision_switch_and_float32_copy():
    assert training.set_mixed_precision(True) == "mixed_bfloat16"
    model = small_vit()
    assert model.layers[-1].dtype_policy.name == "float32"  # the head stays float32
    assert model.get_layer("encoder_block_0").compute_dtype == "bfloat16"
    copy = precision.as_float32(model)
    training.set_mixed_precision(False)
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    for a, b in zip(model.weights, copy.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_augmented_model_trains_and_keeps_the_vit_plain(tmp_path):
    vit = small_vit()
    augmenter = data.make_augmenter(data.AugmentConfig(translate=0.1, flip=True, random_erasing=0.5))
    wrapper = training.AugmentedModel(vit, augmenter)
    wrapper.compile(optimizer=training.make_adamw(1e-3), loss=training.make_loss(),
                    jit_compile=resolve_jit_compile("auto", wrapper))
    x, y = toy_data()
    wrapper.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # Augmentation runs only in training: inference through the wrapper is the ViT's.
    np.testing.assert_allclose(wrapper.predict(x[:4], verbose=0), vit.predict(x[:4], verbose=0),
                               rtol=1e-5, atol=1e-5)
    vit.save(tmp_path / "vit.keras")
    loaded = keras.saving.load_model(tmp_path / "vit.keras")
    assert isinstance(loaded, ViT) and not any("random" in layer.name for layer in loaded.layers)


def test_augmented_model_augments_in_training_only():
    """Random erasing with probability 1 changes every image, in training only: called with
    training=True and in `fit` (a twin without the augmenter learns something else)."""

    def erasing():
        return data.make_augmenter(data.AugmentConfig(random_erasing=1.0), seed=1)

    inputs = keras.Input((28, 28, 1))
    identity = keras.Model(inputs, keras.layers.Identity()(inputs))
    wrapper = training.AugmentedModel(identity, erasing())
    x, y = toy_data(8)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(wrapper(x)), x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(wrapper(x, training=False)), x)
    augmented = keras.ops.convert_to_numpy(wrapper(x, training=True))
    assert all(not np.array_equal(a, b) for a, b in zip(augmented, x))

    def fitted(augmenter):
        keras.utils.set_random_seed(0)
        linear = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                   keras.layers.Dense(10, kernel_initializer="zeros")])
        model = training.AugmentedModel(linear, augmenter)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=training.make_loss())
        model.train_on_batch(x, y)
        return keras.ops.convert_to_numpy(linear.layers[-1].kernel)

    assert not np.allclose(fitted(erasing()), fitted([]), rtol=0, atol=1e-6)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")


class RecordStart(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self, "first"):
            self.first = (epoch, int(self.model.optimizer.iterations.numpy()))


def _fit(output_dir, epochs, extra, signature=None, **model_overrides):
    keras.utils.set_random_seed(0)
    model = small_vit(**model_overrides)
    model.compile(optimizer=training.make_adamw(1e-3), loss=training.make_loss())
    model(np.zeros((1, 28, 28, 1), "float32"))
    callbacks = training.make_callbacks(output_dir, signature or {"model": model.get_config()},
                                        tensorboard=False)
    x, y = toy_data()
    model.fit(x, y, batch_size=8, epochs=epochs, callbacks=callbacks + extra, verbose=0)
    return model


def test_resume_after_interruption_continues_from_the_saved_epoch(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, 4, [Interrupt()])
    meta = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] == 2
    record = RecordStart()
    model = _fit(tmp_path, 4, [record])
    assert record.first == (2, 8)  # epoch 2, after 2 epochs x 4 steps, optimizer state kept
    assert int(model.optimizer.iterations.numpy()) == 16
    epochs = [line.split(",")[0] for line in (tmp_path / "history.csv").read_text().splitlines()]
    assert epochs[1:] == ["0", "1", "2", "3"]


def test_resume_directory_of_a_different_model_is_refused(tmp_path):
    _fit(tmp_path, 1, [])
    with pytest.raises(ValueError, match="different model.*hidden_dim"):
        small = small_vit(hidden_dim=TINY_FASHION_MNIST["hidden_dim"] // 2)
        training.make_callbacks(tmp_path, {"model": small.get_config()})
    (tmp_path / "other" / "backup").mkdir(parents=True)
    (tmp_path / "other" / "backup" / "x.weights.h5").write_text("")
    with pytest.raises(ValueError, match="not written by this training code"):
        training.make_callbacks(tmp_path / "other", {"model": {}})


def test_unreadable_checkpoint_names_the_file_and_suggests_no_resume(tmp_path):
    _fit(tmp_path, 1, [])
    backup = tmp_path / "backup"
    weights, metadata, signature = (training.CHECKPOINT_WEIGHTS, training.CHECKPOINT_METADATA,
                                    training.RUN_SIGNATURE)
    good = {name: (backup / name).read_bytes() for name in (weights, metadata, signature)}
    for name, broken in ((weights, good[weights][:1000]), (metadata, b'{"epoch": '),
                         (metadata, b"[2]"), (signature, b'{"model": ')):
        (backup / name).write_bytes(broken)
        with pytest.raises(ValueError, match=f"(?s)Can't resume from .*{name}.*--no-resume"):
            _fit(tmp_path, 2, [])
        (backup / name).write_bytes(good[name])


def test_clear_resume_dir_deletes_only_what_training_wrote(tmp_path):
    backup = tmp_path / "backup"
    training.check_resume_dir(backup, {"model": {}})
    (backup / training.CHECKPOINT_WEIGHTS).write_text("")
    (backup / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="did not write notes.txt.*another --output-dir"):
        training.clear_resume_dir(backup)
    assert sorted(p.name for p in backup.iterdir()) == [
        "latest.weights.h5", "notes.txt", "run_signature.json"]
    (backup / "notes.txt").unlink()
    training.clear_resume_dir(backup)
    assert not backup.exists()
    backup.mkdir()  # without a run signature, nothing in there is known to be ours
    (backup / training.CHECKPOINT_WEIGHTS).write_text("")
    with pytest.raises(ValueError, match="did not write latest.weights.h5"):
        training.clear_resume_dir(backup)
    assert (backup / training.CHECKPOINT_WEIGHTS).exists()


def test_time_budget_stops_cleanly(tmp_path):
    budget = training.TimeBudget(0.001, verbose=False)
    model = small_vit()
    model.compile(optimizer="adam", loss=training.make_loss())
    x, y = toy_data()
    history = model.fit(x, y, batch_size=16, epochs=5, callbacks=[budget], verbose=0)
    assert len(history.epoch) == 1 and budget.stopped_early


def test_time_budget_shortens_the_schedule():
    schedule = training.WarmupCosine(1e-3, total_steps=100 * 10, warmup_steps=10)
    budget = training.TimeBudget(100, start_time=0, schedule=schedule, steps_per_epoch=10,
                                 verbose=False)

    class FakeModel:
        stop_training = False
        retraced = 0

        def make_train_function(self, force=False):
            self.retraced += 1

    budget.set_model(FakeModel())
    budget.on_train_begin()
    import time as time_module

    now = time_module.time()
    budget.start_time = now - 20  # 20 s spent; epochs take ~5 s after a 15 s first one
    budget._durations = [15.0]
    budget._epochs_run = 1
    budget._epoch_start = now - 5
    budget._batches = 0
    budget.on_epoch_end(1)
    # 80 s left, less 10 s to re-trace the train step, / 5 s per epoch = 14 more epochs
    # after the 2 run: the schedule now ends after epoch 16 (15 if the clock ticked).
    assert budget.replanned and budget.final_epoch in (15, 16)
    assert schedule.total_steps == budget.final_epoch * 10
    assert budget.model.retraced == 1
    budget.on_epoch_end(budget.final_epoch - 1)
    assert budget.model.stop_training


def test_one_jit_compile_rule_for_vit_compile_and_the_recipes():
    """"auto" means XLA except on torch (torch.compile), when run eagerly and under a
    tf.distribute strategy; `ViT.compile` follows the rule, True and False pass through."""
    xla = keras.backend.backend() != "torch"
    assert resolve_jit_compile() is xla
    assert resolve_jit_compile("auto", run_eagerly=True) is False
    assert resolve_jit_compile(True) is True and resolve_jit_compile(False) is False
    model = small_vit()
    model.compile(optimizer="adamw", loss="mse")
    assert model.jit_compile is xla  # on TensorFlow on a CPU too, where Keras's "auto" is off
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy(["CPU:0"]).scope():
            assert resolve_jit_compile() is False
            in_scope = small_vit()
        assert resolve_jit_compile("auto", in_scope) is False  # built in a strategy's scope
