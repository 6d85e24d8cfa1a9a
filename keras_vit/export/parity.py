"""Parity of an exported file with its Keras model: `parity_report` runs the file (LiteRT,
ONNX Runtime or TensorFlow) and the Keras model on the same images and measures the
difference, accuracy and latency; `format_report` makes a markdown table of such reports.

A classifier's outputs are logits, compared by top-1 agreement; a features model's (a ViT
with `include_top=False`: DINOv2, SigLIP) are feature vectors, compared by cosine
similarity, relative error and retrieval agreement."""

import os
import statistics

import numpy as np

from keras_vit.export import arrays, checks, onnx, tflite, worker
from keras_vit.precision import as_float32


class ReferenceLogits:
    """The Keras model's outputs (logits or features) on a batch, per input dtype (uint8
    inputs round pixels).

    The model is the float32 copy that export converts; outputs are computed once per
    distinct set of pixels, so one instance serves the reports of every exported file.
    """

    def __init__(self, model, images):
        self.model = as_float32(checks.load_model(model))
        self.features = checks.outputs_features(self.model)
        self.images = arrays.fit_images(
            np.asarray(images, dtype="float32"), checks.image_shape(self.model, fixed=False)
        )
        self._logits = {}

    def images_for(self, input_dtype):
        """The images as a file with this input dtype sees them, as float32."""
        return arrays.as_input(self.images, input_dtype).astype("float32")

    def logits_for(self, input_dtype):
        """The Keras model's float32 outputs on `images_for(input_dtype)`."""
        images = self.images_for(input_dtype)
        key = "float32" if np.array_equal(images, self.images) else input_dtype
        if key not in self._logits:
            predicted = self.model.predict(images, batch_size=64, verbose=0)
            self._logits[key] = np.asarray(predicted, dtype="float32")
        return self._logits[key]


def parity_report(model, exported_path, images, labels=None, reference=None, num_threads=1, variant=None):
    """Compares an exported file with the Keras model on a batch of images.

    Args:
        model: the Keras model (or `.keras` path) the file came from; a mixed-precision
            model is compared in float32, as exported.
        exported_path: a `.tflite` file (run with the LiteRT interpreter, no Flex delegate),
            an `.onnx` file (run with ONNX Runtime) or a SavedModel folder (TensorFlow).
        images: (N, H, W, C) pixels, 0..255 for a ViT. For a uint8 input both sides see
            the rounded pixels.
        labels: optional class ids, one per image, for accuracies (classifiers only).
        reference: for reuse across calls, a `ReferenceLogits` of the same model and images.
        num_threads: LiteRT / ONNX Runtime threads for the latency.
        variant: the report's name; default: the file name.

    Returns a dict: variant, path, input_dtype, size_bytes, num_images, outputs ("logits",
    or "features" for a model without a head), max_abs_diff (of the outputs), min_cosine
    (the lowest cosine similarity of an image's two output vectors), max_relative_error
    (the largest |exported - keras| / |keras| of an image's vectors, L2 norms),
    top1_agreement (logits; else None), retrieval_agreement (features; else None: the
    share of images whose exported vector is nearest, by cosine, to its own Keras vector
    among the batch's, the features' top-1 agreement), keras_accuracy and accuracy (with
    labels, else None), latency_ms (median per image, batch 1, on this CPU; `num_threads`
    threads for TFLite and ONNX Runtime) and runtime.
    """
    exported_path = os.fspath(exported_path)
    reference = reference or ReferenceLogits(model, images)
    if labels is not None:
        labels = checks.check_labels(
            labels, len(reference.images), checks.num_classes(reference.model)
        )
    if exported_path.endswith(".tflite"):
        input_dtype = tflite.file_input_dtype(exported_path)
        logits, times = tflite.run_tflite(exported_path, reference.images_for(input_dtype), num_threads)
        runtime = f"LiteRT, {num_threads} thread(s)"
    elif exported_path.endswith(".onnx"):
        input_dtype = onnx.file_input_dtype(exported_path)
        logits, times = onnx.run_onnx(exported_path, reference.images_for(input_dtype), num_threads)
        runtime = f"ONNX Runtime, {num_threads} thread(s)"
    else:
        job = {"kind": "saved_model_logits", "path": os.path.abspath(exported_path), "images": reference.images}
        result = worker.run_under("tensorflow", None, [job])[0]
        return saved_model_report(exported_path, variant, result, reference, labels)
    return _compare(exported_path, variant, input_dtype, logits, times, reference, labels, runtime)


def saved_model_report(path, variant, result, reference, labels):
    """The parity report of a SavedModel from the result of its "saved_model_logits" job."""
    logits, times, input_dtype = result["logits"], list(result["times"]), str(result["input_dtype"])
    return _compare(path, variant, input_dtype, logits, times, reference, labels, "TensorFlow")


def _size_bytes(path):
    """The size of a file, or of every file in a folder (a SavedModel)."""
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    return os.path.getsize(path)


def _unit(vectors):
    """Each row scaled to unit L2 norm (float64; a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype="float64")
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _compare(path, variant, input_dtype, logits, times, reference, labels, runtime):
    """The parity report (see `parity_report`) of an exported file's outputs `logits` and
    per-image latencies `times` (s) against a `ReferenceLogits`; `labels` are checked class
    ids or None."""
    reference_logits = reference.logits_for(input_dtype)
    reference_top1, top1 = reference_logits.argmax(-1), logits.argmax(-1)
    similarity = _unit(logits) @ _unit(reference_logits).T  # exported image i vs Keras image j
    error = np.linalg.norm(logits - reference_logits, axis=-1)
    scale = np.linalg.norm(reference_logits, axis=-1)
    report = {
        "variant": variant or os.path.basename(path.rstrip("/")),
        "path": path,
        "input_dtype": input_dtype,
        "size_bytes": _size_bytes(path),
        "num_images": len(logits),
        "outputs": "features" if reference.features else "logits",
        "max_abs_diff": float(np.max(np.abs(logits - reference_logits))),
        "min_cosine": float(np.min(np.diag(similarity))),
        "max_relative_error": float(np.max(error / np.maximum(scale, 1e-12))),
        "top1_agreement": None,
        "retrieval_agreement": None,
        "keras_accuracy": None,
        "accuracy": None,
        "latency_ms": 1000 * statistics.median(times[1:] or times),
        "runtime": runtime,
    }
    if reference.features:
        nearest = similarity.argmax(-1)
        report["retrieval_agreement"] = float(np.mean(nearest == np.arange(len(logits))))
    else:
        report["top1_agreement"] = float(np.mean(top1 == reference_top1))
    if labels is not None:
        report["keras_accuracy"] = float(np.mean(reference_top1 == labels))
        report["accuracy"] = float(np.mean(top1 == labels))
    return report


def _features_table(reports):
    """The markdown rows of features models' reports (no accuracy: they have no head)."""
    header = ["variant", "input", "size", "max abs diff (features)", "min cosine",
              "max relative error", "retrieval agreement", "latency / image", "runtime"]
    rows = [[
        r["variant"], r["input_dtype"], f"{r['size_bytes'] / 1e6:.3f} MB",
        f"{r['max_abs_diff']:.2e}", f"{r['min_cosine']:.6f}", f"{r['max_relative_error']:.2e}",
        f"{100 * r['retrieval_agreement']:.2f} %", f"{r['latency_ms']:.3f} ms", r["runtime"],
    ] for r in reports]
    return header, rows


def format_report(reports):
    """A markdown table of the parity reports of one model: variant, input, size, accuracy
    (classifiers) and parity, latency."""
    if reports and reports[0]["outputs"] == "features":
        return _table(*_features_table(reports), reports)
    header = ["variant", "input", "size", "accuracy", "Δ vs Keras", "max abs diff (logits)",
              "top-1 agreement", "latency / image", "runtime"]
    rows = []
    if reports and reports[0]["keras_accuracy"] is not None:
        rows.append(["Keras (float32)", "float32", "—", f"{100 * reports[0]['keras_accuracy']:.2f} %",
                     "—", "—", "—", "—", "Keras"])
    for r in reports:
        if r["accuracy"] is None:
            accuracy = delta = "—"
        else:
            accuracy = f"{100 * r['accuracy']:.2f} %"
            delta = f"{100 * (r['accuracy'] - r['keras_accuracy']):+.2f} pp"
        rows.append([
            r["variant"], r["input_dtype"], f"{r['size_bytes'] / 1e6:.3f} MB", accuracy, delta,
            f"{r['max_abs_diff']:.2e}", f"{100 * r['top1_agreement']:.2f} %",
            f"{r['latency_ms']:.3f} ms", r["runtime"],
        ])
    return _table(header, rows, reports)


def _table(header, rows, reports):
    """The markdown table of `rows` under `header`, with a note on the images and latency."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if reports:
        lines.append(
            f"\nOn {reports[0]['num_images']} images; latency: median per image, batch 1, on "
            "this CPU."
        )
    return "\n".join(lines)
