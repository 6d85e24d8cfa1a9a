"""Multi-device scaling of keras_vit training (JAX `keras.distribution`), one row per setup.

For a preset at a fixed batch per data-parallel replica, builds the model afresh in each
setup's `keras_vit.distribution.for_training(...).scope()`, times AdamW `train_on_batch`
steps (sparse cross-entropy, random images and labels already on the devices, the loss
read back every step) and prints a Markdown table. On one host with N GPUs (or a TPU VM):

    KERAS_BACKEND=jax python benchmarks/scaling.py --preset b16 --per-device-batch-size 64 \\
        --mixed-precision --separate --json scaling.json
    KERAS_BACKEND=jax python benchmarks/scaling.py --setups none,data,model:2,model:4 \\
        --preset l16 --per-device-batch-size 32 --mixed-precision --separate
    CUDA_VISIBLE_DEVICES=0,1,2,3 KERAS_BACKEND=jax python benchmarks/scaling.py \\
        --mixed-precision --separate                      # on 4 of the GPUs

Setups (`--setups`, default `none`, `data` and `model:M` for each M in 2, 4, 8 that divides
the device count, the heads and the MLP width): `none` is the model on one device with the
per-replica batch; `data` copies it on every device (`DataParallel`); `model:M` is a
(N / M) x M ("batch", "model") mesh with each block split Megatron-style over M devices
(`ModelParallel`, `keras_vit.distribution.layout_map`); `model` picks the largest such M.

Columns:
- devices: the devices the setup runs on; mesh: data replicas x model-parallel devices;
- global batch: images per step, the per-device batch times the data replicas;
- step ms: the median of `--steps` timed steps, after `--warmup` untimed ones (the first
  compiles);
- images/s: global batch / step time;
- efficiency: images/s / (data replicas x the `none` setup's images/s): 1.00 is perfect
  scaling of the replicas; a model-parallel setup gives each replica M devices, so it
  pays off when it is above 1 / M or when the model does not fit on one device;
- peak MiB: the largest `peak_bytes_in_use` of the local devices (`memory_stats()`), "n/a"
  where JAX does not report it (CPUs). JAX's peak never goes down in a process: with the
  setups sharing one, a setup that did not raise it shows "<= " the peak so far;
  `--separate` runs each setup in its own process, so each peak is its own.

The table's numbers on simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)
mean nothing: all "devices" share the same cores. Such runs only check that the script works
(tests/test_benchmarks.py); that the setups train correctly (the same weights as one device,
the variables split as intended) is tested in tests/test_distribution.py.
"""

import argparse
import datetime
import gc
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench import get_list, machine_description, median_time, software_versions  # noqa: E402
from recipes.options import model_override, positive_int  # noqa: E402

MODEL_AXES = (2, 4, 8)  # the model-parallel setups tried by default


def model_config(args):
    """The ViT's constructor arguments: the preset's architecture, the image size, the
    `--model` overrides."""
    from keras_vit import presets

    return {**presets.PRESETS[args.preset]["config"], "image_size": args.image_size,
            **dict(args.model)}


def default_setups(config, num_devices):
    from keras_vit import distribution

    axes = distribution.model_axes(config, num_devices)
    return ["none", "data"] + [f"model:{m}" for m in MODEL_AXES if m in axes]


def parse_setup(text):
    """"none", "data", "model" or "model:M" -> (kind, model devices or None)."""
    kind, colon, m = text.partition(":")
    if kind in ("none", "data", "model") and not colon:
        return kind, None
    if kind == "model" and m.isdigit() and int(m) > 0:
        return kind, int(m)
    raise ValueError(f"unknown setup {text!r}: none, data, model or model:M")


def _peak_mib():
    """The largest peak of the local devices' allocators in MiB, or None (CPUs)."""
    import jax

    stats = [d.memory_stats() or {} for d in jax.local_devices()]
    peaks = [s["peak_bytes_in_use"] for s in stats if "peak_bytes_in_use" in s]
    return max(peaks) / 2**20 if peaks else None


def _on_devices(x):
    """`x` placed as the active distribution lays out a batch (else on the default device),
    so that `train_on_batch` moves nothing."""
    import jax
    import keras

    active = keras.distribution.distribution()
    if active is None:
        return jax.device_put(x)
    return keras.distribution.distribute_tensor(x, active.get_data_layout(x.shape))


def run_setup(name, config, args):
    """Builds, compiles and times one setup; returns its row (without efficiency)."""
    import keras
    import numpy as np

    from keras_vit import ViT, distribution, training

    kind, model_devices = parse_setup(name)
    setup = distribution.for_training(kind, config, model_devices=model_devices,
                                      per_device_batch_size=args.per_device_batch_size)
    devices = 1 if setup.kind == "none" else len(keras.distribution.list_devices())
    with setup.scope():
        keras.utils.set_random_seed(0)
        training.set_mixed_precision(args.mixed_precision)
        model = ViT(**config)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=True)
        rng = np.random.default_rng(0)
        size = model.image_size
        x = rng.uniform(0, 255, (setup.global_batch, *size, model.num_channels))
        y = rng.integers(0, model.num_classes, (setup.global_batch,))
        x, y = _on_devices(x.astype("float32")), _on_devices(y.astype("int32"))
        losses = []

        def step():
            loss = model.train_on_batch(x, y)  # returns host values: a synchronous step
            losses.append(float(loss[0] if isinstance(loss, list) else loss))
            if not np.isfinite(losses[-1]):
                raise FloatingPointError(f"non-finite training loss: {losses}")
            return loss

        seconds = median_time(step, lambda o: o, args.warmup, args.steps, 1)
        row = {
            "setup": name if setup.kind != "model" else f"model:{setup.model_devices}",
            "devices": devices,
            "mesh": [setup.data_devices, setup.model_devices],
            "global_batch": setup.global_batch,
            "step_ms": seconds * 1e3,
            "images_per_s": setup.global_batch / seconds,
            "params": int(model.count_params()),
            "sharded_variables": len(distribution.sharded_variables(model)),
            "final_loss": losses[-1],
            "peak_mib": _peak_mib(),
        }
    return row


def add_efficiency(rows):
    """Each row's images/s / (its data replicas x the `none` row's images/s)."""
    base = next((r["images_per_s"] for r in rows if r.get("setup") == "none"
                 and "error" not in r), None)
    for row in rows:
        if "error" not in row:
            row["efficiency"] = row["images_per_s"] / (row["mesh"][0] * base) if base else None
    return rows


def format_table(rows):
    lines = ["| setup | devices | mesh (data x model) | global batch | step ms (median) "
             "| images/s | efficiency vs none | peak MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setup']} | - | - | - | failed: {r['error']} | - | - | - |")
            continue
        efficiency = "n/a" if r["efficiency"] is None else f"{r['efficiency']:.2f}"
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:,.0f}"
        if r["peak_mib"] is not None and r.get("peak_upper_bound"):
            peak = "<= " + peak
        lines.append(f"| {r['setup']} | {r['devices']} | {r['mesh'][0]} x {r['mesh'][1]} "
                     f"| {r['global_batch']} | {r['step_ms']:.1f} | {r['images_per_s']:,.1f} "
                     f"| {efficiency} | {peak} |")
    return "\n".join(lines)


def _error_row(setup, e):
    import traceback

    traceback.print_exc()
    text = (str(e).strip().splitlines() or [""])[0]
    return {"setup": setup, "error": f"{type(e).__name__}: {text}"[:300]}


def measure_here(setups, config, args):
    """Every setup in this process, in order (their peaks marked as the process's)."""
    import keras

    rows, peak_so_far = [], None
    for setup in setups:
        try:
            row = run_setup(setup, config, args)
        except Exception as e:  # report, and go on with the other setups
            rows.append(_error_row(setup, e))
            continue
        finally:  # the next setup starts from nothing
            keras.config.set_dtype_policy("float32")
            keras.backend.clear_session()
            gc.collect()
        if row["peak_mib"] is not None and peak_so_far is not None:
            row["peak_upper_bound"] = row["peak_mib"] <= peak_so_far
        peak_so_far = row["peak_mib"]
        rows.append(row)
        print(f"{row['setup']}: {row['step_ms']:.1f} ms/step, {row['images_per_s']:,.1f} "
              f"images/s", flush=True)
    return rows


def _child_command(args, setup, json_path):
    command = [sys.executable, os.path.abspath(__file__), "--setups", setup, "--json",
               json_path, "--preset", args.preset, "--image-size", str(args.image_size),
               "--per-device-batch-size", str(args.per_device_batch_size),
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    for key, value in args.model:
        command += ["--model", f"{key}={json.dumps(value)}"]
    return command + (["--mixed-precision"] if args.mixed_precision else [])


def measure_separately(setups, args):
    """Every setup in its own process (the parent never starts JAX's devices, so each child
    has them all); returns (rows, the device text of the first child that reported)."""
    rows, device = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, setup in enumerate(setups):
            path = os.path.join(tmp, f"{i}.json")
            proc = subprocess.run(_child_command(args, setup, path), timeout=args.timeout)
            if not os.path.exists(path):
                rows.append({"setup": setup, "error": f"exit status {proc.returncode}"})
                continue
            with open(path) as f:
                result = json.load(f)
            device = device or result["device"]
            rows += result["rows"]
    return rows, device


def _device_count_elsewhere():
    """The number of JAX devices, asked of another process (starting them here would
    take GPU memory from the children of --separate)."""
    out = subprocess.run([sys.executable, "-c", "import jax; print(jax.device_count())"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1])


def parse_args(argv=None):
    from keras_vit import presets

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="b16", choices=sorted(presets.PRESETS))
    p.add_argument("--model", type=model_override, action="append", default=[],
                   metavar="KEY=VALUE", help="override a ViT argument of the preset, e.g. "
                   "--model num_layers=2 (repeatable)")
    p.add_argument("--image-size", type=positive_int, default=224)
    p.add_argument("--per-device-batch-size", type=positive_int, default=32,
                   help="images per step on each data-parallel replica")
    p.add_argument("--setups", help="comma list of none, data, model, model:M (default: none, "
                   "data and model:M for M in 2, 4, 8 where M divides the devices, heads and "
                   "MLP width)")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps")
    p.add_argument("--warmup", type=positive_int, default=2, help="untimed steps first")
    p.add_argument("--mixed-precision", action="store_true", help="train under mixed_bfloat16")
    p.add_argument("--separate", action="store_true", help="one process per setup: a clean "
                   "peak memory for each, and nothing left over from the one before")
    p.add_argument("--timeout", type=positive_int, default=1800,
                   help="seconds per setup with --separate")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    try:
        args.setups = get_list(args.setups) or None
        for setup in args.setups or ():
            parse_setup(setup)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None):
    import keras

    args = parse_args(argv)
    if keras.backend.backend() != "jax":
        sys.exit("scaling.py times keras.distribution's DataParallel and ModelParallel, "
                 "which Keras has on JAX only: run it with KERAS_BACKEND=jax.")
    config = model_config(args)
    separate = args.separate and (args.setups is None or len(args.setups) > 1)
    if separate:
        setups = args.setups or default_setups(config, _device_count_elsewhere())
        rows, device = measure_separately(setups, args)
    else:
        from breakdown import jax_device_text

        device = jax_device_text("scaling.py")
        setups = args.setups or default_setups(config, len(keras.distribution.list_devices()))
        rows = measure_here(setups, config, args)
    add_efficiency(rows)
    precision = "mixed_bfloat16" if args.mixed_precision else "float32"
    command = " ".join(sys.argv[1:] if argv is None else argv)
    facts = {  # as bench.py's report begins, plus the model
        "Date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "Machine": f"{machine_description()}; JAX devices: {device}",
        "Software": ", ".join(f"{k} {v}" for k, v in software_versions().items()),
        "Command": f"`python benchmarks/scaling.py {command}`",
        "Model": f"{args.preset} {config}, {precision}, {args.per_device_batch_size} images "
                 f"per replica, median of {args.steps} steps after {args.warmup}",
    }
    header = "\n\n".join(f"{key}: {value}" for key, value in facts.items()) + "\n"
    print("\n" + header + "\n" + format_table(rows), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "preset": args.preset, "model": config,
                       "precision": precision, "per_device_batch_size": args.per_device_batch_size,
                       "steps": args.steps, "warmup": args.warmup, "rows": rows}, f, indent=1)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
