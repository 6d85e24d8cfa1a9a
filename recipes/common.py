"""What the recipes share: their config, command-line options, the training run and the
artifacts it writes (model, metrics, plots, model card), which `run_files.json` lists so
that a rerun replaces only those."""

import argparse
import csv
import dataclasses
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from keras_vit import arguments, atomic
from keras_vit import config as vit_config
from keras_vit import data as vit_data
from keras_vit import distribution, precision, training
from keras_vit.model import ViT

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class RecipeConfig:
    """One recipe: the model, the data, the optimiser, the schedule and the augmentation.

    `epochs` sizes the schedule unless `total_steps` is set (fine-tuning counts steps).
    The warm-up is `warmup_steps`, or else `warmup_epochs` (may be fractional).
    """

    name: str
    model: dict
    batch_size: int
    epochs: int = 1
    total_steps: int | None = None
    optimizer: str = "adamw"  # "adamw" or "sgd"
    learning_rate: float = 1e-3
    end_learning_rate: float = 0.0
    weight_decay: float = 0.05
    momentum: float = 0.9
    global_clipnorm: float = 1.0
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None
    label_smoothing: float = 0.1
    augment: vit_data.AugmentConfig = dataclasses.field(default_factory=vit_data.AugmentConfig)
    eval_batch_size: int = 1000
    validation_freq: int = 1
    class_names: tuple | None = None

    def to_dict(self):
        return dataclasses.asdict(self)


def recipe_names():
    return ("fashion_mnist", "cifar10_finetune", "imagenet_eval")


def get_recipe_module(name):
    """The module of recipe `name`; a ValueError names the valid recipes otherwise."""
    import importlib

    if name not in recipe_names():
        raise ValueError(f"Unknown recipe {name!r}. Valid recipes: {', '.join(recipe_names())}.")
    return importlib.import_module(f"recipes.{name}")


# --------------------------------------------------------------------------- options


def checked_number(kind, description, ok):
    """An argparse type: `kind(text)` where `ok(value)` holds, else an error that says
    `description` is expected."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


positive_int = checked_number(int, "a positive integer", lambda v: v > 0)
non_negative_int = checked_number(int, "an integer >= 0", lambda v: v >= 0)
positive_float = checked_number(float, "a positive number", lambda v: 0 < v < math.inf)


def model_override(text):
    """An argparse type: KEY=VALUE as (key, value), the value parsed as JSON if it is JSON;
    KEY must be an argument of `ViT`."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        arguments.check_keyword_arguments(ViT, {key: value})
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    return key, value


def base_parser(config, description):
    """Command-line options common to the training recipes, defaulting to `config`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=positive_int, default=config.epochs,
                   help="epochs (sizes the LR schedule)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=positive_int, default=config.batch_size,
                       help="the global batch, over all devices")
    batch.add_argument("--per-device-batch-size", type=positive_int, default=None,
                       help="the batch of each data-parallel replica: the global batch is "
                            "this times the replicas")
    p.add_argument("--distribute", choices=distribution.KINDS, default="none",
                   help="data: data parallelism over every device (JAX DataParallel, TF "
                        "MirroredStrategy); model: JAX model parallelism (blocks split "
                        "Megatron-style) with data parallelism; auto: model parallelism if "
                        "the model is too big for one device, else data parallelism if "
                        "there are several devices (keras_vit.distribution.for_training)")
    p.add_argument("--model-devices", type=positive_int, default=None,
                   help="the devices each block is split over (--distribute model or auto)")
    p.add_argument("--learning-rate", type=positive_float, default=config.learning_rate)
    p.add_argument("--output-dir", default=str(REPO_ROOT / "runs" / config.name),
                   help="where the model, logs, plots and resume checkpoint go")
    p.add_argument("--mixed-precision", action="store_true", help="train under mixed_bfloat16")
    p.add_argument("--time-budget-minutes", type=positive_float, default=None,
                   help="finish training (shortening the LR schedule if needed) within this time")
    p.add_argument("--limit-train", type=positive_int, default=None,
                   help="use only this many training examples")
    p.add_argument("--limit-test", type=positive_int, default=None,
                   help="use only this many test examples")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if --output-dir holds a checkpoint")
    p.add_argument("--no-jit", action="store_true", help="turn off jit_compile")
    p.add_argument("--steps-per-execution", type=positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="Keras fit verbosity: 0, 1 (bars), 2")
    p.add_argument("--model", type=model_override, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a model config entry, e.g. --model hidden_dim=128 (repeatable)")
    return p


def apply_overrides(config, args):
    """A copy of `config` with the command-line options applied."""
    return dataclasses.replace(
        config,
        model={**config.model, **dict(args.model)},
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )


# --------------------------------------------------------------------------- output folder


RUN_FILES = "run_files.json"


def prepare_output_dir(output_dir, files, resume=True):
    """Checks that a run may write `files` (names in `output_dir`), then records them in
    `output_dir/run_files.json`, the list of what the recipes wrote there.

    An existing file that is not listed there (this code did not write it) is a
    ValueError, before anything is deleted or written. Without `resume`, deletes the
    resume checkpoint (`training.clear_resume_dir`: only what training wrote) and
    history.csv, so the run starts over.
    """
    output_dir = Path(output_dir)
    record = output_dir / RUN_FILES
    written = _read_run_files(record)
    for name in files:
        if (output_dir / name).exists() and name not in written:
            raise ValueError(
                f"{str(output_dir / name)!r} was not written by this recipe (it is not listed "
                f"in {RUN_FILES}), so it won't be replaced. Move it elsewhere, or use another "
                "--output-dir."
            )
    if not resume:
        training.clear_resume_dir(output_dir / "backup")
        if "history.csv" in written:
            (output_dir / "history.csv").unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(record, json.dumps({"files": sorted(written | set(files))}, indent=1) + "\n")


def _read_run_files(path):
    if not path.exists():
        return set()
    try:
        files = json.loads(path.read_text())["files"]
        valid = isinstance(files, list) and all(isinstance(name, str) for name in files)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ValueError(
            f"{str(path)!r} is not the list of files a recipe writes there. Move it elsewhere, "
            "or use another --output-dir."
        )
    return set(files)


# --------------------------------------------------------------------------- training


def build_model(config, num_channels=None):
    kwargs = dict(config.model)
    if num_channels is not None:
        kwargs["num_channels"] = num_channels
    return ViT(**kwargs)


def build_optimizer(config, steps_per_epoch, epochs=None):
    total = config.total_steps or (epochs or config.epochs) * steps_per_epoch
    if config.warmup_steps is not None:
        warmup = config.warmup_steps
    else:
        warmup = int(round(config.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(total - 1, 0))
    schedule = training.WarmupCosine(
        config.learning_rate, total, warmup, end=config.end_learning_rate
    )
    if config.optimizer == "adamw":
        opt = training.make_adamw(
            schedule, weight_decay=config.weight_decay, global_clipnorm=config.global_clipnorm
        )
    elif config.optimizer == "sgd":
        opt = training.make_sgd(schedule, momentum=config.momentum, global_clipnorm=config.global_clipnorm)
    else:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}; use 'adamw' or 'sgd'.")
    return opt, schedule


class ArrayBatches(keras.utils.PyDataset):
    """Shuffled full batches of numpy (images, one-hot labels), reshuffled every epoch.

    No TensorFlow needed, and every batch has the same shape, so a compiled train step
    is traced once.
    """

    def __init__(self, images, labels, batch_size, num_classes, shuffle=True, seed=0):
        super().__init__()
        if batch_size > len(images):
            raise ValueError(
                f"batch_size {batch_size} is larger than the dataset ({len(images)} examples); "
                "use a smaller batch size."
            )
        self.images, self.labels = images, labels
        self.batch_size, self.num_classes = batch_size, num_classes
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(images))
        self.on_epoch_end()

    def __len__(self):
        return len(self.images) // self.batch_size

    def __getitem__(self, index):
        idx = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        x = self.images[idx].astype("float32")
        y = np.eye(self.num_classes, dtype="float32")[self.labels[idx]]
        return x, y

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)


def eval_batch_size(n, largest, multiple_of=1):
    """The largest divisor of n up to `largest` that is a multiple of `multiple_of` (the
    data-parallel replicas), so evaluation batches all share a shape and split evenly. With
    one replica and no divisor above a quarter of `largest`, `largest` (a smaller last batch).
    """
    top = min(largest, n)
    divisors = [b for b in range(multiple_of, top + 1, multiple_of) if n % b == 0]
    if not divisors:
        raise ValueError(
            f"The {n} evaluation examples cannot be split into equal batches over the "
            f"{multiple_of} data-parallel replicas: use a multiple of {multiple_of} "
            "(e.g. --limit-test).")
    if multiple_of == 1 and divisors[-1] < top // 4:
        return top
    return divisors[-1]


def tf_available():
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def train(
    config,
    args,
    train_arrays=None,
    test_arrays=None,
    train_dataset=None,
    test_dataset=None,
    num_train=None,
    pipeline="auto",
    model=None,
    resize_size=None,
    outputs=(),
    architecture=None,
):
    """Trains `config` on arrays (numpy path, augmentation on the device) or on unbatched
    tf.data datasets (augmentation in tf.data), with resume, logs and a time budget.

    `model` is a ViT, a function returning one, or None for `ViT(**config.model)`.
    `outputs` names the files the recipe writes in the output folder after training: like
    model.keras and history.csv, they are checked before training (`prepare_output_dir`).
    `architecture` is the model's config for `--distribute` (default `config.model`: give
    it when that lacks the architecture, as a preset's does).
    Returns (plain model, history dict, info dict). The plain float32 model is saved as
    `output_dir/model.keras` before anything else happens after training.
    """
    start = time.time()
    output_dir = Path(args.output_dir)
    setup = distribution.for_training(
        args.distribute, architecture or config.model, model_devices=args.model_devices,
        batch_size=None if args.per_device_batch_size else config.batch_size,
        per_device_batch_size=args.per_device_batch_size)
    config = dataclasses.replace(config, batch_size=setup.global_batch)
    with setup.scope():  # the model is built, compiled and fitted in it
        keras.utils.set_random_seed(args.seed)
        policy = training.set_mixed_precision(args.mixed_precision)
        if pipeline == "auto":
            pipeline = "tf.data" if (train_dataset is not None or tf_available()) else "numpy"
        if pipeline == "tf.data" and train_dataset is None:
            train_dataset = vit_data.from_arrays(*train_arrays)
            test_dataset = vit_data.from_arrays(*test_arrays)
        num_classes = config.model["num_classes"]

        if model is None:
            model = build_model(config)
        elif callable(model) and not isinstance(model, keras.Model):
            model = model()  # built here, under the precision policy just set
        # After the model is built: a bad --model value is an error before anything is written.
        prepare_output_dir(output_dir, ("model.keras", "history.csv", *outputs),
                           resume=not args.no_resume)
        if pipeline == "numpy":
            images, labels = train_arrays
            _check_channels(model, images.shape[-1])
            train_data = ArrayBatches(images, labels, config.batch_size, num_classes,
                                      seed=args.seed)
            x_test, y_test = test_arrays
            val_batch = eval_batch_size(len(x_test), config.eval_batch_size, setup.data_devices)
            y_test_1h = np.eye(num_classes, dtype="float32")[y_test]
            val_data = (x_test.astype("float32"), y_test_1h)
            steps_per_epoch = len(train_data)
            num_train = len(images)
            fit_model = training.AugmentedModel(
                model, vit_data.make_augmenter(config.augment, seed=args.seed))
            fit_kwargs = dict(validation_batch_size=val_batch, shuffle=False)  # shuffles itself
        else:
            channels = train_dataset.element_spec[0].shape[-1]
            _check_channels(model, channels)
            num_train = num_train or vit_data.dataset_size(train_dataset)
            common = dict(num_classes=num_classes, image_size=model.image_size,
                          num_channels=model.num_channels)
            train_data = vit_data.build_pipeline(
                train_dataset, training=True, batch_size=config.batch_size, augment=config.augment,
                seed=args.seed, resize_size=resize_size, repeat=bool(config.total_steps), **common)
            val_data = vit_data.build_pipeline(
                test_dataset, training=False, **common, batch_size=eval_batch_size(
                    vit_data.dataset_size(test_dataset), config.eval_batch_size,
                    setup.data_devices))
            steps_per_epoch = num_train // config.batch_size
            fit_model = model
            fit_kwargs = dict(shuffle=False)  # the pipeline shuffles
        if steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {config.batch_size} is larger than the dataset ({num_train} examples)."
            )

        epochs = config.epochs
        if config.total_steps:
            # A schedule in steps (fine-tuning): whole epochs of a repeated dataset that add up
            # to exactly `total_steps`.
            if pipeline != "tf.data":
                raise ValueError("total_steps needs the tf.data pipeline.")
            epochs = max(1, round(config.total_steps / steps_per_epoch))
            steps_per_epoch = math.ceil(config.total_steps / epochs)
            fit_kwargs["steps_per_epoch"] = steps_per_epoch
        optimizer, schedule = build_optimizer(config, steps_per_epoch)
        fit_model.compile(
            optimizer=optimizer,
            loss=training.make_loss(config.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            # torch.compile (torch's jit_compile) is slow to start and no faster for small ViTs;
            # TensorFlow's XLA cannot reach the other replicas' variables under a strategy.
            jit_compile=not args.no_jit and keras.backend.backend() != "torch"
            and not vit_config.in_tf_distribution_strategy(),
            steps_per_execution=args.steps_per_execution,
        )
        sample = np.zeros((1, *model.image_size, model.num_channels), "float32")
        fit_model(sample)  # build before BackupAndRestore restores into it
        budget = None
        if args.time_budget_minutes:
            budget = training.TimeBudget(
                args.time_budget_minutes * 60, start_time=start, schedule=schedule,
                steps_per_epoch=steps_per_epoch, reserve_seconds=45)
        signature = {
            "recipe": config.name,
            "model": config.model,
            "num_channels": model.num_channels,
            "optimizer": config.optimizer,
            "batch_size": config.batch_size,
            "epochs": epochs,
            "pipeline": pipeline,
        }
        callbacks = training.make_callbacks(
            output_dir, signature, images_per_epoch=steps_per_epoch * config.batch_size,
            time_budget=budget)
        print(
            f"[{config.name}] {model.count_params():,} parameters, {num_train} training images, "
            f"{steps_per_epoch} steps/epoch x {epochs} epochs, batch {config.batch_size}, "
            f"{config.optimizer} lr {config.learning_rate}, policy {policy}, pipeline {pipeline}, "
            f"backend {keras.backend.backend()}, distribution: "
            f"{describe_distribution(setup.describe())}",
            flush=True,
        )
        train_start = time.time()
        history = fit_model.fit(
            train_data,
            epochs=epochs,
            validation_data=val_data,
            validation_freq=config.validation_freq,
            callbacks=callbacks,
            verbose=args.verbose,
            **fit_kwargs,
        )
        train_seconds = time.time() - train_start

        # Save first: whatever fails afterwards, the trained model is on disk.
        training.set_mixed_precision(False)
        plain = precision.as_float32(model)
        plain.save(output_dir / "model.keras")
        info = {
            "policy": policy,
            "pipeline": pipeline,
            "train_seconds": train_seconds,
            "epochs_planned": epochs,
            "epochs_run": _epochs_in_csv(output_dir / "history.csv") or len(history.epoch),
            "steps_per_epoch": steps_per_epoch,
            "num_train": num_train,
            "time_budget_stopped_early": bool(budget and budget.stopped_early),
            "schedule_total_steps": schedule.total_steps,
            "distribution": dict(setup.describe(),
                                 sharded_variables=len(distribution.sharded_variables(model))),
        }
        return plain, _read_history(output_dir / "history.csv"), info


def describe_distribution(summary):
    """A line about `TrainingSetup.describe()`'s `summary`, for logs and model cards."""
    if summary["kind"] == "none":
        return "one device"
    return (f"{summary['kind']} parallel: each batch of {summary['global_batch']} split over "
            f"{summary['data_devices']} replicas, each block over "
            f"{summary['model_devices']} devices")


def _check_channels(model, channels):
    if channels is not None and channels != model.num_channels:
        raise ValueError(
            f"The images have {channels} channel(s) but the model takes "
            f"{model.num_channels} (num_channels={model.num_channels})."
        )


def _read_history(path):
    if not Path(path).exists():
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    history = {}
    for row in rows:
        for key, value in row.items():
            try:
                history.setdefault(key, []).append(float(value) if value != "" else float("nan"))
            except ValueError:
                pass
    return history


def _epochs_in_csv(path):
    return len(_read_history(path).get("epoch", []))


# --------------------------------------------------------------------------- evaluation


def predict_labels(model, images, batch_size=1000):
    """Argmax predictions for numpy images, in batches that all share one shape."""
    batch = eval_batch_size(len(images), batch_size)
    logits = model.predict(images.astype("float32"), batch_size=batch, verbose=0)
    return np.asarray(logits).argmax(-1)


def classification_report(labels, predictions, num_classes):
    """Accuracy, per-class accuracy and the confusion matrix (rows: true, cols: predicted)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    return {
        "accuracy": float((labels == predictions).mean()),
        "per_class_accuracy": [float(a) for a in per_class],
        "confusion_matrix": confusion.tolist(),
    }


def plot_confusion(confusion, class_names, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    n = len(class_names)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_history(history, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(e) + 1 for e in history.get("epoch", [])]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("loss", "train"), ("val_loss", "test")):
        points = [(e, v) for e, v in zip(epochs, history.get(key, [])) if not math.isnan(v)]
        if points:
            ax1.plot(*zip(*points), marker="." if key == "val_loss" else None, label=label)
    for key, label in (("accuracy", "train (augmented)"), ("val_accuracy", "test")):
        points = [(e, v) for e, v in zip(epochs, history.get(key, [])) if not math.isnan(v)]
        if points:
            ax2.plot(*zip(*points), marker="." if key == "val_accuracy" else None, label=label)
    ax1.set_title("loss (label-smoothed cross-entropy)")
    ax2.set_title("accuracy")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_json(path, obj):
    atomic.write_text(path, json.dumps(obj, indent=2) + "\n")


def banner(lines):
    width = max(len(line) for line in lines) + 4
    print("\n" + "=" * width)
    for line in lines:
        print(f"  {line}")
    print("=" * width, flush=True)

