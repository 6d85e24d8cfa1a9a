"""Recipe: a small ViT trained from scratch on Fashion-MNIST (28x28 grayscale, 10 classes).

    python -m recipes.fashion_mnist                        # the full recipe (GPU-sized)
    python -m recipes.fashion_mnist --schedule demo        # the short CPU run of `make demo`
    python -m recipes.fashion_mnist --epochs 1 --limit-train 512 --limit-test 256

The data comes from the idx files (Debian's dataset-fashion-mnist, $FASHION_MNIST_DIR or
TFDS). With TensorFlow installed it is fed through tf.data with the augmentation in the
pipeline; without TensorFlow (`--pipeline numpy`, automatic) it is fed from numpy and the
very same Keras augmentation layers run on the device. The output directory gets
model.keras (float32), metrics.json, history.csv, confusion_matrix.png,
training_curves.png and a model card README.md, all listed in run_files.json (a rerun
replaces only the files listed there); re-running the command resumes an interrupted run
from its last finished epoch.
"""

import dataclasses
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python recipes/fashion_mnist.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras

from keras_vit import atomic
from keras_vit import data as vit_data
from keras_vit import training
from keras_vit.presets import get_preset
from recipes import feeds, loop, options, reports, run_folder
from recipes.recipe import RecipeConfig

# The recipe. The model is the `fashion_mnist` preset's architecture (7x7 = 49 patches
# of 4x4 px plus a class token), trained with drop path.
CONFIG = RecipeConfig(
    name="fashion_mnist",
    model=dict(get_preset("fashion_mnist")["config"], drop_path_rate=0.1),
    batch_size=512,
    epochs=100,
    optimizer="adamw",
    learning_rate=1e-3,
    end_learning_rate=1e-5,
    weight_decay=0.05,
    global_clipnorm=1.0,
    warmup_epochs=5,
    label_smoothing=0.1,
    augment=vit_data.AugmentConfig(translate=0.1, flip=True, random_erasing=0.25),
    eval_batch_size=1000,
    validation_freq=1,
    class_names=vit_data.FASHION_MNIST_CLASSES,
)

# `make demo`: about 10 minutes on 2 CPU cores. A narrower, shallower model on
# 7x7-pixel patches (16 tokens), same optimiser and augmentation.
DEMO = dataclasses.replace(
    CONFIG,
    model=dict(CONFIG.model, patch_size=7, hidden_dim=64, num_layers=4, num_heads=4,
               mlp_dim=128, drop_path_rate=0.0),
    batch_size=128,
    epochs=6,
    learning_rate=2e-3,
    warmup_epochs=0.5,
    augment=vit_data.AugmentConfig(translate=0.1, flip=True),
)

SCHEDULES = {"full": CONFIG, "demo": DEMO}


REPORT_FILES = ("metrics.json", "confusion_matrix.png", "training_curves.png", "README.md")
EXPORT_FILES = ("model_fp32.tflite", "model_matmul_int8.tflite", "model_int8.tflite",
                "export_report.md")


def build_parser(config):
    """The recipe's options, the training ones defaulting to `config`."""
    parser = options.base_parser(config, __doc__.splitlines()[0])
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="full",
                        help="full: the recipe; demo: the short CPU run of `make demo` "
                             "(sets the defaults of the training options)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four Fashion-MNIST idx(.gz) files")
    parser.add_argument("--pipeline", choices=["auto", "tf.data", "numpy"], default="auto",
                        help="tf.data (augmentation in the pipeline) or numpy (augmentation on "
                             "the device); auto picks tf.data when TensorFlow is installed")
    parser.add_argument("--export", action="store_true",
                        help="also export model_fp32.tflite, model_matmul_int8.tflite (for phone "
                             "CPUs) and model_int8.tflite (full integer, for NPUs), calibrated "
                             "on training images, with a parity report")
    return parser


def parse_args(argv=None):
    """The options, parsed again with `--schedule`'s defaults when it isn't the full one;
    `args.argv` keeps the command line, for the model card's reproduce command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(CONFIG).parse_args(argv)
    if args.schedule != "full":
        args = build_parser(SCHEDULES[args.schedule]).parse_args(argv)
    args.argv = argv
    return args


def main(argv=None):
    start = time.time()
    args = parse_args(argv)
    config = options.apply_overrides(SCHEDULES[args.schedule], args)
    x_train, y_train = vit_data.load_fashion_mnist("train", args.data_dir, limit=args.limit_train)
    x_test, y_test = vit_data.load_fashion_mnist("test", args.data_dir, limit=args.limit_test)
    if args.pipeline == "tf.data" and not feeds.tf_available():
        raise SystemExit("--pipeline tf.data needs TensorFlow; use --pipeline numpy.")

    training_input = feeds.array_input((x_train, y_train), (x_test, y_test), args.pipeline)
    model, history, info = loop.train(
        config, args, training_input,
        outputs=REPORT_FILES + (EXPORT_FILES if args.export else ()))
    report_and_card(config, args, model, history, info, (x_train, x_test, y_test), start)
    return 0


def report_and_card(config, args, model, history, info, arrays, start):
    """Evaluates the saved model on the test set and writes metrics, plots and the card;
    with `--export`, also the TFLite files and their parity report."""
    x_train, x_test, y_test = arrays
    out = Path(args.output_dir)
    names = list(config.class_names)
    predictions = reports.predict_labels(model, x_test)
    report = reports.classification_report(y_test, predictions, len(names))
    full_test = len(x_test) == 10_000
    metrics = {
        "test_accuracy": report["accuracy"],
        "test_examples": len(x_test),
        "official_test_set": full_test,
        "per_class_accuracy": dict(zip(names, report["per_class_accuracy"])),
        "confusion_matrix": report["confusion_matrix"],
        "epochs": info["epochs_run"],
        "train_seconds": round(info["train_seconds"], 1),
        "train_examples": info["num_train"],
        "backend": keras.backend.backend(),
        "hardware": training.hardware_description(),
        "mixed_precision": info["policy"],
        "pipeline": info["pipeline"],
        "distribution": info["distribution"],
        "parameters": model.count_params(),
        "recipe": config.to_dict(),
    }
    run_folder.write_json(out / "metrics.json", metrics)
    title = f"ViT on Fashion-MNIST: test accuracy {report['accuracy']:.2%}"
    artifacts = {"model": out / "model.keras", "metrics": out / "metrics.json",
                 "history": out / "history.csv"}
    try:
        reports.plot_confusion(report["confusion_matrix"], names, out / "confusion_matrix.png", title)
        reports.plot_history(history, out / "training_curves.png", title)
        artifacts["confusion matrix"] = out / "confusion_matrix.png"
        artifacts["training curves"] = out / "training_curves.png"
    except Exception as error:  # noqa: BLE001 - plots are not worth losing a run over
        print(f"Could not write the plots: {error!r}")
    atomic.write_text(out / "README.md", model_card(config, args, metrics, info, history))
    artifacts["model card"] = out / "README.md"
    if args.export:
        from keras_vit import export

        export.export(out / "model.keras", quantize=["float32", "matmul_int8", "int8"],
                      representative_data=x_train, eval_images=x_test, eval_labels=y_test,
                      report_path=out / "export_report.md", overwrite=True)
        artifacts["TFLite float32"] = out / "model_fp32.tflite"
        artifacts["TFLite phone CPU"] = out / "model_matmul_int8.tflite"
        artifacts["TFLite NPU (int8)"] = out / "model_int8.tflite"
        artifacts["export report"] = out / "export_report.md"
    if (out / "logs").exists():
        artifacts["TensorBoard logs"] = out / "logs"
    artifacts["resume checkpoint"] = out / "backup"
    wall = time.time() - start
    reports.banner(
        [f"Fashion-MNIST ViT: test accuracy {report['accuracy']:.2%} on {len(x_test)} test images"
         f"{'' if full_test else ' (a subset, not the official 10k)'}",
         f"{info['epochs_run']} epochs, training {info['train_seconds'] / 60:.1f} min, "
         f"total {wall / 60:.1f} min on {metrics['hardware']}"]
        + [f"{k + ':':20s}{v}" for k, v in artifacts.items()]
    )
    return metrics


def model_card(config, args, metrics, info, history):
    m = config.model
    per_class = "\n".join(
        f"| {name} | {acc:.2%} |" for name, acc in metrics["per_class_accuracy"].items()
    )
    aug = config.augment
    val = [v for v in history.get("val_accuracy", []) if v == v]
    best = f"{max(val):.2%}" if val else "n/a"
    cmd = shlex.join(["python", "-m", "recipes.fashion_mnist", *args.argv])
    return f"""# ViT on Fashion-MNIST (trained from scratch)

A small Vision Transformer (`keras_vit.ViT`) trained on {metrics["train_examples"]:,} Fashion-MNIST
training images, evaluated on {metrics["test_examples"]:,} test images{" (the official test set)" if metrics["official_test_set"] else ""}. Load it with
`keras_vit.ViT.from_preset("fashion_mnist")` or `keras.saving.load_model("model.keras")`;
it takes `(batch, 28, 28, 1)` images with pixel values 0..255 and returns 10 logits
(classes: {", ".join(config.class_names)}).

## Result

**Test accuracy: {metrics["test_accuracy"]:.2%}** on {metrics["test_examples"]} test images
(the last epoch's model; the test set was only monitored, never used to pick a checkpoint;
best monitored epoch {best}).

| class | accuracy |
|---|---|
{per_class}

![confusion matrix](confusion_matrix.png)

![training curves](training_curves.png)

## Recipe (`recipes/fashion_mnist.py`)

- Command: `{cmd.strip()}`
- Model: ViT, {m["image_size"]}x{m["image_size"]}x{m["num_channels"]} input, patch {m["patch_size"]}
  ({(m["image_size"] // m["patch_size"]) ** 2} tokens + class token), width {m["hidden_dim"]},
  {m["num_layers"]} layers, {m["num_heads"]} heads, MLP {m["mlp_dim"]}, drop path
  {m.get("drop_path_rate", 0.0)}; {metrics["parameters"]:,} parameters.
- Optimiser: AdamW, peak learning rate {config.learning_rate} (linear warm-up
  {config.warmup_epochs} epochs, cosine decay to {config.end_learning_rate}), weight decay
  {config.weight_decay} (not on biases, norms, position embedding, class token), global
  gradient-norm clipping {config.global_clipnorm}, batch {config.batch_size}, label smoothing
  {config.label_smoothing}.
- Augmentation: random translation up to {aug.translate:.0%} of the side (zero fill, like
  pad-and-crop), horizontal flip{", random erasing p=" + str(aug.random_erasing) if aug.random_erasing else ""}.
- Epochs: {metrics["epochs"]} (schedule sized for {info["schedule_total_steps"] // max(info["steps_per_epoch"], 1)}
  epochs{", shortened by the time budget" if info["time_budget_stopped_early"] else ""}).
- Precision: {metrics["mixed_precision"]}; data pipeline: {metrics["pipeline"]}; distribution:
  {reports.describe_distribution(metrics["distribution"])}.

## Cost

- Training wall time: {metrics["train_seconds"] / 60:.1f} min (including compilation).
- Hardware: {metrics["hardware"]}.

Files: `model.keras` (float32), `metrics.json`, `history.csv` (per-epoch logs),
`confusion_matrix.png`, `training_curves.png`.
"""


if __name__ == "__main__":
    sys.exit(main())
