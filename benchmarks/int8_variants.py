"""Which ops to keep float in a calibrated int8 TFLite file: speed, XNNPACK split, cosine.

Converts one model (deploy.py's ViT-S/16 or DINOv2-S/14 at 224, random weights, its
calibration images) into selectively quantized variants: a graph form
(`keras_vit.config.graph_form`) and the set of ops that compute in int8 (TFLite's
selective quantization, every other op denylisted so it computes in float32 between
DEQUANTIZE and QUANTIZE), plus keras_vit's own modes for comparison. For each file:
XNNPACK's split (`export.xnnpack_split`), the calling thread's CPU time on one thread
(median of `--rounds` interleaved rounds; the calling thread computes everything, so
other load on the machine barely moves it), optionally the wall time on 2 threads, and
min / mean cosine of the outputs against Keras float32 on deploy.py's evaluation images.

    KERAS_BACKEND=tensorflow python benchmarks/int8_variants.py --model dinov2_s14 --no-time
    KERAS_BACKEND=tensorflow python benchmarks/int8_variants.py --model vit_s16 --calibration-samples 16
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deploy import build_model, quality, time_interleaved  # noqa: E402
from export_families import random_images  # noqa: E402

MATMULS = ("FULLY_CONNECTED", "CONV_2D", "BATCH_MATMUL")
# name: (graph form, ops computed in int8 ("all": every op), whether the attention
# probabilities-times-values products stay float32; ops None: keras_vit's export mode of
# that name, in the graph form it traces)
VARIANTS = {
    "float32": ("tflite", None, False),
    "dynamic": ("tflite", None, False),
    "int8": ("integer", None, False),
    "mixed_int8": ("integer", None, False),
    "matmul_int8": ("integer", None, False),
    "fc_int8/tflite": ("tflite", ("FULLY_CONNECTED", "CONV_2D"), False),
    "fc_int8/integer": ("integer", ("FULLY_CONNECTED", "CONV_2D"), False),
    "fc_bmm_int8/integer": ("integer", MATMULS, False),
    "fc_bmm_int8/tflite": ("tflite", MATMULS, False),
    # what "matmul_int8" wrote before it traced the "integer_exp" form
    "fc_scores_int8/integer": ("integer", MATMULS, True),
    "fc_bmm_softmax_int8/integer": ("integer", MATMULS + ("SOFTMAX",), False),
    "fc_bmm_int8/integer_exp": ("integer_exp", MATMULS, False),  # what "matmul_int8" writes
    "all_int8/integer_exp": ("integer_exp", "all", False),  # float32 input and output
}


def calibrated_model(model, form, representative, folder):
    """TFLite bytes of `model` traced in graph `form`, float32 with each activation's
    calibrated range on `representative` (cached in `folder`: every variant of one form
    shares it)."""
    import tensorflow as tf

    from keras_vit import config
    from keras_vit.export import saved_model

    path = os.path.join(folder, f"calibrated_{form}.tflite")
    if not os.path.exists(path):
        with tempfile.TemporaryDirectory() as tmp:
            with config.graph_form(form):
                saved_model.write_saved_model(model, tmp, "float32", batch_size=1)
            converter = tf.lite.TFLiteConverter.from_saved_model(
                tmp, signature_keys=["serving_default"])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            samples = representative.astype("float32")
            converter.representative_dataset = lambda: ([s[None]] for s in samples)
            converter.experimental_mlir_quantizer = True
            converter._experimental_calibrate_only = True  # what QuantizationDebugger does
            calibrated = converter.convert()
            with open(path, "wb") as f:
                f.write(calibrated)
    with open(path, "rb") as f:
        return f.read()


def quantize_selected(calibrated, int8_ops, float_values_product):
    """A calibrated model quantized to int8 in `int8_ops` only ("all": every op; and, with
    `float_values_product`, not the probabilities-times-values products), every other op
    float32 (TFLite's selective quantization), float32 input and output, XNNPACK's ranges."""
    from ai_edge_litert import schema_py_generated as schema
    from tensorflow.lite.python import convert

    from keras_vit.export import tflite_graph

    every_op = [name for name in vars(schema.BuiltinOperator) if name.isupper()]
    int8_ops = every_op if int8_ops == "all" else int8_ops
    float_nodes = tflite_graph.probability_products(calibrated) if float_values_product else None
    flatbuffer = convert.mlir_quantize(
        calibrated, denylisted_ops=[op for op in every_op if op not in int8_ops],
        denylisted_nodes=float_nodes)
    return tflite_graph.xnnpack_ranges(flatbuffer)[0]


def write_variant(model, name, representative, folder):
    """The path of variant `name`'s file in `folder` (reused if already there)."""
    from keras_vit import export

    path = os.path.join(folder, name.replace("/", "_") + ".tflite")
    if os.path.exists(path):
        return path
    form, int8_ops, float_values_product = VARIANTS[name]
    if int8_ops is None:
        export.export_tflite(model, path, quantize=name, representative_data=representative,
                             input_dtype="float32",
                             num_calibration_samples=len(representative))
    else:
        flatbuffer = quantize_selected(calibrated_model(model, form, representative, folder),
                                       int8_ops, float_values_product)
        with open(path, "wb") as f:
            f.write(flatbuffer)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["tiny", "vit_ti16", "vit_s16", "dinov2_s14"], default="vit_s16")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--calibration-samples", type=int, default=256)
    p.add_argument("--eval-images", type=int, default=16)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--two-threads", action="store_true", help="also time 2 threads (wall)")
    p.add_argument("--no-time", action="store_true", help="quality and ops only")
    p.add_argument("--folder", help="keep the files here (and reuse those already there)")
    args = p.parse_args(argv)

    from keras_vit import export

    model = build_model(args.model)
    size = model.inputs[0].shape[1]
    images = random_images(args.eval_images, size, seed=2)
    representative = random_images(args.calibration_samples, size, seed=1)
    reference = np.asarray(model.predict(images, batch_size=16, verbose=0), "float64")
    folder = args.folder or tempfile.mkdtemp(prefix="int8_variants_")
    os.makedirs(folder, exist_ok=True)
    files = {}
    for name in args.variants:
        files[name] = write_variant(model, name, representative, folder)
        print(f"converted {name}", file=sys.stderr, flush=True)
    timing = {}
    if not args.no_time:
        timed = {name: ("litert", path) for name, path in files.items()}
        timing[1] = time_interleaved(timed, images[0], 1, args.rounds)
        if args.two_threads:
            timing[2] = time_interleaved(timed, images[0], 2, args.rounds)
    print(f"| {args.model} variant | XNNPACK ops | partitions | left to TFLite | 1 thread CPU "
          "| 2 threads wall | min cosine | mean cosine |\n|---|---|---|---|---|---|---|---|")
    for name, path in files.items():
        split = export.xnnpack_split(path)
        left = ", ".join(f"{op}×{n}" for op, n in split["fallback"].items()) or "none"
        outputs = export.run_tflite(path, images, num_threads=os.cpu_count())[0]
        cells = [f"{sum(split['delegated'].values())}/{split['num_ops']}",
                 str(split["partitions"]), left]
        cells += [f"{1e3 * timing[1][name][1]:.2f} ms" if 1 in timing else "—",
                  f"{1e3 * timing[2][name][0]:.2f} ms" if 2 in timing else "—"]
        cells += list(quality(outputs, reference, None))
        print("| " + " | ".join([name] + cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
