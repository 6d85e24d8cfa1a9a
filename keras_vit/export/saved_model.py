"""TensorFlow SavedModels: `export_saved_model`, and the TensorFlow-side jobs that write one
with a `serving_default` signature (also the starting point of every TFLite conversion) and
run one for the parity report."""

import os
import time

import keras
import numpy as np

from keras_vit import atomic
from keras_vit.export import arrays, checks, worker


def write_saved_model(model, path, input_dtype="float32", batch_size=None):
    """Writes `model` (TensorFlow backend) as a SavedModel: its `serving_default` signature
    takes `images` of `input_dtype`, (batch_size, H, W, C), and returns `{"logits": ...}`."""
    import tensorflow as tf

    shape = (batch_size,) + checks.image_shape(model, fixed=False)
    spec = tf.TensorSpec(shape, tf.as_dtype(input_dtype), name="images")

    def serve(images):
        return {"logits": model(tf.cast(images, tf.float32), training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.write_out(path, verbose=False)


def saved_model_logits(path, images):
    """Logits, per-image latencies (s) and input dtype of a SavedModel's serving signature
    (TensorFlow backend), one image at a time after a warm-up call."""
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    out_name = next(iter(serve.structured_outputs))
    input_dtype = next(iter(serve.structured_input_signature[1].values())).dtype.name
    images = arrays.as_input(images, input_dtype)
    serve(images=tf.constant(images[:1]))  # warm-up (tracing)
    logits, times = [], []
    for image in images:
        start = time.perf_counter()
        logits.append(serve(images=tf.constant(image[None]))[out_name].numpy())
        times.append(time.perf_counter() - start)
    return np.concatenate(logits), times, input_dtype


def run_job(model, job):
    """The worker's "saved_model" job (writes `model` at job["path"]; no result) or
    "saved_model_logits" job (runs the SavedModel at job["path"] on job["images"]: its
    logits, times and input dtype), under TensorFlow (`keras_vit.export.worker`)."""
    if job["kind"] == "saved_model":
        write_saved_model(model, job["path"], job["input_dtype"])
        return {}
    logits, times, input_dtype = saved_model_logits(job["path"], job["images"])
    return {"logits": logits, "times": np.asarray(times), "input_dtype": np.asarray(input_dtype)}


def export_saved_model(model, path, input_dtype="float32", overwrite=False):
    """Writes a TensorFlow SavedModel with a `serving_default` signature.

    The signature takes `images` (batch, H, W, C) of `input_dtype` ("float32" or "uint8";
    pixel values 0..255 for a ViT, which rescales inside) and returns `{"logits": ...}`.
    Works from any backend; a mixed-precision model is exported in float32. The folder
    is written under a temporary name beside `path`, then swapped in: a kill leaves the
    old folder or the new one. Returns the path.
    """
    checks.check_input_dtype(input_dtype)
    path = os.path.abspath(checks.check_output_path(path, overwrite, folder=True))
    checks.image_shape(checks.load_model(model), fixed=False)
    with atomic.replacing(path) as staged:
        worker.run_under("tensorflow", model, [{"kind": "saved_model", "path": staged,
                                                "input_dtype": input_dtype}])
    return path
