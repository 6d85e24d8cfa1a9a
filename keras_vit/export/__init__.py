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
a mixed dtype policy is rebuilt in float32 first (`keras_vit.precision.as_float32`). The
SavedModel has a `serving_default` signature with one input `images` (float32 or uint8
pixels, 0..255 for a ViT) and one output `logits` (the feature vectors of a ViT with
`include_top=False`, under the same name); TFLite files come from that SavedModel
through `TFLiteConverter`, use builtin ops only (no Flex delegate, no Erf: exact GELU lowers
to TFLite's builtin GELU), and take a single image (batch 1).

ONNX files (`export_onnx`) come from PyTorch's exporter (`torch.onnx.export(dynamo=True)`)
under the PyTorch backend, in this process or a `KERAS_BACKEND=torch` subprocess: one input
`images` (float32 or uint8 pixels) with a free batch size, one output `logits`, checked with
ONNX Runtime. They need torch, onnx, onnxscript and onnxruntime (`pip install -e ".[onnx]"`
in a checkout).

Quantization modes of `export_tflite`:
    "float32"  no quantization.
    "float16"  float16 weights, float32 compute and input/output.
    "dynamic"  dynamic-range: int8 weights, float activations, float32 input/output.
    "int8"     full integer: int8 weights and activations calibrated on a representative
               dataset; the input is uint8 by default (raw 0..255 pixels, scale 1, zero
               point 0) and the output float32 logits. Every op is int8 (for NPUs and DSPs).
    "mixed_int8"  the same, except that the softmax computes in float32 (XNNPACK has no
               int8 softmax); float32 input and output.
    "matmul_int8"  int8 only in the matmuls (patch embedding, projections, MLP and both
               attention products), calibrated the same way; the residual stream, layer
               norms, GELU and the attention weights compute in float32, so XNNPACK runs
               every op but concatenations of more than 5 heads. Each head's attention is
               traced as (exp(s - rowmax(s)) @ v) / rowsum (the "integer_exp" graph form):
               weights that peak at exactly 1 in every row, which one int8 scale fits,
               where softmax probabilities over a few hundred tokens fall below one int8
               step. Faster than "mixed_int8" on one core and more accurate
               (benchmarks/RESULTS.md); float32 input and output.

The modules: `checks` (arguments, paths, labels, packages, the model's input), `arrays`
(data files and images), `saved_model`, `tflite` and `onnx` (each format: export, its
backend-side writer, running a file), `worker` (jobs under another backend, in a
subprocess), `parity` (reports and their table), `profile` (where a TFLite file's ops run:
`xnnpack_split`, `gpu_compatibility`) and `cli` (`keras-vit export`). This module
holds `export`, which does it all at once, and re-exports the public API.
"""

import contextlib
import os

import keras

from keras_vit import atomic
from keras_vit.export import arrays, checks, parity, worker
from keras_vit.export.arrays import collect_images, load_arrays
from keras_vit.export.checks import (
    DEFAULT_CALIBRATION_SAMPLES,
    INPUT_DTYPES,
    QUANTIZATIONS,
    load_model,
    normalize_quantization,
)
from keras_vit.export.onnx import export_onnx, run_onnx
from keras_vit.export.parity import format_report, parity_report
from keras_vit.export.profile import gpu_compatibility, xnnpack_split
from keras_vit.export.saved_model import export_saved_model
from keras_vit.export.tflite import check_builtin_ops, export_tflite, run_tflite, tflite_ops

FILE_SUFFIXES = {"float32": "fp32", "float16": "fp16", "dynamic": "dynamic_int8", "int8": "int8",
                 "mixed_int8": "mixed_int8", "matmul_int8": "matmul_int8"}

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES", "FILE_SUFFIXES", "INPUT_DTYPES", "QUANTIZATIONS",
    "check_builtin_ops", "collect_images", "export", "export_onnx", "export_saved_model",
    "export_tflite", "format_report", "gpu_compatibility", "load_arrays", "load_model",
    "normalize_quantization", "parity_report", "run_onnx", "run_tflite", "tflite_ops",
    "xnnpack_split",
]


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

    Each file is compared with the Keras model on `eval_images` (and, for a classifier,
    `eval_labels`, one class id per image, for accuracies), or on 16 random images; a
    features model (`include_top=False`) is compared by its feature vectors (see
    `parity_report`). The report (a list of `parity_report` dicts) is printed as a table
    when `verbose`, written as markdown to `report_path` if given, and returned. See
    `export_tflite` for the other arguments.

    Every file is written under a temporary name beside its final one and compared there;
    only when all are written and compared do they replace the final names (each one
    atomically), so an error, Ctrl-C, SIGTERM or a kill leaves the old files or none.
    """
    if isinstance(quantize, str) or quantize is None:
        quantize = [quantize]
    # Each file once, even if asked twice.
    quantize = list(dict.fromkeys(normalize_quantization(q) for q in quantize))
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
    image_shape = checks.image_shape(loaded, fixed=bool(quantize) or onnx)
    if input_dtype is not None:
        checks.check_input_dtype(input_dtype)
    num_calibration_samples = checks.check_positive_int(
        num_calibration_samples, "num_calibration_samples"
    )
    checks.check_representative(quantize, representative_data)
    if eval_labels is not None and eval_images is None:
        raise ValueError("eval_labels were given without eval_images: pass the images they label.")
    if eval_images is None:
        eval_images = arrays.random_pixels(image_shape)
    else:
        eval_images = collect_images(eval_images, image_shape)
    if eval_labels is not None:
        eval_labels = checks.check_labels(eval_labels, len(eval_images), checks.num_classes(loaded))
    if onnx:
        checks.check_onnx_packages()
    representative = None
    if any(mode in checks.CALIBRATED for mode in quantize):
        representative = collect_images(representative_data, image_shape, num_calibration_samples)
    output_dir = checks.make_output_folder(output_dir)
    if report_path is not None:
        checks.check_output_path(report_path, overwrite)
    paths = {}  # "onnx", "saved_model" and the quantization modes: the final paths
    if onnx:
        paths["onnx"] = checks.check_output_path(os.path.join(output_dir, f"{name}.onnx"), overwrite)
    if saved_model:
        paths["saved_model"] = checks.check_output_path(
            os.path.join(output_dir, f"{name}_saved_model"), overwrite, folder=True
        )
    for mode in quantize:
        paths[mode] = checks.check_output_path(
            os.path.join(output_dir, f"{name}_{FILE_SUFFIXES[mode]}.tflite"), overwrite
        )
    with contextlib.ExitStack() as replacing:
        # Leaving this block without an error moves every file to its final name.
        staged = {key: replacing.enter_context(atomic.replacing(path)) for key, path in paths.items()}
        reports = _write_and_compare(staged, loaded, model_path, quantize, input_dtype,
                                     representative, eval_images, eval_labels, num_threads)
    final = {staged[key]: path for key, path in paths.items()}
    for report in reports:
        report["path"] = final[report["path"]]
    table = format_report(reports)
    if report_path is not None:
        atomic.write_text(report_path, table + "\n")
    if verbose:
        print(table)
    return reports


def _write_and_compare(paths, loaded, model_path, quantize, input_dtype, representative,
                       eval_images, eval_labels, num_threads):
    """The writing part of `export`: writes the files at `paths` ("onnx", "saved_model" and
    the quantization modes: path) and returns their parity reports."""
    onnx_path, saved_model = paths.get("onnx"), "saved_model" in paths
    jobs = []
    if saved_model:
        jobs.append({"kind": "saved_model", "path": paths["saved_model"],
                     "input_dtype": input_dtype or "float32"})
    for mode in quantize:
        jobs.append({
            "kind": "tflite", "path": paths[mode], "quantize": mode, "variant": mode,
            "input_dtype": input_dtype or ("uint8" if mode == "int8" else "float32"),
            "representative": representative if mode in checks.CALIBRATED else None,
        })
    if saved_model:
        jobs.append({"kind": "saved_model_logits", "path": jobs[0]["path"], "images": eval_images})
    results = worker.run_under("tensorflow", model_path or loaded, jobs) if jobs else []
    if onnx_path:
        worker.run_under("torch", model_path or loaded, [
            {"kind": "onnx", "path": onnx_path, "input_dtype": input_dtype or "float32"}
        ])
    reference = parity.ReferenceLogits(loaded, eval_images)
    reports = []
    for job in jobs:
        if job["kind"] == "tflite":
            check_builtin_ops(job["path"])
            reports.append(parity_report(loaded, job["path"], eval_images, eval_labels,
                                         reference=reference, num_threads=num_threads, variant=job["variant"]))
    if onnx_path:
        reports.append(parity_report(loaded, onnx_path, eval_images, eval_labels,
                                     reference=reference, num_threads=num_threads, variant="onnx"))
    if saved_model:
        reports.insert(0, parity.saved_model_report(jobs[0]["path"], "saved_model", results[-1],
                                                    reference, eval_labels))
    return reports
