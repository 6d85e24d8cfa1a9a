"""No call can leave a ViT unusable, whatever feeds it (issue 21, item 1), and images in
[0, 1] are noticed whatever feeds them (item 6).

Under JAX, Keras 3.15 detaches the variables' values before the first step of fit,
evaluate and predict, and a failure before the call's end used to leave them so: every
later call said "'NoneType' object is not callable". Under TensorFlow, a train step whose
first trace failed could not build the optimizer later. The feeds here are the ones the
ViT's own array checks cannot see before Keras reads them.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from integrity_helpers import Batches, compiled_vit, generator, labels, pixels, usable
from keras_vit import insight

BACKEND = keras.backend.backend()
WRONG = pixels(4, size=16)  # the model takes 32x32 images
WRONG_SIZE = "built for 32x32 images but got 16x16"


def tf_dataset(*batches, unknown=True):
    """A tf.data dataset of `batches` from a one-shot generator: read twice, it is empty.
    `unknown`: the images' spec has unknown dimensions, as `from_generator` often gives."""
    tf = pytest.importorskip("tensorflow")
    batches_once = generator(*batches)
    first = batches[0] if isinstance(batches[0], tuple) else (batches[0],)
    specs = [tf.TensorSpec((None, None, None, 3) if unknown else first[0].shape, tf.float32),
             *(tf.TensorSpec((None,), tf.int64) for _ in first[1:])]
    return tf.data.Dataset.from_generator(
        lambda: batches_once,
        output_signature=tuple(specs) if isinstance(batches[0], tuple) else specs[0])


@pytest.fixture(scope="module")
def shared():
    """One trained tiny ViT for the module (it must survive every test), and 4 images."""
    keras.utils.set_random_seed(0)
    model = compiled_vit()
    images = pixels(4)
    model.fit(images, labels(4), verbose=0)
    return model, images


@pytest.fixture
def trained(shared):
    """The shared ViT, 4 images and its predictions for them now."""
    model, images = shared
    return model, images, model.predict(images, verbose=0)


FEEDS = {
    "PyDataset": lambda batch: Batches(batch),
    "generator": lambda batch: generator(batch),
    "tf.data of unknown shape": lambda batch: tf_dataset(batch),
}


@pytest.mark.parametrize("method, feed", [
    *(("predict", feed) for feed in FEEDS), *(("fit", feed) for feed in FEEDS),
    ("evaluate", "PyDataset")])
def test_a_bad_batch_from_any_feed_leaves_the_model_usable(trained, feed, method, tmp_path):
    model, images, before = trained
    batch = (WRONG,) if method == "predict" else (WRONG, labels(4))
    with pytest.raises(Exception, match=WRONG_SIZE if "tf.data" not in feed
                       else r"\[4,16,16,3\] is not compatible with expected shape \[\?,32,32,3\]"):
        getattr(model, method)(FEEDS[feed](batch), verbose=0)
    assert usable(model, images, before, tmp_path)


@pytest.mark.parametrize("make", [insight.intermediate_model, insight.attention_model])
@pytest.mark.parametrize("feed", ["array", "generator"])
def test_an_insight_model_fed_a_bad_batch_leaves_the_vit_usable(trained, make, feed, tmp_path):
    """The insight models share the ViT's layers and variables, and check as it does."""
    model, images, before = trained
    side = make(model)
    with pytest.raises(ValueError, match=WRONG_SIZE.replace("built", f"{side.name} was built")):
        side.predict(WRONG if feed == "array" else generator((WRONG,)), verbose=0)
    assert usable(model, images, before, tmp_path)
    np.testing.assert_array_equal(side.predict(images, verbose=0),
                                  make(model).predict(images, verbose=0))


@pytest.mark.parametrize("feed", ["PyDataset", "generator"])
def test_a_bad_second_batch_keeps_what_the_first_step_did(feed, tmp_path):
    """A fit that fails at its second batch leaves the model as one step on the first
    batch left it (JAX, PyTorch), or as before the call (TensorFlow, which traces the step
    for both batches first and refuses their unknown size): never without its weights."""
    images = pixels(4)
    one_step = compiled_vit()
    initial = one_step.get_weights()
    one_step.fit(images, labels(4), verbose=0)
    model = compiled_vit()
    model.set_weights(initial)
    batches = ((images, labels(4)), (WRONG, labels(4)))
    with pytest.raises(ValueError, match=WRONG_SIZE + "|images of unknown size"):
        model.fit(Batches(*batches) if feed == "PyDataset" else generator(*batches), verbose=0)
    weights = model.get_weights()
    kept = [np.allclose(a, b, atol=1e-6) for a, b in zip(weights, one_step.get_weights())]
    untouched = [np.array_equal(a, b) for a, b in zip(weights, initial)]
    assert all(kept) or all(untouched)
    assert usable(model, images, model.predict(images, verbose=0), tmp_path)


def test_a_failing_feed_or_an_interrupt_leaves_the_model_usable(trained, tmp_path):
    model, images, before = trained

    class Broken(Batches):
        def __getitem__(self, index):
            if index == 1:
                raise OSError("the disk went away")
            return super().__getitem__(index)

    class Interrupt(keras.callbacks.Callback):
        def on_predict_batch_begin(self, batch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(OSError, match="the disk went away"):
        model.predict(Broken((images,), (images,)), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        model.predict(images, callbacks=[Interrupt()], verbose=0)
    assert usable(model, images, before, tmp_path)


def test_a_tf_data_dataset_of_unknown_image_size_runs(trained):
    """Its images get the model's shape before the model sees them (TensorFlow used to
    trace the model for unknown sizes: "unsupported operand type(s) for *")."""
    model, images, before = trained
    np.testing.assert_allclose(model.predict(tf_dataset(images[:2], images[2:]), verbose=0),
                               before, rtol=1e-5, atol=1e-6)
    model.fit(tf_dataset((images, labels(4))), verbose=0)


@pytest.mark.parametrize("feed", ["tf.data", "tf.data of unknown shape", "PyDataset", "generator"])
def test_images_in_0_1_warn_whatever_feeds_them(feed):
    """Checked on the first batch as it passes: the data is read once (a one-shot
    generator behind the tf.data dataset), and every batch reaches the model."""
    model = compiled_vit()
    model.predict(pixels(1), verbose=0)  # built: Keras reads no batch to build it
    images = pixels(6, high=1.0)
    batches = (images[:2],), (images[2:4],), (images[4:],)
    data = {"tf.data": lambda: tf_dataset(*batches, unknown=False),
            "tf.data of unknown shape": lambda: tf_dataset(*batches),
            "PyDataset": lambda: Batches(*batches),
            "generator": lambda: generator(*batches)}[feed]()
    with pytest.warns(UserWarning, match=r"float images within \[0, 1\].*include_preprocessing"):
        outputs = model.predict(data, verbose=0)
    np.testing.assert_allclose(outputs, model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("feed", ["tf.data", "PyDataset", "generator"])
def test_raw_pixels_from_any_feed_do_not_warn(feed):
    model = compiled_vit()
    model.predict(pixels(1), verbose=0)
    batch = (pixels(2),)
    data = {"tf.data": lambda: tf_dataset(batch, unknown=False),
            "PyDataset": lambda: Batches(batch), "generator": lambda: generator(batch)}[feed]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert model.predict(data, verbose=0).shape == (2, 10)
    assert not [w for w in caught if "include_preprocessing" in str(w.message)]


def test_batches_8_devices_do_not_divide_leave_the_model_usable():
    """12 or 3 images over a `DataParallel` of 8 simulated CPU devices (JAX's
    IndivisibleError) used to leave the model without its variables' values."""
    if BACKEND != "jax":
        pytest.skip("runs its subprocess under KERAS_BACKEND=jax only, once")
    worker = Path(__file__).with_name("integrity_helpers.py")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8 "
                                     "--xla_backend_optimization_level=0")
    run = subprocess.run([sys.executable, str(worker)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    assert all(result["errors"].values()), result["errors"]  # every call failed...
    assert result["same"]  # ...and the model predicts as before, trains and saves
