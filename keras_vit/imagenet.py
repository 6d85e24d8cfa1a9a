"""ImageNet-1k class names and `decode_predictions`."""

import functools
import os

import numpy as np
from keras import ops


@functools.lru_cache(maxsize=1)
def imagenet_classes():
    """The 1000 ImageNet-1k class names, indexed like the standard (sorted-synset) labels."""
    path = os.path.join(os.path.dirname(__file__), "imagenet_classes.txt")
    with open(path, encoding="utf-8") as f:
        return tuple(line.rstrip("\n") for line in f)


def decode_predictions(preds, top=5):
    """Turns ImageNet-1k predictions into readable classes.

    Args:
        preds: (B, 1000) logits or probabilities (NumPy array or backend tensor).
        top: how many classes to return per image.
    Returns:
        One list per image of `top` (class id, class name, score) tuples, best first;
        the score is the value found in `preds`.
    """
    preds = np.asarray(ops.convert_to_numpy(preds))
    names = imagenet_classes()
    if preds.ndim != 2 or preds.shape[1] != len(names):
        raise ValueError(
            f"decode_predictions expects a batch of ImageNet-1k predictions of shape "
            f"(batch, {len(names)}), got shape {preds.shape}."
        )
    order = np.argsort(-preds, axis=1, kind="stable")[:, :top]
    return [[(int(i), names[i], float(row[i])) for i in idx] for row, idx in zip(preds, order)]
