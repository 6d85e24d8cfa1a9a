"""Runs the recipes with `--distribute` on simulated devices; run by tests/test_distribution.py.

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python tests/recipe_distribution_worker.py jax OUT
    KERAS_BACKEND=tensorflow python tests/recipe_distribution_worker.py tensorflow OUT

"jax" (8 devices): fashion_mnist with `--distribute model --model-devices 2`, interrupted
after its first epoch and run again (it must resume there, its weights still sharded);
with `--distribute auto`, the numpy pipeline and a time budget that stops it after one
epoch; a vit_jax checkpoint loaded with `from_preset` into a model-parallel ViT, and the
cifar10_finetune recipe fine-tuning it (TFDS mock data). "tensorflow" (2 logical CPUs):
fashion_mnist with `--distribute data`, interrupted and resumed. Both: a global batch the
replicas do not divide. One JSON line of results goes to stdout.
"""

import json
import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

from tiny import TINY_FASHION_MNIST, recipe_model_args, write_fashion_mnist  # noqa: E402


def with_callbacks(*callbacks):
    """The recipes' callbacks, and `callbacks` after them."""
    from keras_vit import training

    make = training.make_callbacks
    return mock.patch.object(training, "make_callbacks",
                             lambda *a, **k: make(*a, **k) + list(callbacks))


def recorder():
    """A callback that records where the run starts: epoch, optimizer step, how many of the
    fitted model's variables are sharded then (after BackupAndRestore restored them), and
    over how many devices its variables lie (JAX) or it has replicas (TensorFlow)."""
    import keras

    from keras_vit import distribution

    def devices(model):
        if keras.backend.backend() == "tensorflow":
            return model.distribute_strategy.num_replicas_in_sync
        return len(set().union(*(v.value.sharding.device_set for v in model.variables)))

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if not hasattr(self, "start"):
                self.start = {"epoch": epoch,
                              "step": int(self.model.optimizer.iterations.numpy()),
                              "sharded": len(distribution.sharded_variables(self.model)),
                              "devices": devices(self.model)}

    return Record()


def interrupter(at_epoch):
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == at_epoch:
                raise KeyboardInterrupt("simulated kill")

    return Interrupt()


def fashion_mnist(data_dir, out, *options, callbacks=()):
    """What fashion_mnist wrote in a run with `options`: from metrics.json, the epochs in
    history.csv and the TensorBoard event files."""
    from recipes import fashion_mnist

    args = ["--data-dir", str(data_dir), "--output-dir", str(out), "--verbose", "0",
            *recipe_model_args(TINY_FASHION_MNIST), *options]
    with with_callbacks(*callbacks):
        fashion_mnist.main(args)
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = [line.split(",")[0] for line in (out / "history.csv").read_text().splitlines()[1:]]
    return {"distribution": metrics["distribution"], "epochs": metrics["epochs"],
            "history_epochs": epochs,
            "tensorboard": sorted({p.parent.name for p in (out / "logs").glob("*/events.out.*")})}


def refused(data_dir, out, *options):
    """The ValueError of a run with `options`, which must fail before training."""
    try:
        fashion_mnist(data_dir, out, *options)
    except ValueError as error:
        return {"error": str(error), "wrote": sorted(p.name for p in out.glob("*"))}
    return {"error": None}


def interrupted_and_resumed(data_dir, out, *options):
    """Two epochs with `options`, killed before the second one, then run again."""
    try:
        fashion_mnist(data_dir, out, "--epochs", "2", *options, callbacks=[interrupter(1)])
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    record = recorder()
    result = fashion_mnist(data_dir, out, "--epochs", "2", *options, callbacks=[record])
    return dict(result, interrupted=interrupted, start=record.start)


def pretrained_into_shards(out):
    """A vit_jax checkpoint loaded with from_preset into a model-parallel ViT, against the
    same load on one device; then the cifar10_finetune recipe on it (TFDS mock data)."""
    import tensorflow_datasets as tfds

    from checkpoint_files import google_params, write_vit_jax
    from keras_vit import ViT, distribution
    from recipes import cifar10_finetune

    path = write_vit_jax(out / "vit_jax.npz", google_params())
    overrides = dict(num_classes=10, image_size=48)  # a new head, a resampled position table
    one_device = ViT.from_preset(path, **overrides)
    setup = distribution.for_training("model", one_device.get_config(), batch_size=8,
                                      model_devices=2)
    with setup.scope():
        sharded = ViT.from_preset(path, **overrides)
    images = np.random.default_rng(0).uniform(0, 255, (8, 48, 48, 3)).astype("float32")
    with setup.scope():
        logits = np.asarray(sharded.predict(images, batch_size=8, verbose=0))
    finetune = out / "cifar10_finetune"
    with tfds.testing.mock_data(num_examples=16):
        cifar10_finetune.main([
            "--preset", path, "--image-size", "32", "--steps", "2", "--warmup-steps", "1",
            "--per-device-batch-size", "2", "--distribute", "model", "--model-devices", "2",
            "--output-dir", str(finetune), "--verbose", "0"])
        try:  # ViT-Ti's 3 heads: no model axis over 8 devices
            cifar10_finetune.main(["--preset", "ti16", "--weights", "none", "--distribute",
                                   "model", "--output-dir", str(out / "ti16")])
            ti16_error = None
        except ValueError as error:
            ti16_error = str(error)
    metrics = json.loads((finetune / "metrics.json").read_text())
    return {
        "ti16_error": ti16_error,
        "weights_max_abs": max(float(np.max(np.abs(np.asarray(a.value) - np.asarray(b.value))))
                               for a, b in zip(one_device.weights, sharded.weights)),
        "logits_max_abs": float(np.max(np.abs(logits - np.asarray(one_device(images))))),
        "sharded": sorted(distribution.sharded_variables(sharded)),
        "finetune": {"distribution": metrics["distribution"], "steps": metrics["steps"]},
    }


def run_jax(out):
    import keras

    data_dir = write_fashion_mnist(out / "fashion_mnist", train=64, test=32)
    record = recorder()
    return {
        "devices": len(keras.distribution.list_devices()),
        "model_resumed": interrupted_and_resumed(
            data_dir, out / "model", "--distribute", "model", "--model-devices", "2",
            "--per-device-batch-size", "4"),
        "auto_budget": dict(fashion_mnist(
            data_dir, out / "auto", "--distribute", "auto", "--epochs", "3",
            "--batch-size", "16", "--pipeline", "numpy", "--time-budget-minutes", "0.01",
            callbacks=[record]), start=record.start),
        "pretrained": pretrained_into_shards(out),
        "refused": refused(data_dir, out / "refused", "--distribute", "data",
                           "--batch-size", "12"),
    }


def run_tensorflow(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    data_dir = write_fashion_mnist(out / "fashion_mnist", train=64, test=32)
    return {
        "data_resumed": interrupted_and_resumed(
            data_dir, out / "data", "--distribute", "data", "--per-device-batch-size", "8"),
        "refused": refused(data_dir, out / "refused", "--distribute", "data",
                           "--batch-size", "15"),
    }


if __name__ == "__main__":
    backend, out = sys.argv[1], Path(sys.argv[2])
    os.environ["KERAS_BACKEND"] = backend
    print(json.dumps(run_jax(out) if backend == "jax" else run_tensorflow(out)))
