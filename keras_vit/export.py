"""Deployment: SavedModel, TFLite (LiteRT) and ONNX files from a Keras model, on any backend.

    from keras_vit import export
    export.export_tflite(model, "model_int8.tflite", quantize="int8",
                         representative_data=train_images)
    report = export.parity_report(model, "model_int8.tflite", test_images, test_labels)
    print(export.format_report([report]))

or, from a shell, `keras-vit export model.keras --quantize float32 int8 --representative ...`.

How it works: the conversion always runs under TensorFlow. Under the TensorFlow backend it
runs in this process; under JAX or PyTorch the model is saved as a `.keras` file (the format
moves across backends) and rebuilt by a `KERAS_BACKEND=tensorflow` subprocess. A model under
a mixed dtype policy is rebuilt in float32 first. The SavedModel has a `serving_default`
signature with one input `images` (float32 or uint8 pixels, 0..255 for a ViT) and one
output `logits`; TFLite files come from that SavedModel through `TFLiteConverter`, use
builtin ops only (no Flex delegate, no Erf: exact GELU lowers to TFLite's builtin GELU),
and take a single image (batch 1).

ONNX files (`export_onnx`) come from PyTorch's exporter (`torch.onnx.export(dynamo=True)`)
under the PyTorch backend, in this process or a `KERAS_BACKEND=torch` subprocess: one input
`images` (float32 or uint8 pixels) with a free batch size, one output `logits`, checked with
ONNX Runtime. They need `pip install "keras-vit[onnx]"` (torch, onnx, onnxscript, onnxruntime).

Quantization modes of `export_tflite`:
    "float32"  no quantization.
    "float16"  float16 weights, float32 compute and input/output.
    "dynamic"  dynamic-range: int8 weights, float activations, float32 input/output.
    "int8"     full integer: int8 weights and activations calibrated on a representative
               dataset; the input is uint8 by default (raw 0..255 pixels, scale 1, zero
               point 0) and the output float32 logits.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from keras_vit.data import read_idx

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
_ALIASES = {"none": "float32", "fp32": "float32", "fp16": "float16", "dynamic_int8": "dynamic"}
FILE_SUFFIXES = {"float32": "fp32", "float16": "fp16", "dynamic": "dynamic_int8", "int8": "int8"}
INPUT_DTYPES = ("float32", "uint8")
DEFAULT_CALIBRATION_SAMPLES = 256


# ---------------------------------------------------------------------------------------
# Checks that run before any work, with errors that say what to do.


def normalize_quantization(quantize):
    """Returns the canonical name of a quantization mode, or raises a ValueError."""
    name = "float32" if quantize is None else str(quantize).lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown quantization mode {quantize!r}. Valid modes: {', '.join(QUANTIZATIONS)} "
            f"(or None for float32)."
        )
    return name


def _check_input_dtype(input_dtype):
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(
            f"input_dtype must be one of {', '.join(INPUT_DTYPES)}, got {input_dtype!r}."
        )


def _check_positive_int(value, name):
    """`value` as an int, or a ValueError unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_writable(folder):
    """Raises a PermissionError unless a file can be created in `folder`."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(
            f"Can't write in {folder!r} ({error.strerror}): choose a writable folder."
        ) from None


def _make_output_folder(folder):
    """Creates `folder` (and its parents) if needed, checks it is writable, returns it."""
    folder = os.path.abspath(os.fspath(folder))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"The output folder {folder!r} is a file: give a folder.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise type(error)(
            f"Can't create the output folder {folder!r} ({error.strerror}): choose another one."
        ) from None
    _check_writable(folder)
    return folder


def _check_output_path(path, overwrite, suffix=None, folder=False):
    """Raises if `path` can't be written: missing or read-only parent folder, wrong suffix,
    an existing file (unless `overwrite`), or a folder where a file goes (and, with
    folder=True, a file where a folder goes)."""
    path = os.fspath(path)
    if suffix and not path.endswith(suffix):
        raise ValueError(f"The output path must end in {suffix}, got {path!r}.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"The folder of the output path {path!r} does not exist: create {parent!r} first."
        )
    if os.path.exists(path) and os.path.isdir(path) != folder:
        if folder:
            raise NotADirectoryError(f"{path!r} is a file, not a folder: remove it or pick another path.")
        raise IsADirectoryError(f"{path!r} is a folder: give the path of a file.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path!r} already exists; pass overwrite=True (--overwrite) to replace it."
        )
    _check_writable(parent)
    return path


def _check_labels(labels, num_images, num_classes):
    """`labels` as int64 class ids, one per image, each in 0..num_classes-1; else a ValueError."""
    labels = np.asarray(labels)
    if labels.ndim > 1 and labels.size == len(labels):
        labels = labels.reshape(-1)  # a (N, 1) column
    if labels.ndim != 1 or len(labels) != num_images:
        raise ValueError(
            f"The evaluation labels must hold one class id per image: got {labels.size} "
            f"label(s), shape {labels.shape}, for {num_images} evaluation image(s)."
        )
    if labels.dtype.kind not in "iuf":
        raise ValueError(f"The evaluation labels must be integer class ids, got {labels.dtype} values.")
    valid = (labels >= 0) & (labels < num_classes) & (labels == np.round(labels))
    if not valid.all():
        index = int(np.argmin(valid))
        raise ValueError(
            f"Evaluation label {labels[index].item()!r} (at index {index}) is not a class id of "
            f"this model: labels must be integers in 0..{num_classes - 1} (its {num_classes} outputs)."
        )
    return labels.astype("int64")


def _image_shape(model, fixed=True):
    """The (H, W, C) input shape of a single-input image model."""
    if len(model.inputs) != 1:
        raise ValueError(f"Export needs a model with one image input, got {len(model.inputs)}.")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise ValueError(f"Export needs an image input (batch, H, W, C), got {(None,) + shape}.")
    if fixed and any(s is None for s in shape):
        raise ValueError(
            f"TFLite needs a fixed input size, but the model's input shape is "
            f"{(None,) + shape}: rebuild the model with a fixed image size (e.g. "
            f"`ViT(image_size=...)` or `keras.Input(shape=(224, 224, 3))`) and copy the weights."
        )
    return shape


def _num_classes(model):
    """The number of logits the model outputs per image."""
    return model.outputs[0].shape[-1]


# ---------------------------------------------------------------------------------------
# Models and data.


def load_model(model):
    """Returns `model` itself, or the model stored in a `.keras` file at that path."""
    if isinstance(model, keras.Model):
        return model
    path = os.fspath(model)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    import keras_vit  # noqa: F401  (registers the ViT layers for deserialization)

    return keras.saving.load_model(path, compile=False)


def _is_float32(model):
    layers = [model] + list(model._flatten_layers(include_self=False))
    return all(
        layer.dtype_policy.compute_dtype == "float32"
        and layer.dtype_policy.variable_dtype == "float32"
        for layer in layers
    )


def _float32_config(value):
    """A copy of a (nested) config with every non-float32 dtype policy set to float32."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" or "Policy" in str(value.get("class_name")):
            return {**value, "config": {**value.get("config", {}), "name": "float32"}}
        out = {}
        for key, item in value.items():
            if key == "dtype" and isinstance(item, str) and item != "float32":
                out[key] = "float32"
            else:
                out[key] = _float32_config(item)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_float32_config(v) for v in value)
    return value


def as_float32(model):
    """`model` if it computes in float32, else a float32 copy (mixed-precision models).

    The copy is rebuilt from the model's config with every dtype policy set to float32
    (under a float32 global policy) and gets the model's weights cast to float32.
    """
    if _is_float32(model):
        return model
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = model.__class__.from_config(_float32_config(model.get_config()))
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights([np.asarray(w, dtype="float32") for w in model.get_weights()])
    return copy


_IMAGE_KEYS = ("images", "x", "x_test", "x_train", "image")
_LABEL_KEYS = ("labels", "y", "y_test", "y_train", "label")


def load_arrays(path):
    """(images, labels or None) from a .npy, .npz or idx(.gz) file.

    A .npz file holds the images under `images` or `x` (or its only array), and the labels,
    if any, under `labels` or `y`. An idx file holds either images or labels.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No data file at {path!r}.")
    if path.endswith(".npy"):
        return np.load(path), None
    if path.endswith(".npz"):
        with np.load(path) as data:
            keys = list(data.keys())
            image_key = next((k for k in _IMAGE_KEYS if k in data), keys[0] if len(keys) == 1 else None)
            if image_key is None:
                raise ValueError(f"{path!r} holds {keys}: name the images array 'images' or 'x'.")
            label_key = next((k for k in _LABEL_KEYS if k in data), None)
            return data[image_key], (None if label_key is None else data[label_key])
    if "idx" in os.path.basename(path):
        return read_idx(path), None
    raise ValueError(f"Unsupported data file {path!r}: use .npy, .npz or an idx(.gz) file.")


def _fit_images(images, image_shape):
    """Adds a missing channel axis (grayscale) and checks the shape against the model's."""
    images = np.asarray(images)
    if images.ndim == len(image_shape) and image_shape[-1] == 1:
        images = images[..., None]
    if images.shape[1:] != tuple(image_shape):
        raise ValueError(
            f"The model takes images of shape {tuple(image_shape)}, got a batch of shape "
            f"{images.shape}."
        )
    return images


def collect_images(data, image_shape, limit=None, seed=0):
    """Up to `limit` images (float32, N x H x W x C) from `data`.

    `data` may be an array of images, a path (.npy, .npz, idx), or any iterable of batches:
    arrays, `(images, labels)` tuples or `{"images": ...}` dicts (a `tf.data.Dataset` from the
    training pipeline works). From an array or file, `limit` images are drawn at random
    (seeded); from an iterable, the first `limit` are taken.
    """
    if isinstance(data, (str, os.PathLike)):
        data = load_arrays(data)[0]
    if isinstance(data, np.ndarray) or hasattr(data, "__array__") and hasattr(data, "shape"):
        images = _fit_images(np.asarray(data), image_shape)
        if limit is not None and len(images) > limit:
            rng = np.random.default_rng(seed)
            images = images[np.sort(rng.choice(len(images), limit, replace=False))]
        return images.astype("float32")
    batches, count = [], 0
    for batch in data:
        if isinstance(batch, dict):
            batch = batch.get("images", next(iter(batch.values())))
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        batch = np.asarray(batch)
        if batch.ndim == len(image_shape) - (image_shape[-1] == 1):
            batch = batch[None]  # a single image
        batch = _fit_images(batch, image_shape)
        batches.append(batch)
        count += len(batch)
        if limit is not None and count >= limit:
            break
    if not batches:
        raise ValueError("The data yielded no images.")
    return np.concatenate(batches)[:limit].astype("float32")


def _keras_logits(model, images, batch_size=64):
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype="float32")


# ---------------------------------------------------------------------------------------
# The TensorFlow and PyTorch sides (in this process under that backend, else in a subprocess).


def _tf_write_saved_model(model, path, input_dtype="float32", batch_size=None, output_name="logits"):
    import tensorflow as tf

    shape = (batch_size,) + _image_shape(model, fixed=False)
    spec = tf.TensorSpec(shape, tf.as_dtype(input_dtype), name="images")

    def serve(images):
        return {output_name: model(tf.cast(images, tf.float32), training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.write_out(path, verbose=False)


def _pin_pixel_range(images):
    """Makes the first calibration image span 0..255 (two pixels), so a uint8 input
    tensor gets scale 1 and zero point 0 and takes raw pixels."""
    images = images.copy()
    flat = images[0].reshape(-1)
    flat[0], flat[-1] = 0.0, 255.0
    images[0] = flat.reshape(images[0].shape)
    return images


def _tf_convert(model, quantize, representative=None, input_dtype="float32"):
    """TFLite flatbuffer bytes of `model` (TensorFlow backend), batch 1, builtin ops only."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        graph_input = "float32" if quantize == "int8" else input_dtype
        _tf_write_saved_model(model, tmp, graph_input, batch_size=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            samples = representative.astype("float32")
            if input_dtype == "uint8":
                samples = _pin_pixel_range(samples)
            converter.representative_dataset = lambda: ([s[None]] for s in samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.as_dtype(input_dtype)
            converter.inference_output_type = tf.float32
        return converter.convert()


def _tf_saved_model_logits(path, images):
    """Logits, per-image latencies (s) and input dtype of a SavedModel's serving signature."""
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    out_name = next(iter(serve.structured_outputs))
    input_dtype = next(iter(serve.structured_input_signature[1].values())).dtype.name
    images = _as_input(images, input_dtype)
    serve(images=tf.constant(images[:1]))  # warm-up (tracing)
    logits, times = [], []
    for image in images:
        start = time.perf_counter()
        logits.append(serve(images=tf.constant(image[None]))[out_name].numpy())
        times.append(time.perf_counter() - start)
    return np.concatenate(logits), times, input_dtype


def _torch_write_onnx(model, path, input_dtype="float32", opset=None):
    """Writes `model` (PyTorch backend) as ONNX with a free batch size."""
    import torch

    class Serve(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images):
            return self.model(images.to(torch.float32), training=False)

    example = torch.zeros((2,) + _image_shape(model, fixed=True), dtype=getattr(torch, input_dtype))
    program = torch.onnx.export(
        Serve(model).eval(),
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        opset_version=opset,
        verbose=False,
    )
    program.optimize()
    program.save(path)


def _run_under(backend, model, jobs):
    """Runs export jobs (dicts) under `backend` and returns their results (dicts of arrays).

    Under that backend they run here; under another one `model` is saved as a `.keras` file
    and one `KERAS_BACKEND=backend` subprocess runs them all.
    """
    if keras.backend.backend() == backend:
        return _worker_jobs(model, jobs)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, keras.Model):
            model_path = os.path.join(tmp, "model.keras")
            model.save(model_path)
            model = model_path
        elif model is not None:
            model = os.path.abspath(model)
        saved_jobs = []
        for i, job in enumerate(jobs):
            job = dict(job)
            for key, value in job.items():
                if isinstance(value, np.ndarray):
                    job[key] = {"npy": os.path.join(tmp, f"{i}_{key}.npy")}
                    np.save(job[key]["npy"], value)
            saved_jobs.append(job)
        spec = os.path.join(tmp, "task.json")
        with open(spec, "w") as f:
            json.dump({"model": model, "jobs": saved_jobs, "results": tmp}, f)
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        code = "import sys, keras_vit.export as e; e._worker_main(sys.argv[1])"
        proc = subprocess.run(
            [sys.executable, "-c", code, spec], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            name = {"tensorflow": "TensorFlow", "torch": "PyTorch"}[backend]
            raise RuntimeError(
                f"Export under {name} (in a subprocess) failed:\n{proc.stderr[-4000:]}"
            )
        results = []
        for i in range(len(jobs)):
            with np.load(os.path.join(tmp, f"result_{i}.npz")) as result:
                results.append({k: result[k] for k in result.files})
        return results


def _worker_main(spec_path):
    """The subprocess side of `_run_under`."""
    with open(spec_path) as f:
        task = json.load(f)
    jobs = [
        {k: np.load(v["npy"]) if isinstance(v, dict) else v for k, v in job.items()}
        for job in task["jobs"]
    ]
    for i, result in enumerate(_worker_jobs(task["model"], jobs)):
        np.savez(os.path.join(task["results"], f"result_{i}.npz"), **result)


def _worker_jobs(model, jobs):
    """Runs export jobs: "onnx" under the PyTorch backend, the others under TensorFlow."""
    if model is not None:
        model = as_float32(load_model(model))
    results = []
    for job in jobs:
        kind, path = job["kind"], job["path"]
        result = {}
        if kind == "saved_model":
            partial = path + ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            _tf_write_saved_model(model, partial, job["input_dtype"])
            shutil.rmtree(path, ignore_errors=True)
            os.replace(partial, path)
        elif kind == "tflite":
            flatbuffer = _tf_convert(
                model, job["quantize"], job.get("representative"), job["input_dtype"]
            )
            with open(path, "wb") as f:
                f.write(flatbuffer)
        elif kind == "onnx":
            _torch_write_onnx(model, path, job["input_dtype"], job.get("opset"))
        elif kind == "saved_model_logits":
            logits, times, input_dtype = _tf_saved_model_logits(path, job["images"])
            result = {"logits": logits, "times": np.asarray(times), "input_dtype": np.asarray(input_dtype)}
        else:
            raise ValueError(f"Unknown export job {kind!r}.")
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------
# Public API.


def _default_parity_images(image_shape, count=16):
    return np.random.default_rng(0).uniform(0, 255, (count, *image_shape)).astype("float32")


def export(
    model,
    output_dir=None,
    quantize=("float32",),
    saved_model=False,
    onnx=False,
    representative_data=None,
    eval_images=None,
    eval_labels=None,
    input_dtype=None,
    name=None,
    num_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    num_threads=1,
    overwrite=False,
    report_path=None,
    verbose=True,
):
    """Exports TFLite variants (and optionally a SavedModel and ONNX) and reports parity for each.

    Writes `{name}_{fp32,fp16,dynamic_int8,int8}.tflite` for the modes in `quantize`, with
    `saved_model=True` the folder `{name}_saved_model` and with `onnx=True` `{name}.onnx`,
    all in `output_dir` (created if missing; default: beside the `.keras` file, or the
    current folder). `name` defaults to the `.keras` file's stem or the model's name. The
    TensorFlow conversions run in one TensorFlow pass (one subprocess under JAX or PyTorch),
    ONNX in one PyTorch pass. Every argument is checked before anything is converted.

    Each file is compared with the Keras model on `eval_images` (and `eval_labels`, one class
    id per image, for accuracies), or on 16 random images: the report (a list of
    `parity_report` dicts) is printed as a table when `verbose`, written as markdown to
    `report_path` if given, and returned. See `export_tflite` for the other arguments.
    """
    quantize = [normalize_quantization(q) for q in ([quantize] if isinstance(quantize, str) or quantize is None else quantize)]
    quantize = list(dict.fromkeys(quantize))  # each file once, even if asked twice
    if not quantize and not saved_model and not onnx:
        raise ValueError(
            "Nothing to export: give at least one quantization mode, saved_model=True or onnx=True."
        )
    model_path = None if isinstance(model, keras.Model) else os.fspath(model)
    if output_dir is None:
        output_dir = os.path.dirname(os.path.abspath(model_path)) if model_path else os.getcwd()
    if name is None:
        name = os.path.splitext(os.path.basename(model_path))[0] if model_path else model.name
    loaded = load_model(model)
    image_shape = _image_shape(loaded, fixed=bool(quantize) or onnx)
    if input_dtype is not None:
        _check_input_dtype(input_dtype)
    num_calibration_samples = _check_positive_int(num_calibration_samples, "num_calibration_samples")
    if "int8" in quantize and representative_data is None:
        raise ValueError(_NO_REPRESENTATIVE)
    if eval_labels is not None and eval_images is None:
        raise ValueError("eval_labels were given without eval_images: pass the images they label.")
    if eval_images is None:
        eval_images = _default_parity_images(image_shape)
    else:
        eval_images = collect_images(eval_images, image_shape)
    if eval_labels is not None:
        eval_labels = _check_labels(eval_labels, len(eval_images), _num_classes(loaded))
    if onnx:
        _check_onnx_packages()
    representative = None
    if "int8" in quantize:
        representative = collect_images(representative_data, image_shape, num_calibration_samples)
    output_dir = _make_output_folder(output_dir)
    if report_path is not None:
        _check_output_path(report_path, overwrite)
    onnx_path = None
    if onnx:
        onnx_path = _check_output_path(os.path.join(output_dir, f"{name}.onnx"), overwrite)
    jobs = []
    if saved_model:
        path = _check_output_path(os.path.join(output_dir, f"{name}_saved_model"), overwrite, folder=True)
        jobs.append({"kind": "saved_model", "path": path, "input_dtype": input_dtype or "float32", "variant": "saved_model"})
    for mode in quantize:
        path = _check_output_path(os.path.join(output_dir, f"{name}_{FILE_SUFFIXES[mode]}.tflite"), overwrite)
        jobs.append({
            "kind": "tflite", "path": path, "quantize": mode, "variant": mode,
            "input_dtype": input_dtype or ("uint8" if mode == "int8" else "float32"),
            "representative": representative if mode == "int8" else None,
        })
    if saved_model:
        jobs.append({"kind": "saved_model_logits", "path": jobs[0]["path"], "images": eval_images})
    results = _run_under("tensorflow", model_path or loaded, jobs) if jobs else []
    if onnx:
        _run_under("torch", model_path or loaded, [
            {"kind": "onnx", "path": onnx_path, "input_dtype": input_dtype or "float32"}
        ])
    reference = _ReferenceLogits(loaded, eval_images)
    reports = []
    for job, result in zip(jobs, results):
        if job["kind"] == "tflite":
            check_builtin_ops(job["path"])
            reports.append(parity_report(loaded, job["path"], eval_images, eval_labels,
                                         reference=reference, num_threads=num_threads, variant=job["variant"]))
    if onnx:
        reports.append(parity_report(loaded, onnx_path, eval_images, eval_labels,
                                     reference=reference, num_threads=num_threads, variant="onnx"))
    if saved_model:
        logits, times, dtype = results[-1]["logits"], list(results[-1]["times"]), str(results[-1]["input_dtype"])
        reports.insert(0, _compare(jobs[0]["path"], "saved_model", dtype, logits, times, reference, eval_labels, "TensorFlow"))
    table = format_report(reports)
    if verbose:
        print(table)
    if report_path is not None:
        with open(report_path, "w") as f:
            f.write(table + "\n")
    return reports


_NO_REPRESENTATIVE = (
    "Full-integer int8 quantization needs representative_data (a few hundred training "
    "images) to calibrate activation ranges; use quantize='dynamic' for int8 weights "
    "without calibration."
)


def export_saved_model(model, path, input_dtype="float32", overwrite=False):
    """Writes a TensorFlow SavedModel with a `serving_default` signature.

    The signature takes `images` (batch, H, W, C) of `input_dtype` ("float32" or "uint8";
    pixel values 0..255 for a ViT, which rescales inside) and returns `{"logits": ...}`.
    Works from any backend; a mixed-precision model is exported in float32.
    Returns the path.
    """
    _check_input_dtype(input_dtype)
    path = os.path.abspath(_check_output_path(path, overwrite, folder=True))
    _image_shape(load_model(model), fixed=False)
    job = {"kind": "saved_model", "path": path, "input_dtype": input_dtype}
    _run_under("tensorflow", model, [job])
    return path


def export_tflite(
    model,
    path,
    quantize="float32",
    representative_data=None,
    input_dtype=None,
    num_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    overwrite=False,
):
    """Writes a TFLite (LiteRT) file for a single image (batch 1), builtin ops only.

    Args:
        model: a `keras.Model` (any backend) or the path of a `.keras` file.
        path: the output file, ending in `.tflite`; its folder must exist.
        quantize: "float32" (or None), "float16", "dynamic" or "int8" (full integer).
        representative_data: images to calibrate "int8" on, ideally from the training
            pipeline: an array, a .npy / .npz / idx path, or an iterable of batches
            (e.g. a `tf.data.Dataset` of `(images, labels)`), in the model's input range.
        input_dtype: "float32" or "uint8" (raw pixels); default uint8 for "int8" and
            float32 otherwise.
        num_calibration_samples: how many representative images calibrate "int8" (a
            positive integer).
        overwrite: replace an existing file.

    Returns the path. Raises if the file would need an op outside TFLite's builtins.
    Use `parity_report` to compare it with the Keras model, or `export` for both.
    """
    quantize = normalize_quantization(quantize)
    input_dtype = input_dtype or ("uint8" if quantize == "int8" else "float32")
    _check_input_dtype(input_dtype)
    num_calibration_samples = _check_positive_int(num_calibration_samples, "num_calibration_samples")
    path = os.path.abspath(_check_output_path(path, overwrite, suffix=".tflite"))
    if quantize == "int8" and representative_data is None:
        raise ValueError(_NO_REPRESENTATIVE)
    image_shape = _image_shape(load_model(model), fixed=True)
    representative = None
    if quantize == "int8":
        representative = collect_images(representative_data, image_shape, num_calibration_samples)
    job = {"kind": "tflite", "path": path, "quantize": quantize, "input_dtype": input_dtype,
           "representative": representative}
    _run_under("tensorflow", model, [job])
    check_builtin_ops(path)
    return path


_ONNX_PACKAGES = {"torch": "torch", "onnx": "onnx", "onnxscript": "onnxscript",
                  "onnxruntime": "onnxruntime"}


def _check_onnx_packages():
    """Raises an ImportError naming what ONNX export lacks (it needs no backend switch)."""
    from importlib.util import find_spec

    missing = [name for module, name in _ONNX_PACKAGES.items() if find_spec(module) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)}: pip install \"keras-vit[onnx]\"."
        )


def export_onnx(model, path, input_dtype="float32", opset=None, overwrite=False):
    """Writes an ONNX file: input `images` (batch, H, W, C), any batch size; output `logits`.

    Args:
        model: a `keras.Model` (any backend) or the path of a `.keras` file; it is exported
            through PyTorch (a subprocess under TensorFlow or JAX), in float32.
        path: the output file, ending in `.onnx`; its folder must exist.
        input_dtype: "float32" or "uint8" pixels (0..255 for a ViT, which rescales inside).
        opset: the ONNX opset; None for the exporter's default.
        overwrite: replace an existing file.

    Returns the path. `run_onnx` runs it with ONNX Runtime; `parity_report` compares it.
    """
    _check_input_dtype(input_dtype)
    path = os.path.abspath(_check_output_path(path, overwrite, suffix=".onnx"))
    _image_shape(load_model(model), fixed=True)
    _check_onnx_packages()
    _run_under("torch", model, [{"kind": "onnx", "path": path, "input_dtype": input_dtype,
                                 "opset": opset}])
    return path


def run_onnx(path, images, num_threads=1):
    """Runs an ONNX file on each image (batch 1) with ONNX Runtime on the CPU.

    Float images (0..255) are cast to the file's input type (uint8 rounds them).
    Returns (logits as float32 (N, classes), per-image latencies in seconds).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    session = onnxruntime.InferenceSession(
        os.fspath(path), options, providers=["CPUExecutionProvider"]
    )
    inp = session.get_inputs()[0]
    images = _as_input(images, _onnx_input_dtype(session))
    logits, times = [], []
    for image in images:
        start = time.perf_counter()
        logits.append(session.run(None, {inp.name: image[None]})[0].astype("float32"))
        times.append(time.perf_counter() - start)
    return np.concatenate(logits), times


def _onnx_input_dtype(session_or_path):
    if isinstance(session_or_path, (str, os.PathLike)):
        import onnxruntime

        session_or_path = onnxruntime.InferenceSession(
            os.fspath(session_or_path), providers=["CPUExecutionProvider"]
        )
    kind = session_or_path.get_inputs()[0].type
    return {"tensor(float)": "float32", "tensor(uint8)": "uint8"}[kind]


def tflite_ops(path):
    """The sorted names of the ops in a TFLite file (custom ops by their custom name)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(path))
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def check_builtin_ops(path):
    """Raises a RuntimeError if a TFLite file holds an op outside TFLite's builtins.

    Such ops (Flex / Select TF ops like `FlexErf`, custom ops) need the Flex delegate or a
    custom op resolver, which the plain LiteRT interpreter on a phone does not have.
    Returns the file's op names.
    """
    from ai_edge_litert import schema_py_generated as schema

    builtin = {name for name in vars(schema.BuiltinOperator) if name.isupper()} - {"CUSTOM"}
    ops = tflite_ops(path)
    bad = [op for op in ops if op not in builtin]
    if bad:
        raise RuntimeError(
            f"{os.fspath(path)} holds ops outside TFLite's builtins: {', '.join(bad)}; it "
            "would need the Flex delegate. (Exact GELU must lower to the builtin GELU; the "
            "tanh approximation, gelu_approximate=True, always does.)"
        )
    return ops


def _as_input(images, dtype):
    images = np.asarray(images, dtype="float32")
    if dtype == "uint8":
        return np.clip(np.round(images), 0, 255).astype("uint8")
    return images


def run_tflite(path, images, num_threads=1):
    """Runs a TFLite file on each image with the LiteRT interpreter (no Flex delegate).

    Float images (0..255) are cast or quantized to the file's input type with its
    quantization parameters, and quantized outputs are dequantized.
    Returns (logits as float32 (N, classes), per-image latencies in seconds).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    images = np.asarray(images, dtype="float32")
    if np.issubdtype(inp["dtype"], np.integer):
        info = np.iinfo(inp["dtype"])
        if scale:
            images = images / scale + zero_point
        images = np.clip(np.round(images), info.min, info.max)
    images = images.astype(inp["dtype"])
    out_scale, out_zero_point = out["quantization"]
    logits, times = [], []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
        result = interpreter.get_tensor(out["index"]).astype("float32")
        if out_scale:
            result = (result - out_zero_point) * out_scale
        logits.append(result)
    return np.concatenate(logits), times


def _file_size(path):
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    return os.path.getsize(path)


def _tflite_input_dtype(path):
    from ai_edge_litert.interpreter import Interpreter

    return np.dtype(Interpreter(model_path=os.fspath(path)).get_input_details()[0]["dtype"]).name


class _ReferenceLogits:
    """The Keras model's logits on a batch, per input dtype (uint8 inputs round pixels)."""

    def __init__(self, model, images):
        self.model = as_float32(load_model(model))
        self.images = _fit_images(np.asarray(images, dtype="float32"), _image_shape(self.model, fixed=False))
        self._logits = {}

    def images_for(self, input_dtype):
        return _as_input(self.images, input_dtype).astype("float32")

    def logits_for(self, input_dtype):
        images = self.images_for(input_dtype)
        key = "float32" if np.array_equal(images, self.images) else input_dtype
        if key not in self._logits:
            self._logits[key] = _keras_logits(self.model, images)
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
        labels: optional class ids, one per image, for accuracies.
        reference: for reuse across calls, a `_ReferenceLogits` of the same model and images.

    Returns a dict: variant, path, input_dtype, size_bytes, num_images, max_abs_diff (of
    logits), top1_agreement, keras_accuracy and accuracy (with labels, else None),
    latency_ms (median per image, batch 1, on this CPU; `num_threads` threads for TFLite
    and ONNX Runtime).
    """
    exported_path = os.fspath(exported_path)
    reference = reference or _ReferenceLogits(model, images)
    if labels is not None:
        labels = _check_labels(labels, len(reference.images), _num_classes(reference.model))
    if exported_path.endswith(".tflite"):
        input_dtype = _tflite_input_dtype(exported_path)
        logits, times = run_tflite(exported_path, reference.images_for(input_dtype), num_threads)
        runtime = f"LiteRT, {num_threads} thread(s)"
    elif exported_path.endswith(".onnx"):
        input_dtype = _onnx_input_dtype(exported_path)
        logits, times = run_onnx(exported_path, reference.images_for(input_dtype), num_threads)
        runtime = f"ONNX Runtime, {num_threads} thread(s)"
    else:
        job = {"kind": "saved_model_logits", "path": os.path.abspath(exported_path), "images": reference.images}
        result = _run_under("tensorflow", None, [job])[0]
        logits, times, input_dtype = result["logits"], list(result["times"]), str(result["input_dtype"])
        runtime = "TensorFlow"
    return _compare(exported_path, variant, input_dtype, logits, times, reference, labels, runtime)


def _compare(path, variant, input_dtype, logits, times, reference, labels, runtime):
    reference_logits = reference.logits_for(input_dtype)
    reference_top1, top1 = reference_logits.argmax(-1), logits.argmax(-1)
    report = {
        "variant": variant or os.path.basename(path.rstrip("/")),
        "path": path,
        "input_dtype": input_dtype,
        "size_bytes": _file_size(path),
        "num_images": len(logits),
        "max_abs_diff": float(np.max(np.abs(logits - reference_logits))),
        "top1_agreement": float(np.mean(top1 == reference_top1)),
        "keras_accuracy": None,
        "accuracy": None,
        "latency_ms": 1000 * statistics.median(times[1:] or times),
        "runtime": runtime,
    }
    if labels is not None:
        report["keras_accuracy"] = float(np.mean(reference_top1 == labels))
        report["accuracy"] = float(np.mean(top1 == labels))
    return report


def format_report(reports):
    """A markdown table of parity reports: variant, input, size, accuracy, parity, latency."""
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
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if reports:
        lines.append(
            f"\nOn {reports[0]['num_images']} images; latency: median per image, batch 1, on "
            "this CPU."
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Command line: `keras-vit export ...` (see keras_vit/__main__.py).

CLI_HELP = "export a .keras model to TFLite (float32/float16/dynamic/int8), a SavedModel or ONNX"


def _positive_int(text):
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def add_arguments(parser):
    parser.add_argument("model", help="the .keras file to export")
    parser.add_argument(
        "--format", nargs="+", choices=("tflite", "saved_model", "onnx"), default=["tflite"],
        help="what to write (default: tflite)",
    )
    parser.add_argument(
        "--quantize", nargs="+", metavar="MODE",
        help=f"TFLite variants, any of {', '.join(QUANTIZATIONS)} (default: float32)",
    )
    parser.add_argument(
        "--representative", metavar="PATH",
        help="calibration images for int8: .npy, .npz (images/x) or idx(.gz) training images",
    )
    parser.add_argument(
        "--calibration-samples", type=_positive_int, default=DEFAULT_CALIBRATION_SAMPLES,
        help=f"representative images that calibrate int8 (default: {DEFAULT_CALIBRATION_SAMPLES})",
    )
    parser.add_argument(
        "--eval-data", metavar="PATH",
        help="images for the parity report (.npy, .npz with images and labels, or idx); "
        "default: 16 random images",
    )
    parser.add_argument("--eval-labels", metavar="PATH",
                        help="labels for --eval-data, one class id per image (.npy or idx)")
    parser.add_argument("--input-dtype", choices=INPUT_DTYPES,
                        help="input type (default: uint8 for int8, float32 otherwise)")
    parser.add_argument("--output-dir", help="where to write, created if missing (default: beside the model)")
    parser.add_argument("--name", help="file name stem (default: the model file's stem)")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="LiteRT / ONNX Runtime threads for the latency")
    parser.add_argument("--report", metavar="PATH", help="also write the report as markdown here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")


def run_cli(args):
    if args.quantize and "tflite" not in args.format:
        raise ValueError("--quantize picks TFLite variants: add tflite to --format.")
    if args.eval_labels and not args.eval_data:
        raise ValueError("--eval-labels needs --eval-data, the images they label.")
    eval_images = eval_labels = None
    if args.eval_data:
        eval_images, eval_labels = load_arrays(args.eval_data)
    if args.eval_labels:
        eval_labels = load_arrays(args.eval_labels)[0]
    export(
        args.model,
        output_dir=args.output_dir,
        quantize=(args.quantize or ["float32"]) if "tflite" in args.format else [],
        saved_model="saved_model" in args.format,
        onnx="onnx" in args.format,
        representative_data=args.representative,
        eval_images=eval_images,
        eval_labels=eval_labels,
        input_dtype=args.input_dtype,
        name=args.name,
        num_calibration_samples=args.calibration_samples,
        num_threads=args.threads,
        overwrite=args.overwrite,
        report_path=args.report,
    )
    return 0
