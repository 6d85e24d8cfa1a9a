"""Deployment benchmark: every file keras_vit writes for a phone, against ONNX Runtime and Keras.

For each model (the shipped Fashion-MNIST model; ViT-Ti/16 and ViT-S/16 at 224 and
DINOv2-S/14 features with random weights), one Markdown table with a row per runtime and
variant:

- LiteRT: every TFLite variant `keras_vit.export` writes (`export.QUANTIZATIONS`), run by
  the LiteRT interpreter with its default XNNPACK delegate;
- ONNX Runtime: keras_vit's ONNX file (float32) and ONNX Runtime's own int8 quantizations
  of it (`onnxruntime.quantization`: static QDQ per-channel, calibrated on the same
  representative images as the int8 TFLite file, and dynamic);
- Keras on each backend (its own subprocess), float32 and after `model.quantize(mode)`
  (a mode Keras refuses shows its error instead of numbers).

Columns: median latency at batch 1 for each thread count (LiteRT and ONNX Runtime files
are timed interleaved in one process, round-robin over the files for `--rounds` rounds, so
a change in the machine's load hits every file alike; each Keras row is timed in its own
process pinned to that many cores), size, accuracy on the 10,000 Fashion-MNIST test
images and its difference from Keras float32 (other models: min and mean cosine of the
outputs against Keras float32 on `--eval-images` images), and for each TFLite file the ops
XNNPACK runs, those it leaves to LiteRT's own kernels and the ops LiteRT's GPU delegate
would refuse (`export.xnnpack_split`, `export.gpu_compatibility`).

    KERAS_BACKEND=tensorflow python benchmarks/deploy.py --out deploy.md
    KERAS_BACKEND=tensorflow python benchmarks/deploy.py --quick --models fashion_mnist
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_families import FAMILIES, cpu_name, random_images, randomised  # noqa: E402

FASHION_MNIST = os.path.join(ROOT, "saved_models", "fashion_mnist", "model.keras")
MODELS = {
    # name: (what the table calls it, how it is built)
    "fashion_mnist": ("Fashion-MNIST (shipped, trained)", None),
    "vit_ti16": ("ViT-Ti/16 at 224 (random weights)", {"preset": "ti16"}),
    "vit_s16": ("ViT-S/16 at 224 (random weights)", {"preset": "s16"}),
    "dinov2_s14": ("DINOv2-S/14 features at 224 (random weights)", FAMILIES["DINOv2-S/14"]),
    # the smoke test's model, not in the default set
    "tiny": ("tiny ViT at 32 (random weights)", dict(image_size=32, patch_size=8, hidden_dim=32,
                                                     num_layers=1, num_heads=4, mlp_dim=64,
                                                     num_classes=10)),
}
DEFAULT_MODELS = ("fashion_mnist", "vit_ti16", "vit_s16", "dinov2_s14")
BACKENDS = ("tensorflow", "jax", "torch")
KERAS_MODES = ("float32", "int8", "int4", "float8")
ORT_VARIANTS = ("float32", "int8 static QDQ per-channel", "int8 dynamic")
PACKAGES = ("keras", ("tensorflow", "tensorflow-cpu"), "ai-edge-litert", "onnxruntime", "onnx", "jax", "torch", "numpy")


def build_model(name):
    """The Keras model `name` of MODELS, float32."""
    import keras

    from keras_vit import ViT
    from keras_vit.precision import as_float32

    keras.config.set_dtype_policy("float32")
    spec = MODELS[name][1]
    if spec is None:
        return as_float32(keras.saving.load_model(FASHION_MNIST, compile=False))
    keras.utils.set_random_seed(0)
    if "preset" in spec:
        model = ViT.from_preset(spec["preset"], weights=None, image_size=224)
    else:
        model = ViT(**spec)
    model = randomised(model)
    if model.include_top:  # the head starts at zero: every image would get its bias
        kernel = model.get_layer("head").kernel
        scale = 1.0 / np.sqrt(kernel.shape[0])
        kernel.assign(np.random.default_rng(3).normal(0, scale, kernel.shape).astype("float32"))
    return model


def model_data(name, model, args):
    """(evaluation images, their labels or None, representative images) for `name`."""
    if name == "fashion_mnist":
        from keras_vit import data

        test_images, test_labels = data.load_fashion_mnist(
            "test", directory=args.fashion_mnist_dir, limit=args.test_images, download=False)
        train_images, _ = data.load_fashion_mnist(
            "train", directory=args.fashion_mnist_dir, limit=args.calibration_samples,
            download=False)
        return test_images.astype("float32"), test_labels, train_images.astype("float32")
    size = model.inputs[0].shape[1]
    return (random_images(args.eval_images, size, seed=2), None,
            random_images(args.calibration_samples, size, seed=1))


# ---- ONNX Runtime ----------------------------------------------------------------------


def ort_quantize(onnx_path, representative, folder):
    """{variant: path or error text} of ONNX Runtime's int8 files of `onnx_path`."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.images = iter(representative.astype("float32"))

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {"images": image[None]}

    paths = {"float32": onnx_path}
    static = os.path.join(folder, "model_ort_static_int8.onnx")
    dynamic = os.path.join(folder, "model_ort_dynamic_int8.onnx")
    jobs = {
        ORT_VARIANTS[1]: (static, lambda: quantize_static(
            onnx_path, static, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)),
        ORT_VARIANTS[2]: (dynamic, lambda: quantize_dynamic(
            onnx_path, dynamic, weight_type=QuantType.QInt8)),
    }
    for variant, (path, run) in jobs.items():
        try:
            run()
            paths[variant] = path
        except Exception as error:  # a failure is a row, not the end of the run
            paths[variant] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return paths


def ort_session(path, threads):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # no busy-waiting threads between runs: they would steal the next file's cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image[None].astype("float32")})[0]


# ---- LiteRT ----------------------------------------------------------------------------


def litert_runner(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(image):
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return run


def time_interleaved(files, image, threads, rounds):
    """{key: (median seconds, median CPU seconds of this thread)}: one call of each file
    per round, files in turn. On one thread both runtimes compute in the calling thread, so
    its CPU time is the latency the file would have on an idle core, whatever else runs."""
    runners = {}
    for key, (kind, path) in files.items():
        runners[key] = (litert_runner if kind == "litert" else ort_session)(path, threads)
        for _ in range(2):  # warm up: allocation, weight packing
            runners[key](image)
    times = {key: [] for key in runners}
    cpu_times = {key: [] for key in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            cpu_start, start = time.thread_time(), time.perf_counter()
            run(image)
            times[key].append(time.perf_counter() - start)
            cpu_times[key].append(time.thread_time() - cpu_start)
    return {key: (statistics.median(times[key]), statistics.median(cpu_times[key]))
            for key in runners}


def file_outputs(kind, path, images):
    from keras_vit import export

    if kind == "litert":
        return export.run_tflite(path, images, num_threads=os.cpu_count())[0]
    return export.run_onnx(path, images, num_threads=os.cpu_count())[0]


# ---- Keras, one subprocess per backend and thread count --------------------------------


def keras_worker(job_path):
    """Runs one Keras job (in a subprocess under its backend): times each mode at batch 1
    on `threads` cores and, if asked, saves its outputs on the evaluation images."""
    with open(job_path) as f:
        job = json.load(f)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:job["threads"]])
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif backend == "torch":
        import torch

        torch.set_num_threads(job["threads"])
    from keras_vit.precision import as_float32

    images = np.load(job["images"])
    results = {}
    for mode in job["modes"]:
        result = results[mode] = {}
        try:
            model = as_float32(keras.saving.load_model(job["model"], compile=False))
            if mode != "float32":
                model.quantize(mode)
            model.compile()  # jit_compile="auto": XLA under TensorFlow and JAX
            for _ in range(3):
                model.predict_on_batch(images[:1])
            times = []
            for _ in range(job["rounds"]):
                start = time.perf_counter()
                model.predict_on_batch(images[:1])
                times.append(time.perf_counter() - start)
            result["seconds"] = statistics.median(times)
            if job["outputs"]:
                outputs = model.predict(images, batch_size=64, verbose=0)
                np.save(os.path.join(job["folder"], f"{backend}_{mode}.npy"), outputs)
                result["outputs"] = os.path.join(job["folder"], f"{backend}_{mode}.npy")
                saved = os.path.join(job["folder"], f"{backend}_{mode}.keras")
                try:
                    model.save(saved)
                    keras.saving.load_model(saved, compile=False)
                    result["size"] = os.path.getsize(saved)
                except Exception as error:
                    result["size_error"] = f"save/load: {type(error).__name__}"
        except Exception as error:
            result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    with open(job["result"], "w") as f:
        json.dump(results, f)


def run_keras(backend, model_path, images_path, threads, args, folder, outputs):
    """{mode: result} of one Keras worker subprocess."""
    job = {"model": model_path, "images": images_path, "threads": threads,
           "modes": args.keras_modes, "rounds": args.rounds, "outputs": outputs,
           "folder": folder, "result": os.path.join(folder, f"{backend}_{threads}.json")}
    job_path = os.path.join(folder, f"{backend}_{threads}_job.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--keras-worker", job_path],
                          env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return {mode: {"error": f"worker failed: {tail}"} for mode in args.keras_modes}
    with open(job["result"]) as f:
        return json.load(f)


# ---- one model --------------------------------------------------------------------------


def quality(outputs, reference, labels):
    """The quality cells: (accuracy, difference) with labels, else (min cosine, mean)."""
    outputs = np.asarray(outputs, "float64").reshape(len(reference), -1)
    if labels is not None:
        accuracy = np.mean(outputs.argmax(-1) == labels)
        keras_accuracy = np.mean(reference.argmax(-1) == labels)
        return f"{100 * accuracy:.2f} %", f"{100 * (accuracy - keras_accuracy):+.2f} pp"
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    cosine = np.sum(unit(outputs) * unit(reference), axis=-1)
    return f"{cosine.min():.4f}", f"{cosine.mean():.4f}"


def ops_text(counts):
    return ", ".join(f"{name}×{n}" for name, n in counts.items()) or "none"


def measure(name, args, folder):
    """The rows of model `name`: dicts of runtime, variant, latency per thread count, size,
    quality cells, XNNPACK and GPU delegate text."""
    import keras

    from keras_vit import export

    t0 = time.perf_counter()
    log = lambda text: print(f"[{name} {time.perf_counter() - t0:.0f} s] {text}",  # noqa: E731
                             file=sys.stderr, flush=True)
    model = build_model(name)
    images, labels, representative = model_data(name, model, args)
    model_path = os.path.join(folder, "model.keras")
    model.save(model_path)
    images_path = os.path.join(folder, "images.npy")
    np.save(images_path, images)
    reference = np.asarray(model.predict(images, batch_size=64, verbose=0), "float64")
    log("built")
    export.export(model, folder, quantize=list(export.QUANTIZATIONS), onnx=True,
                  representative_data=representative, eval_images=images[:2], name="model",
                  num_calibration_samples=len(representative), verbose=False)
    log("exported")
    files = {("LiteRT", mode): ("litert", os.path.join(
        folder, f"model_{export.FILE_SUFFIXES[mode]}.tflite")) for mode in export.QUANTIZATIONS}
    errors = {}
    for variant, path in ort_quantize(os.path.join(folder, "model.onnx"), representative,
                                      folder).items():
        if path.endswith(".onnx"):
            files[("ONNX Runtime", variant)] = ("ort", path)
        else:
            errors[("ONNX Runtime", variant)] = path
    latency = {key: {} for key in files}
    cpu = {}
    for threads in args.threads:
        for key, (seconds, cpu_seconds) in time_interleaved(files, images[0], threads,
                                                              args.rounds).items():
            latency[key][threads] = seconds
            if threads == 1:
                cpu[key] = cpu_seconds
        log(f"timed {len(files)} files at {threads} thread(s)")
    rows = []
    for key, (kind, path) in files.items():
        row = {"runtime": key[0], "variant": key[1], "latency": latency[key],
               "cpu": cpu.get(key), "size": os.path.getsize(path),
               "quality": quality(file_outputs(kind, path, images), reference, labels)}
        if kind == "litert":
            split = export.xnnpack_split(path)
            row["xnnpack"] = (f"{sum(split['delegated'].values())}/{split['num_ops']} ops, "
                              f"{split['partitions']} partition(s); left: "
                              f"{ops_text(split['fallback'])}")
            refused = {}
            for op in export.gpu_compatibility(path):
                refused[op["op"]] = refused.get(op["op"], 0) + 1
            row["gpu"] = "takes all" if not refused else "refuses " + ops_text(refused)
        rows.append(row)
    rows += [{"runtime": runtime, "variant": variant, "error": error}
             for (runtime, variant), error in errors.items()]
    log("LiteRT and ONNX Runtime rows done")
    for backend in args.backends:
        by_threads = {t: run_keras(backend, model_path, images_path, t, args, folder,
                                   outputs=t == args.threads[0]) for t in args.threads}
        for mode in args.keras_modes:
            first = by_threads[args.threads[0]][mode]
            row = {"runtime": f"Keras ({backend})", "variant": mode}
            if "error" in first:
                row["error"] = first["error"]
            else:
                row["latency"] = {t: r[mode].get("seconds") for t, r in by_threads.items()}
                row["size"] = first.get("size", first.get("size_error"))
                row["quality"] = quality(np.load(first["outputs"]), reference, labels)
            rows.append(row)
        log(f"Keras ({backend}) done")
    keras.backend.clear_session()
    return rows, len(images)


def format_table(name, rows, args, num_images, labelled):
    quality = (["accuracy", "Δ vs Keras float32"] if labelled
               else ["min cosine vs Keras float32", "mean cosine"])
    header = (["runtime", "variant"] + [f"{t} thread{'s' if t > 1 else ''}" for t in args.threads]
              + ["1 thread, CPU time", "size"] + quality + ["XNNPACK (LiteRT)", "GPU delegate"])
    lines = [f"### {MODELS[name][0]}", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for r in rows:
        if "error" in r:
            cells = [r["error"]] + [""] * (len(header) - 3)
        else:
            size = r["size"]
            cells = ([f"{1e3 * r['latency'][t]:.3f} ms" if r["latency"].get(t) else "—"
                      for t in args.threads]
                     + [f"{1e3 * r['cpu']:.3f} ms" if r.get("cpu") else "—"]
                     + [f"{size / 1e6:.2f} MB" if isinstance(size, int) else (size or "—")]
                     + list(r["quality"]) + [r.get("xnnpack", ""), r.get("gpu", "")])
        lines.append("| " + " | ".join([r["runtime"], r["variant"]] + cells) + " |")
    what = (f"the {num_images} Fashion-MNIST test images" if labelled
            else f"{num_images} random images")
    lines.append(f"\nQuality on {what}; latency: median of {args.rounds} rounds, batch 1 "
                 "(wall time; CPU time: the calling thread's, far less sensitive to other load).")
    return "\n".join(lines)


def installed(package):
    try:
        importlib.metadata.version(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def header(args):
    versions = []
    for names in PACKAGES:
        names = (names,) if isinstance(names, str) else names
        found = [f"{n} {importlib.metadata.version(n)}" for n in names if installed(n)]
        versions.append(found[0] if found else f"{names[0]} (not installed)")
    return "\n".join([
        "## Deployment benchmark (benchmarks/deploy.py)", "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} cores ({platform.machine()})",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
        f"- Command: `{' '.join(['python', 'benchmarks/deploy.py'] + sys.argv[1:])}`",
        "- LiteRT and ONNX Runtime files timed interleaved in one process (round-robin, "
        "ONNX Runtime without busy-waiting threads); Keras: predict_on_batch after "
        "compile() (XLA under TensorFlow and JAX), one process per backend and thread "
        "count, pinned to that many cores.", ""])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(DEFAULT_MODELS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=15, help="timed calls per file (default 15)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--keras-modes", nargs="+", choices=KERAS_MODES, default=list(KERAS_MODES))
    p.add_argument("--calibration-samples", type=int, default=256)
    p.add_argument("--eval-images", type=int, default=16,
                   help="random images for the cosine of the random-weight models")
    p.add_argument("--test-images", type=int, default=None,
                   help="Fashion-MNIST test images (default: all 10,000)")
    p.add_argument("--fashion-mnist-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per Keras subprocess")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 3 rounds, 1 thread, 8 calibration and 4 random images, "
                        "200 test images")
    p.add_argument("--out", help="also write the tables here")
    p.add_argument("--keras-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.threads, args.calibration_samples = 3, [1], 8
        args.eval_images, args.test_images = 4, args.test_images or 200
    if min(args.threads) < 1 or args.rounds < 1 or args.calibration_samples < 1:
        p.error("--threads, --rounds and --calibration-samples must be positive")
    args.threads = sorted(set(args.threads))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.keras_worker:
        keras_worker(args.keras_worker)
        return 0
    tables = [header(args)]
    print(tables[0], flush=True)
    for name in args.models:
        with tempfile.TemporaryDirectory() as folder:
            rows, count = measure(name, args, folder)
            tables.append(format_table(name, rows, args, count, labelled=name == "fashion_mnist"))
        print(tables[-1] + "\n", flush=True)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write("\n\n".join(tables) + "\n")
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
