"""The `keras-vit export ...` subcommand (see keras_vit/__main__.py): its argparse options
and `run_cli`, which checks them and calls `export`."""

import argparse

from keras_vit.export import (
    DEFAULT_CALIBRATION_SAMPLES,
    INPUT_DTYPES,
    QUANTIZATIONS,
    export,
    load_arrays,
)

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
    """Adds the subcommand's arguments to an argparse parser."""
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
    """Runs `keras-vit export` with parsed arguments; returns the exit status 0."""
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
