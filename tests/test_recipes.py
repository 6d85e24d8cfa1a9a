"""One short epoch of each recipe on tiny data, their bad-input errors, the shipped preset."""

import csv
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from tiny import TINY_FASHION_MNIST, TINY_ONE_BLOCK, recipe_model_args, write_fashion_mnist
from keras_vit import data
from recipes import feeds
from recipes.__main__ import recipe_module

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = recipe_model_args(TINY_FASHION_MNIST)
OTHER_WIDTH = f"hidden_dim={TINY_FASHION_MNIST['hidden_dim'] // 2}"  # a different model


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fashion-mnist"), train=64, test=40)


def fmnist_args(fmnist_dir, out, *extra):
    return ["--data-dir", str(fmnist_dir), "--output-dir", str(out), "--epochs", "1",
            "--batch-size", "16", "--verbose", "0", *TINY_MODEL, *extra]


@pytest.mark.parametrize("pipeline", ["tf.data", "numpy"])
def test_fashion_mnist_recipe_one_epoch(fmnist_dir, tmp_path, pipeline):
    if pipeline == "tf.data":
        pytest.importorskip("tensorflow")
    from recipes import __main__ as recipes_cli
    from recipes import fashion_mnist

    args = fmnist_args(fmnist_dir, tmp_path, "--pipeline", pipeline)
    if pipeline == "numpy":  # as `python -m recipes fashion_mnist ...`
        assert recipes_cli.main(["fashion_mnist", *args]) == 0
    else:
        assert fashion_mnist.main(args) == 0
    card = (tmp_path / "README.md").read_text()
    assert f"Command: `{shlex.join(['python', '-m', 'recipes.fashion_mnist', *args])}`" in card
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_examples"] == 40
    assert len(metrics["per_class_accuracy"]) == 10 and metrics["pipeline"] == pipeline
    for name in ("model.keras", "history.csv", "confusion_matrix.png", "training_curves.png",
                 "README.md"):
        assert (tmp_path / name).exists(), name
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 10)
    assert "Test accuracy" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("pipeline", ["numpy", "tf.data"])
def test_both_training_inputs_feed_full_one_hot_batches(fmnist_dir, pipeline):
    """The two pipelines behind one interface: the same batches' shapes, steps and counts;
    only the numpy one wraps the model to augment on the device."""
    if pipeline == "tf.data":
        pytest.importorskip("tensorflow")
    from recipes import fashion_mnist, loop

    config = dataclasses.replace(fashion_mnist.DEMO, model=dict(TINY_FASHION_MNIST),
                                 batch_size=16, eval_batch_size=25)
    model = loop.build_model(config)
    arrays = [data.load_fashion_mnist(split, fmnist_dir) for split in ("train", "test")]
    feed = feeds.array_input(*arrays, pipeline=pipeline).feed(model, config, 0, 1)
    assert (feed.steps_per_epoch, feed.num_train) == (64 // 16, 64)
    assert (feed.fit_model is model) == (pipeline == "tf.data")
    images, labels = next(iter(feed.train))
    assert tuple(images.shape) == (16, 28, 28, 1) and tuple(labels.shape) == (16, 10)
    np.testing.assert_array_equal(np.sum(labels, -1), 1.0)
    # The 40 test images in equal batches of at most 25.
    if pipeline == "numpy":  # arrays that fit batches
        assert len(feed.validation[0]) == 40 and feed.fit_kwargs["validation_batch_size"] == 20
    else:
        assert [len(batch[0]) for batch in feed.validation] == [20, 20]


def write_easy_fashion_mnist(folder, train=96, test=30, seed=0):
    """Fashion-MNIST-shaped idx files of 3 classes any working training run tells apart
    in a few epochs: dark images, bright ones, and half bright (top or bottom half)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        labels = np.arange(n) % 3
        bright = np.zeros((n, 28, 28))
        bright[labels == 1] = 1.0
        half = np.flatnonzero(labels == 2)
        bright[half[::2], :14] = 1.0
        bright[half[1::2], 14:] = 1.0
        images = np.clip(40 + 170 * bright + rng.normal(0, 20, bright.shape), 0, 255)
        image_file, label_file = data.FASHION_MNIST_FILES[split]
        data.write_idx(folder / f"{image_file}.gz", images.astype(np.uint8))
        data.write_idx(folder / f"{label_file}.gz", labels.astype(np.uint8))
    return folder


def test_fashion_mnist_recipe_learns_an_easy_dataset(tmp_path):
    """A few epochs on 3 easy classes must beat chance (1/3, what an untrained model's
    constant prediction scores) by far, the loss must fall, and the model card,
    metrics.json and model.keras must agree on the test accuracy. 20 of 20 runs (3 backends,
    several seeds) scored 100 %."""
    from recipes import fashion_mnist

    folder = write_easy_fashion_mnist(tmp_path / "data")
    out = tmp_path / "run"
    assert fashion_mnist.main(["--data-dir", str(folder), "--output-dir", str(out),
                               "--schedule", "demo", "--epochs", "4", "--batch-size", "16",
                               "--learning-rate", "5e-3", "--pipeline", "numpy",
                               "--verbose", "0", *TINY_MODEL]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_examples"] == 30 and metrics["epochs"] == 4
    assert metrics["test_accuracy"] >= 0.9, metrics["confusion_matrix"][:3]
    with open(out / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in history] == [0, 1, 2, 3]
    losses = [float(row["loss"]) for row in history]
    assert losses[-1] < 0.9 * losses[0], losses
    # What the card and metrics.json say is what model.keras scores on the test files.
    x_test, y_test = data.load_fashion_mnist("test", folder)
    model = keras.saving.load_model(out / "model.keras")
    recomputed = (model.predict(x_test.astype("float32"), verbose=0).argmax(-1) == y_test).mean()
    assert recomputed == metrics["test_accuracy"]
    card = (out / "README.md").read_text()
    assert f"**Test accuracy: {metrics['test_accuracy']:.2%}**" in card


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "jax",
                    reason="the TF-less run matters for the JAX GPU machine; once is enough")
def test_fashion_mnist_recipe_runs_without_tensorflow(fmnist_dir, tmp_path):
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tensorboard"):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(REPO)!r})
        from recipes import fashion_mnist
        code = fashion_mnist.main({fmnist_args(fmnist_dir, tmp_path, "--mixed-precision")!r})
        assert "tensorflow" not in sys.modules
        sys.exit(code)
    """)
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pipeline"] == "numpy" and metrics["mixed_precision"] == "mixed_bfloat16"


def test_fashion_mnist_recipe_bad_input(fmnist_dir, tmp_path):
    from recipes import fashion_mnist

    with pytest.raises(FileNotFoundError, match="not found"):
        fashion_mnist.main(fmnist_args(tmp_path / "nowhere", tmp_path / "a"))
    with pytest.raises(ValueError, match="larger than the dataset"):
        fashion_mnist.main(fmnist_args(fmnist_dir, tmp_path / "b", "--batch-size", "128",
                                       "--pipeline", "numpy"))
    with pytest.raises(ValueError, match="1 channel\\(s\\) but the model takes 3"):
        fashion_mnist.main(fmnist_args(fmnist_dir, tmp_path / "c", "--model", "num_channels=3",
                                       "--pipeline", "numpy"))


def test_resume_dir_of_a_different_model_and_no_resume(fmnist_dir, tmp_path):
    """A rerun resumes only the same model; --no-resume starts over, deleting only what
    the recipe wrote."""
    from recipes import fashion_mnist

    fashion_mnist.main(fmnist_args(fmnist_dir, tmp_path, "--pipeline", "numpy"))
    args = fmnist_args(fmnist_dir, tmp_path, "--pipeline", "numpy", "--model", OTHER_WIDTH)
    with pytest.raises(ValueError, match="different model.*--no-resume"):
        fashion_mnist.main(args)
    (tmp_path / "README.md").write_text("the last run's card")
    (tmp_path / "backup" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="did not write notes.txt.*another --output-dir"):
        fashion_mnist.main(args + ["--no-resume"])
    assert (tmp_path / "backup" / "notes.txt").exists()
    assert (tmp_path / "backup" / "latest.weights.h5").exists()
    (tmp_path / "backup" / "notes.txt").unlink()
    fashion_mnist.main(args + ["--no-resume"])
    assert "Test accuracy" in (tmp_path / "README.md").read_text()
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 1 + 1  # one epoch
    assert "README.md" in json.loads((tmp_path / "run_files.json").read_text())["files"]


@pytest.mark.parametrize("name, extra", [
    ("README.md", []), ("history.csv", []), ("model_int8.tflite", ["--export"]),
    ("run_files.json", []), ("backup/notes.txt", ["--no-resume"])])
def test_files_the_recipe_did_not_write_stop_it_before_training(fmnist_dir, tmp_path, name,
                                                                 extra):
    from recipes import fashion_mnist

    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_text("mine")
    with pytest.raises(ValueError, match=f"{Path(name).name}.*another --output-dir"):
        fashion_mnist.main(fmnist_args(fmnist_dir, tmp_path, "--pipeline", "numpy", *extra))
    assert (tmp_path / name).read_text() == "mine"
    assert not (tmp_path / "model.keras").exists()


def test_schedule_option():
    from recipes import fashion_mnist

    demo = fashion_mnist.DEMO
    for argv in (["--schedule=demo"], ["--schedule", "demo"], ["--verbose", "0", "--schedule=demo"]):
        args = fashion_mnist.parse_args(argv)
        assert (args.schedule, args.epochs, args.batch_size, args.learning_rate) == (
            "demo", demo.epochs, demo.batch_size, demo.learning_rate)
    assert fashion_mnist.parse_args(["--schedule=demo", "--epochs", "2"]).epochs == 2
    assert fashion_mnist.parse_args([]).epochs == fashion_mnist.CONFIG.epochs


@pytest.mark.parametrize("recipe, argv, error", [
    ("fashion_mnist", ["--schedule"], "expected one argument"),
    ("fashion_mnist", ["--schedule", "fast"], "invalid choice"),
    ("fashion_mnist", ["--epochs", "0"], "expected a positive integer, got '0'"),
    ("fashion_mnist", ["--batch-size", "-8"], "positive integer"),
    ("fashion_mnist", ["--steps-per-execution", "0"], "positive integer"),
    ("fashion_mnist", ["--limit-train", "0"], "positive integer"),
    ("fashion_mnist", ["--limit-test", "0"], "positive integer"),
    ("fashion_mnist", ["--learning-rate", "nan"], "positive number"),
    ("fashion_mnist", ["--time-budget-minutes", "0"], "positive number"),
    ("fashion_mnist", ["--verbose", "3"], "invalid choice"),
    ("fashion_mnist", ["--model", "hidden_dim"], "expected KEY=VALUE"),
    ("fashion_mnist", ["--distribute", "pipeline"], "invalid choice"),
    ("fashion_mnist", ["--per-device-batch-size", "0"], "positive integer"),
    ("cifar10_finetune", ["--model-devices", "0"], "positive integer"),
    ("fashion_mnist", ["--batch-size", "64", "--per-device-batch-size", "8"],
     "not allowed with argument --batch-size"),
    ("cifar10_finetune", ["--steps", "0"], "positive integer"),
    ("cifar10_finetune", ["--warmup-steps", "-1"], "integer >= 0"),
    ("imagenet_eval", ["--limit", "0"], "positive integer"),
    ("imagenet_eval", ["--crop-fraction", "1.5"], "fraction"),
])
def test_bad_options_are_usage_errors(capsys, recipe, argv, error):
    module = recipe_module(recipe)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    option = [arg for arg in argv if arg.startswith("--")][-1]  # the one refused
    assert f"argument {option}: " in err and error in err


def test_unknown_recipe_name():
    with pytest.raises(ValueError, match="Unknown recipe 'mnist'.*fashion_mnist"):
        recipe_module("mnist")
    from recipes.__main__ import main

    with pytest.raises(SystemExit, match="Unknown recipe"):
        main(["cifar100"])


def test_cifar10_finetune_recipe_on_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from recipes import cifar10_finetune

    args = ["--preset", "ti16", "--weights", "none", "--image-size", "32", "--steps", "4",
            "--warmup-steps", "1", "--batch-size", "8", "--output-dir", str(tmp_path),
            "--verbose", "0", *recipe_model_args(TINY_ONE_BLOCK)]
    with tfds.testing.mock_data(num_examples=16):
        assert cifar10_finetune.main(args) == 0
        with pytest.raises(ValueError, match="Unknown TFDS dataset"):
            cifar10_finetune.main(args + ["--dataset", "cifar_ten"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0.0 <= metrics["test_accuracy"] <= 1.0
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # 4 steps = 2 epochs of 2 steps of 8 images


def test_imagenet_eval_recipe_on_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from recipes import imagenet_eval

    args = ["--preset", "ti16", "--weights", "none", "--image-size", "32", "--batch-size", "4",
            "--limit", "8", "--output", str(tmp_path / "r.json"), "--crop-fraction", "0.875",
            *recipe_model_args(TINY_ONE_BLOCK), "--manual-dir", str(tmp_path)]
    with tfds.testing.mock_data(num_examples=8):
        summary = imagenet_eval.main(args)
    assert summary["images"] == 8 and 0.0 <= summary["top1"] <= summary["top5"] <= 1.0
    assert json.loads((tmp_path / "r.json").read_text())["top1"] == summary["top1"]


SHIPPED = REPO / "saved_models" / "fashion_mnist"


def test_shipped_fashion_mnist_model_loads_and_predicts():
    """The shipped preset loads offline and classifies the official test images."""
    from keras_vit import ViT

    model = ViT.from_preset("fashion_mnist")
    assert model.image_size == (28, 28) and model.num_channels == 1 and model.num_classes == 10
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    assert metrics["official_test_set"] and metrics["test_accuracy"] >= 0.93
    images, labels = data.load_fashion_mnist("test", limit=1000, download=False)
    accuracy = (model.predict(images, verbose=0).argmax(-1) == labels).mean()
    assert accuracy >= 0.93  # 94.2 % measured on these first 1000 test images


