"""TFLite (LiteRT) files: `export_tflite` and its TensorFlow-side converter (batch 1,
builtin ops only, six quantization modes), the builtin-op check, and running a file with
the LiteRT interpreter."""

import os
import time

import numpy as np

from keras_vit import atomic, config
from keras_vit.backend.private_apis import tflite_op_names
from keras_vit.export import arrays, checks, saved_model, tflite_graph, worker


# The ops "mixed_int8" keeps in float32: XNNPACK has no int8 softmax, and TFLite's own
# int8 kernel is several times slower than XNNPACK's float one (docs/speed.md).
MIXED_FLOAT_OPS = ("SOFTMAX",)
# The only ops "matmul_int8" computes in int8: the projections, MLP, patch embedding and
# both attention products, traced in the "integer_exp" graph form (attention weights
# exp(s - rowmax(s)), which one int8 scale fits, divided by their row sums after the
# product with the values); the residual stream, layer norms, the attention weights' exp,
# max, sum and division and GELU stay float32.
MATMUL_INT8_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D")
# The graph form each calibrated mode traces the model in (`keras_vit.config.graph_form`).
CALIBRATED_FORMS = {"int8": "integer", "mixed_int8": "integer", "matmul_int8": "integer_exp"}


def _builtin_op_names():
    from ai_edge_litert import schema_py_generated as schema

    return {name for name in vars(schema.BuiltinOperator) if name.isupper()} - {"CUSTOM"}


def _pin_pixel_range(images):
    """Makes the first calibration image span 0..255 (two pixels), so a uint8 input
    tensor gets scale 1 and zero point 0 and takes raw pixels."""
    images = images.copy()
    flat = images[0].reshape(-1)
    flat[0], flat[-1] = 0.0, 255.0
    images[0] = flat.reshape(images[0].shape)
    return images


def convert(model, quantize, representative=None, input_dtype="float32"):
    """TFLite flatbuffer bytes of `model` (TensorFlow backend), batch 1, builtin ops only.

    `quantize` is a canonical mode (see `export_tflite`); the calibrated ones
    (`checks.CALIBRATED`) calibrate on the `representative` images (float32, N x H x W x
    C), trace the model in their graph form (`CALIBRATED_FORMS`; the other modes in
    "tflite", see `keras_vit.config.graph_form`) and give XNNPACK the ranges its int8
    kernels need (`tflite_graph.xnnpack_ranges`).
    """
    import tensorflow as tf

    calibrated = quantize in checks.CALIBRATED
    with atomic.temporary_folder() as tmp:
        graph_input = "float32" if quantize == "int8" else input_dtype
        with config.graph_form(CALIBRATED_FORMS.get(quantize, "tflite")):
            saved_model.write_saved_model(model, tmp, graph_input, batch_size=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif calibrated:
            samples = representative.astype("float32")
            if input_dtype == "uint8" and quantize == "int8":
                samples = _pin_pixel_range(samples)
            converter.representative_dataset = lambda: ([s[None]] for s in samples)
        if quantize == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.as_dtype(input_dtype)
            converter.inference_output_type = tf.float32
            flatbuffer = converter.convert()
        elif quantize == "mixed_int8":
            flatbuffer = _convert_keeping_float(converter, samples[:1], MIXED_FLOAT_OPS)
        elif quantize == "matmul_int8":
            float_ops = sorted(_builtin_op_names() - set(MATMUL_INT8_OPS))
            flatbuffer = _convert_keeping_float(converter, samples[:1], float_ops)
        else:
            flatbuffer = converter.convert()
        if calibrated:
            flatbuffer, _ = tflite_graph.xnnpack_ranges(flatbuffer)
        return flatbuffer


def run_job(model, job):
    """The worker's "tflite" job, under TensorFlow (`keras_vit.export.worker`): converts
    `model` (`convert`) and writes the file at job["path"]; no result."""
    flatbuffer = convert(model, job["quantize"], job.get("representative"), job["input_dtype"])
    with open(job["path"], "wb") as f:
        f.write(flatbuffer)
    return {}


def _convert_keeping_float(converter, samples, float_ops):
    """Converts with int8 everywhere except the ops named in `float_ops`, which compute in
    float32 between DEQUANTIZE and QUANTIZE (TFLite's selective quantization)."""
    import tensorflow as tf

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([s[None]] for s in samples),
        debug_options=options)
    return debugger.get_nondebug_quantized_model()


def export_tflite(
    model,
    path,
    quantize="float32",
    representative_data=None,
    input_dtype=None,
    num_calibration_samples=checks.DEFAULT_CALIBRATION_SAMPLES,
    overwrite=False,
):
    """Writes a TFLite (LiteRT) file for a single image (batch 1), builtin ops only.

    Args:
        model: a `keras.Model` (any backend) or the path of a `.keras` file.
        path: the output file, ending in `.tflite`; its folder must exist.
        quantize: "float32" (or None), "float16", "dynamic", "int8" (full integer),
            "mixed_int8" (int8 except the softmax, which XNNPACK runs in float) or
            "matmul_int8" (int8 matmuls, everything else float).
        representative_data: images to calibrate the int8 modes on, ideally from the training
            pipeline: an array, a .npy / .npz / idx path, or an iterable of batches
            (e.g. a `tf.data.Dataset` of `(images, labels)`), in the model's input range.
        input_dtype: "float32" or "uint8" (raw pixels); default uint8 for "int8" and
            float32 otherwise.
        num_calibration_samples: how many representative images calibrate (a positive
            integer).
        overwrite: replace an existing file.

    Returns the path. Raises if the file would need an op outside TFLite's builtins (and
    leaves `path` as it was). The file is written under a temporary name beside `path`
    and renamed once checked, so a kill leaves the old file or the new one.
    Use `parity_report` to compare it with the Keras model, or `export` for both.
    """
    quantize = checks.normalize_quantization(quantize)
    input_dtype = input_dtype or ("uint8" if quantize == "int8" else "float32")
    checks.check_input_dtype(input_dtype)
    num_calibration_samples = checks.check_positive_int(
        num_calibration_samples, "num_calibration_samples"
    )
    path = os.path.abspath(checks.check_output_path(path, overwrite, suffix=".tflite"))
    checks.check_representative([quantize], representative_data)
    image_shape = checks.image_shape(checks.load_model(model), fixed=True)
    representative = None
    if quantize in checks.CALIBRATED:
        representative = arrays.collect_images(representative_data, image_shape, num_calibration_samples)
    with atomic.replacing(path) as staged:
        job = {"kind": "tflite", "path": staged, "quantize": quantize,
               "input_dtype": input_dtype, "representative": representative}
        worker.run_under("tensorflow", model, [job])
        check_builtin_ops(staged)  # before the file takes its final name
    return path


def tflite_ops(path):
    """The sorted names of the ops in a TFLite file (custom ops by their custom name)."""
    return tflite_op_names(path)


def check_builtin_ops(path):
    """Raises a RuntimeError if a TFLite file holds an op outside TFLite's builtins.

    Such ops (Flex / Select TF ops like `FlexErf`, custom ops) need the Flex delegate or a
    custom op resolver, which the plain LiteRT interpreter on a phone does not have.
    Returns the file's op names.
    """
    builtin = _builtin_op_names()
    ops = tflite_ops(path)
    bad = [op for op in ops if op not in builtin]
    if bad:
        raise RuntimeError(
            f"{os.fspath(path)} holds ops outside TFLite's builtins: {', '.join(bad)}; it "
            "would need the Flex delegate. (Exact GELU must lower to the builtin GELU; the "
            "tanh approximation, gelu_approximate=True, always does.)"
        )
    return ops


def file_input_dtype(path):
    """The name of a TFLite file's input dtype ("float32" or "uint8")."""
    from ai_edge_litert.interpreter import Interpreter

    return np.dtype(Interpreter(model_path=os.fspath(path)).get_input_details()[0]["dtype"]).name


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
