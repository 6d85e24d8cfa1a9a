"""What the recipes report after training: test-set predictions and their classification
report, the confusion matrix and training-curve figures, a line about the distribution
and the closing banner. Figures are written atomically (`keras_vit.atomic`)."""

import math

import numpy as np

from keras_vit import atomic
from recipes.feeds import eval_batch_size


def predict_labels(model, images, batch_size=1000):
    """Argmax predictions (N,) for numpy images (N, H, W, C), in batches that all share
    one shape."""
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


def describe_distribution(summary):
    """A line about `TrainingSetup.describe()`'s `summary`, for logs and model cards."""
    if summary["kind"] == "none":
        return "one device"
    return (f"{summary['kind']} parallel: each batch of {summary['global_batch']} split over "
            f"{summary['data_devices']} replicas, each block over "
            f"{summary['model_devices']} devices")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path):
    """Writes `fig` as a PNG at `path` atomically and closes it."""
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=110)
    pyplot().close(fig)


def plot_confusion(confusion, class_names, path, title):
    """The row-normalised confusion matrix (counts written in the cells) as a PNG."""
    plt = pyplot()
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
    save_figure(fig, path)


def plot_history(history, path, title):
    """Loss and accuracy per epoch, train and test (`run_folder.read_history`'s dict), as
    a PNG."""
    plt = pyplot()
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
    save_figure(fig, path)


def banner(lines):
    """Prints `lines` between two rules."""
    width = max(len(line) for line in lines) + 4
    print("\n" + "=" * width)
    for line in lines:
        print(f"  {line}")
    print("=" * width, flush=True)
