"""Side-by-side speed benchmark: keras_vit vs keras-hub (and timm where importable).

One command runs every (backend, library) pair in its own subprocess, so a failure or
an out-of-memory in one of them loses nothing else and each peak-memory reading belongs
to one model, then prints a Markdown table:

    python benchmarks/bench.py --quick                 # our 2-core CPU: ti16 + s16 at 224
    python benchmarks/bench.py --gpu --out results.md  # one GPU: b16 at 224, bf16, JAX + timm
    python benchmarks/bench.py --backends jax --presets ti16 --batch-size 4 --steps 2

Measured for each model (warm-up excluded, median of `--repeats` timings):
- fwd img/s: a jitted forward pass on device-resident data (JAX `jax.jit` of
  `stateless_call`, TF `tf.function(jit_compile=True)`, torch eager or `torch.compile`);
- predict img/s: `model.predict` on host (NumPy) images;
- train img/s: `train_on_batch` steps (AdamW, sparse cross-entropy) on device-resident data;
- peak memory: the device allocator's peak on GPU, the process's peak RSS on CPU;
- params: the parameter count, checked against the architecture's (`expected_params`).
keras-hub is `ViTBackbone` + `ViTImageClassifier` with the identical configuration; keras_vit
is built with `gelu_approximate=False` and `include_preprocessing=False` so both compute the
same function. timm is `vit_*` with `torch.compile` and, under mixed_bfloat16, bf16 autocast.

DINOv2 (`--presets dinov2_b14`; `dinov2_tiny` for the tests) is a features model: keras_vit's
ViT with layer scale, exact GELU and `include_top=False`, keras-hub's `DINOV2Backbone` (its
class token read out of the normalised tokens) and timm's `vit_base_patch14_dinov2` with
`num_classes=0`, all three at the benchmark's image size, returning the pooled class-token
features (B, D). Having no head, each trains to regress fixed N(0, 1) feature targets with a
mean squared error: the same loss, targets and parameters in every library. keras-hub's
backbone holds two extra weights (`keras_hub_dinov2_extra`).

DINOv3 (`--presets dinov3_b16`; `dinov3_tiny` for the tests) is the same kind of features
model with DINOv3 ViT-B/16's layout: 2-D RoPE of the patch tokens (theta 100) and no position
table, 4 register tokens, layer scale, LayerNorm epsilon 1e-5, and no query, key or value
biases (timm's `vit_base_patch16_dinov3`, whose released file has none; the `_qkvb` variant
holds them at zero); keras_vit's ViT with `rope="dinov3"`, keras-hub's `DINOV3Backbone`
(its class token read out of the normalised tokens; one extra weight, its mask token) and
timm's `vit_base_patch16_dinov3` with `global_pool="token"`, `num_classes=0`.
"""

import argparse
import ast
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_presets():
    """Every preset, read as literal data from keras_vit's preset modules (presets are
    data, not code): importing keras_vit would import Keras here, in the parent of every
    benchmark worker."""
    presets = {}
    for name in ("presets_original", "presets_recent", "presets"):
        with open(os.path.join(ROOT, "keras_vit", f"{name}.py")) as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                presets.update((ast.literal_eval(key), ast.literal_eval(value))
                               for key, value in zip(node.value.keys, node.value.values)
                               if key is not None)  # None: a ** of another module's dict
    return presets


# preset: (patch, hidden, mlp, heads, layers), from keras_vit.presets.
_PRESETS = load_presets()
ARCH = {
    name: tuple(_PRESETS[name]["config"][key] for key in (
        "patch_size", "hidden_dim", "mlp_dim", "num_heads", "num_layers"))
    for name in ("ti16", "s16", "s32", "b16", "b32", "l16", "dinov2_b14", "dinov3_b16")
}
ARCH["tiny"] = (8, 32, 64, 4, 2)  # for the test of this script, not a real model
ARCH["dinov2_tiny"] = ARCH["tiny"]
ARCH["dinov3_tiny"] = ARCH["tiny"]
DINOV2 = ("dinov2_b14", "dinov2_tiny")  # features models: DINOv2's layout, no head
DINOV3 = ("dinov3_b16", "dinov3_tiny")  # features models: DINOv3's layout (RoPE), no head
FEATURES = DINOV2 + DINOV3
DINOV3_REGISTERS = 4
LAYER_SCALE_INIT = 1e-5  # DINOv2's and timm's; keras-hub's and keras_vit's presets use 1.0
HUB_POSITION_SIZE = 518  # keras-hub's DINOv2 keeps a position table for 518 px images
TIMM_NAMES = {
    "ti16": "vit_tiny_patch16_224",
    "s16": "vit_small_patch16_224",
    "s32": "vit_small_patch32_224",
    "b16": "vit_base_patch16_224",
    "b32": "vit_base_patch32_224",
    "l16": "vit_large_patch16_224",
    "dinov2_b14": "vit_base_patch14_dinov2",
    "dinov3_b16": "vit_base_patch16_dinov3",
}
NUM_CLASSES = 1000


def expected_params(preset, image_size, lib="keras_vit"):
    """The parameter count from the architecture alone (class token, 1 + N positions): with
    a 1000-class head, or for DINOv2 with two layer scales a block and no head, plus
    `keras_hub_dinov2_extra` in keras-hub's; DINOv3: no position table, 4 registers, no
    query/key/value biases, two layer scales a block, no head, plus keras-hub's mask token."""
    patch, d, mlp, _, layers = ARCH[preset]
    tokens = 1 + (image_size // patch) ** 2
    block = 4 * d * d + 4 * d + 2 * d * mlp + mlp + d + 4 * d
    embedding = (patch * patch * 3 * d + d) + d + tokens * d
    if preset in DINOV3:
        embedding = (patch * patch * 3 * d + d) + d + DINOV3_REGISTERS * d
        extra = d if lib == "keras_hub" else 0  # its mask token
        return embedding + layers * (block - 3 * d + 2 * d) + 2 * d + extra
    if preset not in DINOV2:
        return embedding + layers * block + 2 * d + d * NUM_CLASSES + NUM_CLASSES
    extra = keras_hub_dinov2_extra(preset) if lib == "keras_hub" else 0
    return embedding + layers * (block + 2 * d) + 2 * d + extra


def keras_hub_dinov2_extra(preset):
    """What keras-hub's DINOv2 holds beyond the function it computes: a mask token (for masked
    training, unused here) and, non-trainable, the position table for 518 px images that the
    trainable one in use was interpolated from."""
    patch, d = ARCH[preset][:2]
    return d + (1 + (HUB_POSITION_SIZE // patch) ** 2) * d


def train_targets(preset, rng, n):
    """Class labels, or for a features model (DINOv2, DINOv3) N(0, 1) vectors to regress."""
    if preset in FEATURES:
        return rng.standard_normal((n, ARCH[preset][1])).astype("float32")
    return rng.integers(0, NUM_CLASSES, (n,)).astype("int32")


def attention_spec(text):
    """"plain", "head_major", "fast" or "fast:N" (the fast path padding to a multiple of N)
    -> (implementation, pad multiple or None); ValueError for anything else."""
    from keras_vit.config import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS

    impl, colon, pad = text.partition(":")
    if impl not in IMPLEMENTATIONS or (colon and impl != "fast"):
        raise ValueError(f"unknown attention {text!r}: one of {IMPLEMENTATIONS}, or fast:N")
    if not colon:
        return impl, None
    if not pad.isdigit() or int(pad) < 1:
        raise ValueError(f"attention {text!r}: N in fast:N must be a positive integer")
    return impl, int(pad)


def attention_specs(parser, text):
    """The comma list `text` of attention specs, each checked by `attention_spec`; a bad
    one ends the program through `parser.error`."""
    specs = get_list(text)
    for spec in specs:
        try:
            attention_spec(spec)
        except ValueError as e:
            parser.error(str(e))
    return specs


# --------------------------------------------------------------------------- worker side


def _time_chunk(fn, sync, steps):
    """Seconds per call of `fn`, over `steps` calls and one final sync."""
    start = time.perf_counter()
    out = None
    for _ in range(steps):
        out = fn()
    sync(out)
    return (time.perf_counter() - start) / steps


def median_time(fn, sync, warmup, repeats, steps):
    """Median seconds per call of `fn`, over `repeats` chunks of `steps` calls each."""
    for _ in range(warmup):
        sync(fn())
    return statistics.median(_time_chunk(fn, sync, steps) for _ in range(repeats))


class _Memory:
    """Peak memory of the device (GPU allocator) or the process (CPU peak RSS), in MiB."""

    def __init__(self, backend):
        self.backend = backend
        self.gpu = False
        if backend == "jax":
            import jax

            self.device = jax.devices()[0]
            self.gpu = self.device.platform == "gpu"
        elif backend == "torch":
            import torch

            self.gpu = torch.cuda.is_available()
        elif backend == "tensorflow":
            import tensorflow as tf

            self.gpu = bool(tf.config.list_physical_devices("GPU"))

    def reset(self):
        if self.backend == "torch" and self.gpu:
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif self.backend == "tensorflow" and self.gpu:
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_mib(self):
        if not self.gpu:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        if self.backend == "jax":  # monotonic over the process: phases run small to large
            return self.device.memory_stats().get("peak_bytes_in_use", 0) / 2**20
        if self.backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def build_keras_model(lib, preset, image_size):
    """The Keras model `lib` ("keras_vit", "keras_vit:<attention spec>" or "keras_hub")
    builds for benchmark preset `preset` (a key of `ARCH`) at `image_size`: images
    (B, image_size, image_size, 3) -> logits (B, NUM_CLASSES), or for a DINOv2 or DINOv3
    preset the class token's features (B, hidden_dim). Randomly initialised, no preprocessing."""
    patch, d, mlp, heads, layers = ARCH[preset]
    dinov2, dinov3 = preset in DINOV2, preset in DINOV3
    if lib.split(":")[0] == "keras_vit":
        from keras_vit import ViT

        top = dict(include_top=False, layer_scale_init=LAYER_SCALE_INIT,
                   mlp_activation="gelu") if dinov2 or dinov3 else dict(num_classes=NUM_CLASSES)
        if dinov3:
            top.update(rope="dinov3", rope_theta=100.0, position_embedding="none",
                       num_register_tokens=DINOV3_REGISTERS, query_bias=False, key_bias=False,
                       value_bias=False, pooling="token")
        model = ViT(
            image_size=image_size,
            patch_size=patch,
            hidden_dim=d,
            num_layers=layers,
            num_heads=heads,
            mlp_dim=mlp,
            include_preprocessing=False,
            gelu_approximate=False,
            layer_norm_epsilon=1e-5 if dinov3 else 1e-6,
            **top,
        )
        if ":" in lib:  # "keras_vit:plain", "keras_vit:fast:8": pick the attention path
            from keras_vit import attention

            attention.set_model_implementation(model, *attention_spec(lib.partition(":")[2]))
        return model
    import keras
    import keras_hub

    if dinov2 or dinov3:  # default mask token (and DINOv2's 518 px position table), as its presets
        common = dict(patch_size=patch, num_layers=layers, hidden_dim=d, num_heads=heads,
                      intermediate_dim=mlp, layer_scale_init_value=LAYER_SCALE_INIT,
                      image_shape=(image_size, image_size, 3))
        if dinov3:
            backbone = keras_hub.models.DINOV3Backbone(
                num_register_tokens=DINOV3_REGISTERS, use_query_bias=False, use_key_bias=False,
                use_value_bias=False, rope_theta=100.0, **common)
            input_name = "pixel_values"
        else:
            backbone = keras_hub.models.DINOV2Backbone(
                num_register_tokens=0,
                position_embedding_shape=(HUB_POSITION_SIZE, HUB_POSITION_SIZE, 3), **common)
            input_name = "images"
        images = keras.Input((image_size, image_size, 3), name="images")
        return keras.Model(images, backbone({input_name: images})[:, 0],
                           name=f"dinov{3 if dinov3 else 2}_features")
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(image_size, image_size, 3),
        patch_size=patch,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=d,
        mlp_dim=mlp,
        layer_norm_epsilon=1e-6,
    )
    return keras_hub.models.ViTImageClassifier(
        backbone=backbone, num_classes=NUM_CLASSES, preprocessor=None
    )


def _keras_phases(lib, spec, memory):
    """Builds `lib`'s model and returns (params, {phase: (run, sync, images per call)})."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    model = build_keras_model(lib, spec["preset"], spec["image_size"])
    bs, tbs, size = spec["batch_size"], spec["train_batch_size"], spec["image_size"]
    rng = np.random.default_rng(0)
    x_host = rng.uniform(-1, 1, (bs, size, size, 3)).astype("float32")
    phases = {}

    # 1. Jitted forward pass on device-resident data.
    if backend == "jax":
        import jax

        x = jax.device_put(x_host)
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        fwd = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        phases["fwd"] = (lambda: fwd(tv, ntv, x)), (lambda o: o.block_until_ready()), bs
    elif backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x_host)
        jit = spec["jit_compile"] is not False  # XLA unless told otherwise
        fwd_tf = tf.function(lambda x: model(x, training=False), jit_compile=jit)
        phases["fwd"] = (lambda: fwd_tf(x)), (lambda o: o.numpy()), bs
    else:
        import torch

        x = keras.ops.convert_to_tensor(x_host)
        call = torch.compile(model) if spec["jit_compile"] is True else model

        def run_torch():
            with torch.no_grad():
                return call(x, training=False)

        def sync_torch(o):
            if memory.gpu:
                torch.cuda.synchronize()
            return o

        phases["fwd"] = run_torch, sync_torch, bs

    # 2. model.predict on host images.
    if spec["preset"] in FEATURES:
        loss = keras.losses.MeanSquaredError()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=loss,
        metrics=None,
        jit_compile=spec["jit_compile"],
    )
    x_many = np.concatenate([x_host] * spec["predict_batches"])
    # keras-hub's task models wrap predict/train_on_batch in a preprocessing step that needs
    # tf.data or grain even without a preprocessor; the plain Keras methods time the model.
    predict, train_on_batch = keras.Model.predict, keras.Model.train_on_batch
    phases["predict"] = (
        (lambda: predict(model, x_many, batch_size=bs, verbose=0)), (lambda o: o), len(x_many)
    )

    # 3. Training steps on device-resident data; the loss is read back every step.
    xt = keras.ops.convert_to_tensor(rng.uniform(-1, 1, (tbs, size, size, 3)).astype("float32"))
    yt = keras.ops.convert_to_tensor(train_targets(spec["preset"], rng, tbs))
    losses = []

    def train():
        loss = train_on_batch(model, xt, yt)
        losses.append(float(loss[0] if isinstance(loss, list) else loss))
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"non-finite training loss: {losses}")
        return loss

    phases["train"] = train, (lambda o: o), tbs
    return int(model.count_params()), phases, losses


def _keras_worker(spec, results, save):
    """Times every library of `spec["libs"]` in this process, interleaving their timed chunks
    (A B A B ...), so a load change on a shared machine hits all of them alike."""
    import keras

    backend = keras.backend.backend()
    if spec.get("threads") and backend == "torch":
        import torch

        torch.set_num_threads(spec["threads"])
    elif spec.get("threads") and backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
    keras.config.set_dtype_policy(spec["precision"])
    memory = _Memory(backend)
    single = len(spec["libs"]) == 1  # peak memory only means something for one model
    built = {}
    for lib in spec["libs"]:
        results[lib]["device"] = "gpu" if memory.gpu else "cpu"
        try:
            params, phases, losses = _keras_phases(lib, spec, memory)
            results[lib]["params"] = params
            built[lib] = (phases, losses)
        except Exception as e:
            _record_error(results[lib], e)
    w, r, s = spec["warmup"], spec["repeats"], spec["steps"]
    for phase in ("fwd", "predict", "train"):
        if phase not in spec["phases"]:
            continue
        warm, reps, steps = (1, max(1, r // 2 + 1), 1) if phase == "predict" else (w, r, s)
        memory.reset()
        times = {lib: [] for lib in built}
        live = [lib for lib in built if "error" not in results[lib]]
        for rep in range(-warm, reps):
            order = live if rep % 2 == 0 else live[::-1]
            for lib in list(order):
                run, sync, _ = built[lib][0][phase]
                try:
                    if rep < 0:
                        sync(run())
                    else:
                        times[lib].append(_time_chunk(run, sync, steps))
                except Exception as e:
                    _record_error(results[lib], e)
                    live.remove(lib)
        for lib in live:
            images = built[lib][0][phase][2]
            results[lib][f"{phase}_ips"] = images / statistics.median(times[lib])
            if single and phase != "predict":
                results[lib][f"{phase}_peak_mib"] = memory.peak_mib()
            if phase == "train":
                results[lib]["final_loss"] = built[lib][1][-1]
        save()


def _record_error(result, e):
    import traceback

    traceback.print_exc()
    text = str(e).strip().splitlines()
    result["error"] = f"{type(e).__name__}: {text[0] if text else ''}"[:200]


def _timm_worker(spec, result, save):
    import numpy as np
    import timm
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    result["device"] = "gpu" if dev == "cuda" else "cpu"
    torch.manual_seed(0)
    dinov2 = spec["preset"] in FEATURES
    model = timm.create_model(
        TIMM_NAMES[spec["preset"]],
        pretrained=False,
        num_classes=0 if dinov2 else NUM_CLASSES,
        img_size=spec["image_size"],
        **(dict(init_values=LAYER_SCALE_INIT) if dinov2 else {}),
        **(dict(global_pool="token") if spec["preset"] in DINOV3 else {}),
    ).to(dev)
    result["params"] = sum(p.numel() for p in model.parameters())
    bf16 = spec["precision"] == "mixed_bfloat16"

    def autocast():
        return torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16)

    def sync(o):
        if dev == "cuda":
            torch.cuda.synchronize()
        return o

    def peak():
        if dev == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    bs, tbs, size = spec["batch_size"], spec["train_batch_size"], spec["image_size"]
    # torch.compile may recompile on the first calls: warm up at least 3 times.
    w, r, s = max(spec["warmup"], 3), spec["repeats"], spec["steps"]
    rng = np.random.default_rng(0)
    x_host = torch.from_numpy(rng.uniform(-1, 1, (bs, 3, size, size)).astype("float32"))
    compiled = torch.compile(model) if spec["jit_compile"] else model

    if "fwd" in spec["phases"] or "predict" in spec["phases"]:
        model.eval()
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        x = x_host.to(dev)

        def run():
            with torch.no_grad(), autocast():
                return compiled(x)

        if "fwd" in spec["phases"]:
            result["fwd_ips"] = bs / median_time(run, sync, w, r, s)
            result["fwd_peak_mib"] = peak()
            save()
        if "predict" in spec["phases"]:  # host batches in, host logits out

            def predict():
                outs = []
                for _ in range(spec["predict_batches"]):
                    with torch.no_grad(), autocast():
                        outs.append(compiled(x_host.to(dev)).float().cpu())
                return outs

            seconds = median_time(predict, lambda o: o, 1, max(1, r // 2 + 1), 1)
            result["predict_ips"] = bs * spec["predict_batches"] / seconds
            save()

    if "train" in spec["phases"]:
        model.train()
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=dev == "cuda")
        loss_fn = torch.nn.MSELoss() if dinov2 else torch.nn.CrossEntropyLoss()
        xt = torch.from_numpy(rng.uniform(-1, 1, (tbs, 3, size, size)).astype("float32")).to(dev)
        yt = torch.from_numpy(train_targets(spec["preset"], rng, tbs)).to(dev)
        yt = yt if dinov2 else yt.long()
        losses = []

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(compiled(xt), yt)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            return loss

        result["train_ips"] = tbs / median_time(step, sync, w, r, s)
        result["train_peak_mib"] = peak()
        result["final_loss"] = float(losses[-1])


def worker_main(spec_path, out_path):
    """Runs one job (one backend, one or more libraries) and writes a result per library,
    after every phase, so a job cut off by its timeout keeps what it measured."""
    with open(spec_path) as f:
        spec = json.load(f)
    results = {lib: {"spec": {**spec, "lib": lib}} for lib in spec["libs"]}
    start = time.time()

    def save():
        for res in results.values():
            res["seconds"] = time.time() - start
        with open(out_path + ".tmp", "w") as f:
            json.dump(list(results.values()), f)
        os.replace(out_path + ".tmp", out_path)

    try:
        if spec["libs"] == ["timm"]:
            _timm_worker(spec, results["timm"], save)
        else:
            _keras_worker(spec, results, save)
    except Exception as e:  # report, don't lose the rest
        for res in results.values():
            if "error" not in res:
                _record_error(res, e)
    save()


# --------------------------------------------------------------------------- driver side


def software_versions():
    """Versions of what is importable in this interpreter, without importing a backend."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("keras", "keras-hub", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "torch",
                 "timm", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine_description():
    """The CPU architecture and core count, and the GPUs nvidia-smi lists, if any."""
    info = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    try:
        gpus = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip()
        if gpus:
            info += ", GPU: " + gpus.replace("\n", "; ")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _text(output):
    if isinstance(output, bytes):
        return output.decode(errors="replace")[-6000:]
    return (output or "")[-6000:]


def run_one(spec, timeout, log):
    """Runs one job in a subprocess; returns a result dict per library."""
    def failed(message):
        return [{"spec": {**spec, "lib": lib}, "error": message, "seconds": time.time() - start}
                for lib in spec["libs"]]

    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ)
        env["KERAS_BACKEND"] = spec["backend"]
        if spec.get("threads"):
            n = spec["threads"]
            env.update(OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
            if n == 1:
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", spec_path, out_path]
        start = time.time()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            if log is not None:
                log.write(f"### {spec}\nTIMED OUT\n{_text(e.stdout)}{_text(e.stderr)}\n")
            if not os.path.exists(out_path):
                return failed(f"timed out after {timeout} s")
            with open(out_path) as f:
                partial = json.load(f)
            for res in partial:
                res.setdefault("error", f"timed out after {timeout} s; partial results")
            return partial
        if log is not None:
            log.write(f"### {spec}\n{proc.stdout[-6000:]}{proc.stderr[-6000:]}\n")
            log.flush()
        if not os.path.exists(out_path):
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
            return failed(f"worker exited {proc.returncode}: {tail[0][:200]}")
        with open(out_path) as f:
            return json.load(f)


def _fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits + (0 < value < 1)}f}"  # one more digit below 1 (a B/14 on a CPU)


def _label(spec):
    lib, _, attn = spec["lib"].partition(":")
    return f"{lib} ({attn} attention)" if attn else lib


def format_table(results):
    """Markdown table; each keras_vit row carries its ratio to keras-hub in the same setting."""
    hub = {}
    for res in results:
        sp = res["spec"]
        if sp["lib"] == "keras_hub":
            hub[(sp["backend"], sp["preset"], sp["precision"])] = res
    lines = [
        "| backend | preset | precision | library | params | fwd img/s | predict img/s "
        "| train img/s | fwd peak MiB | train peak MiB | x keras-hub fwd / predict / train "
        "| note |",
        "|" + "---|" * 12,
    ]
    for res in results:
        sp = res["spec"]
        backend = sp["backend"] + (" (compile)" if sp["jit_compile"] is True else "")
        ratio = "-"
        ref = hub.get((sp["backend"], sp["preset"], sp["precision"]))
        if sp["lib"] != "keras_hub" and ref and "error" not in res and "error" not in ref:
            parts = []
            for key in ("fwd_ips", "predict_ips", "train_ips"):
                a, b = res.get(key), ref.get(key)
                parts.append(f"{a / b:.2f}" if a and b else "-")
            ratio = " / ".join(parts)
        note = res.get("error", "")
        expected = expected_params(sp["preset"], sp["image_size"], sp["lib"].partition(":")[0])
        if not note and res.get("params") != expected:
            note = f"param count differs from {expected:,}"
        elif not note and sp["lib"] == "keras_hub" and sp["preset"] in DINOV2:
            note = (f"+{keras_hub_dinov2_extra(sp['preset']):,} params: mask token, "
                    f"{HUB_POSITION_SIZE} px position table")
        elif not note and sp["lib"] == "keras_hub" and sp["preset"] in DINOV3:
            note = f"+{ARCH[sp['preset']][1]:,} params: mask token"
        lines.append(
            f"| {backend} | {sp['preset']} {sp['image_size']} b{sp['batch_size']}/"
            f"{sp['train_batch_size']} | {sp['precision']} | {_label(sp)} "
            f"| {_fmt(res.get('params'))} | {_fmt(res.get('fwd_ips'), 1)} "
            f"| {_fmt(res.get('predict_ips'), 1)} | {_fmt(res.get('train_ips'), 1)} "
            f"| {_fmt(res.get('fwd_peak_mib'))} | {_fmt(res.get('train_peak_mib'))} "
            f"| {ratio} | {note} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="CPU mode: ti16 and s16 at 224, batch 8, float32, all 3 backends")
    mode.add_argument("--gpu", action="store_true",
                      help="GPU mode: b16 at 224, batch 256/128, mixed_bfloat16, JAX + timm")
    p.add_argument("--backends", help="comma list of tensorflow,jax,torch")
    p.add_argument("--libs", help="comma list of keras_vit,keras_hub,timm")
    p.add_argument("--presets", help="comma list, e.g. ti16,s16 or dinov2_b14")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int, help="inference batch")
    p.add_argument("--train-batch-size", type=int)
    p.add_argument("--precision", help="comma list of float32,mixed_bfloat16")
    p.add_argument("--attention", help="keras_vit attention paths to time, comma list of "
                   "plain,head_major,fast,fast:N (fast padding to a multiple of N; see "
                   "keras_vit.attention); default: the model as built")
    p.add_argument("--separate", action="store_true", help="one process per library "
                   "(default in --gpu mode: clean peak memory); otherwise the keras libraries "
                   "of a backend share a process and their timings are interleaved")
    p.add_argument("--phases", default="fwd,predict,train")
    p.add_argument("--warmup", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--steps", type=int, help="calls per timed chunk")
    p.add_argument("--predict-batches", type=int)
    p.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto",
                   help="model.compile(jit_compile=...); true also torch.compiles the "
                   "torch forward pass (timm is always torch.compiled unless false)")
    p.add_argument("--threads", type=int, help="CPU threads per framework (torch, TF intra-op, "
                   "XLA:CPU Eigen); on a shared, oversubscribed machine 1 is steadier")
    p.add_argument("--timeout", type=int, default=900, help="seconds per subprocess")
    p.add_argument("--deadline", type=int, help="seconds for the whole run: a job gets what "
                   "is left, and none starts with under 30 s left (the rest are listed)")
    p.add_argument("--out", help="write the Markdown report here")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--log", help="append every subprocess's output here")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    attention_specs(p, args.attention)
    return args


def build_specs(args):
    """The jobs to run: one per (preset, precision, backend), or per library with --separate."""
    if args.gpu:
        defaults = dict(backends="jax", libs="keras_vit,keras_hub,timm", presets="b16",
                        image_size=224, batch_size=256, train_batch_size=128,
                        precision="mixed_bfloat16", warmup=2, repeats=3, steps=10,
                        predict_batches=2)
    elif args.quick:
        defaults = dict(backends="tensorflow,jax,torch", libs="keras_vit,keras_hub,timm",
                        presets="ti16,s16", image_size=224, batch_size=8, train_batch_size=8,
                        precision="float32", warmup=1, repeats=5, steps=2, predict_batches=2)
    else:
        defaults = dict(backends="jax", libs="keras_vit,keras_hub,timm", presets="ti16",
                        image_size=224, batch_size=8, train_batch_size=8,
                        precision="float32", warmup=1, repeats=3, steps=2, predict_batches=2)

    def get(name):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    separate = args.separate or args.gpu
    libs = get_list(get("libs"))
    keras_libs = []
    for lib in libs:
        if lib == "keras_vit" and args.attention:
            keras_libs += [f"keras_vit:{a}" for a in get_list(args.attention)]
        elif lib != "timm":
            keras_libs.append(lib)
    common = dict(
        image_size=get("image_size"), batch_size=get("batch_size"),
        train_batch_size=get("train_batch_size"), warmup=get("warmup"),
        repeats=get("repeats"), steps=get("steps"), predict_batches=get("predict_batches"),
        phases=get_list(args.phases), threads=args.threads,
    )
    specs = []
    for preset in get_list(get("presets")):
        for precision in get_list(get("precision")):
            base = dict(common, preset=preset, precision=precision)
            for backend in get_list(get("backends")):
                groups = [[lib] for lib in keras_libs] if separate else [keras_libs]
                specs += [dict(base, backend=backend, libs=g, jit_compile=jit)
                          for g in groups if g]
            if "timm" in libs and preset in TIMM_NAMES:
                specs.append(dict(base, backend="torch", libs=["timm"],
                                  jit_compile=True if jit == "auto" else jit))
    return specs


def get_list(value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _timm_importable():
    """Whether timm imports (an installed timm can fail to: it needs torchvision)."""
    check = subprocess.run([sys.executable, "-c", "import timm"], capture_output=True)
    return check.returncode == 0


def _keras_hub_importable():
    from importlib.util import find_spec

    return find_spec("keras_hub") is not None


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
    specs = build_specs(args)
    missing = set()
    if any("timm" in spec["libs"] for spec in specs) and not _timm_importable():
        missing.add("timm")
    if not _keras_hub_importable():
        missing.add("keras_hub")
    for spec in specs:
        spec["libs"] = [lib for lib in spec["libs"] if lib not in missing]
    specs = [s for s in specs if s["libs"]]
    log = open(args.log, "a") if args.log else None
    command = " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
        f"Machine: {machine_description()}\n\n"
        f"Software: {', '.join(f'{k} {v}' for k, v in software_versions().items())}\n\n"
        f"Command: `python benchmarks/bench.py {command}`\n"
    )
    if missing:
        header += f"\nSkipped, not importable here: {', '.join(sorted(missing))}\n"
    print(header, flush=True)
    results = []
    start = time.time()
    for spec in specs:
        timeout = args.timeout
        if args.deadline:
            left = args.deadline - (time.time() - start)
            if left < 30:
                for lib in spec["libs"]:
                    results.append({"spec": {**spec, "lib": lib}, "seconds": 0,
                                    "error": "not run: --deadline reached"})
                continue
            timeout = int(min(timeout, left))
        for res in run_one(spec, timeout, log):
            results.append(res)
            status = res.get("error") or ", ".join(
                f"{k}={res[k]:,.1f}" for k in ("fwd_ips", "predict_ips", "train_ips") if k in res
            )
            print(f"[{res.get('seconds', 0):5.0f} s] {spec['backend']:<10} {spec['preset']} "
                  f"{spec['precision']} {_label(res['spec'])}: {status}", flush=True)
        report = header + "\n" + format_table(results) + "\n"
        if args.out:  # rewritten after every job, so a cut-off run keeps what it measured
            with open(args.out, "w") as f:
                f.write(report)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    if log is not None:
        log.close()
    print("\n" + format_table(results), flush=True)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
