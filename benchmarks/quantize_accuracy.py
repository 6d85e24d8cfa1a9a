"""Accuracy of Keras-native quantization (`ViT.quantize`) on the shipped Fashion-MNIST model.

For each backend (one `KERAS_BACKEND=...` subprocess each) and each quantization variant,
loads saved_models/fashion_mnist/model.keras, quantizes it, saves it to a .keras file and
loads it back, and measures the loaded model's accuracy on the 10,000 Fashion-MNIST test
images (Debian's /usr/share/datasets/fashion-mnist, or $FASHION_MNIST_DIR). Prints a
Markdown table: variant x backend, accuracy, its difference from the float model in
percentage points, and the .keras file's size.

    python benchmarks/quantize_accuracy.py
    python benchmarks/quantize_accuracy.py --backends jax --variants float32 int8 --limit 1000

Variants: "float32" (the model as shipped), "int8" (int8 weights per output channel, inputs
quantized per token on the fly), "int8_weights" (int8 weights only, float inputs), "int4"
(int4 weights in groups of 128 inputs), "int4_channel" (int4 weights, one scale per output
channel) and "float8" (e4m3 weights and inputs).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "saved_models", "fashion_mnist", "model.keras")
BACKENDS = ("tensorflow", "jax", "torch")
VARIANTS = ("float32", "int8", "int8_weights", "int4", "int4_channel", "float8")


def quantization_config(variant):
    """The `keras.quantizers` config of a variant (None for "float32")."""
    import keras

    return {
        "float32": None,
        "int8": keras.quantizers.Int8QuantizationConfig(),
        "int8_weights": keras.quantizers.Int8QuantizationConfig(activation_quantizer=None),
        "int4": keras.quantizers.Int4QuantizationConfig(),
        "int4_channel": keras.quantizers.Int4QuantizationConfig(block_size=-1),
        "float8": keras.quantizers.Float8QuantizationConfig(),
    }[variant]


def measure(variants, limit, batch_size):
    """Rows {variant, accuracy, bytes, examples} under this process's backend."""
    import keras
    import numpy as np

    import keras_vit  # noqa: F401  (registers the model's classes)
    from keras_vit import data

    images, labels = data.load_fashion_mnist("test", limit=limit, download=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            model = keras.saving.load_model(MODEL, compile=False)
            config = quantization_config(variant)
            if config is not None:
                model.quantize(config=config)
            path = os.path.join(tmp, f"{variant}.keras")
            model.save(path)
            loaded = keras.saving.load_model(path, compile=False)
            logits = loaded.predict(images.astype("float32"), batch_size=batch_size, verbose=0)
            accuracy = float(np.mean(np.argmax(logits, axis=-1) == labels))
            rows.append({"variant": variant, "accuracy": accuracy,
                         "bytes": os.path.getsize(path), "examples": len(labels)})
    return rows


def run_backend(backend, args):
    """`measure` in a KERAS_BACKEND=backend subprocess; its rows."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--variants",
               *args.variants, "--batch-size", str(args.batch_size)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results):
    """Markdown table of {backend: rows}."""
    lines = ["| variant | backend | accuracy | vs float32 (pp) | .keras MB |",
             "|---|---|---|---|---|"]
    for backend, rows in results.items():
        base = {r["variant"]: r for r in rows}.get("float32")
        for r in rows:
            delta = "" if base is None else f"{100 * (r['accuracy'] - base['accuracy']):+.2f}"
            lines.append(f"| {r['variant']} | {backend} | {100 * r['accuracy']:.2f} % | {delta} "
                         f"| {r['bytes'] / 1e6:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.variants, args.limit, args.batch_size)))
        return 0
    results = {backend: run_backend(backend, args) for backend in args.backends}
    examples = next(iter(results.values()))[0]["examples"]
    print(f"Fashion-MNIST test set: {examples} images; model {os.path.relpath(MODEL, ROOT)}")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
