"""Where the device time of a keras_vit step goes, op by op (JAX), with timm's kernels beside it.

    KERAS_BACKEND=jax python benchmarks/op_profile.py --preset b16 --precision mixed_bfloat16 \\
        --batch-size 256 --train-batch-size 128 --out-dir gpu_out --timm

For the whole model's jitted forward pass (inference mode, `--batch-size`), its gradient
(training mode, `--train-batch-size`) and a whole AdamW training step (the gradient plus the
optimizer update, as Keras's JAX trainer computes it; the difference is the optimizer's cost):
- writes the optimised HLO of each into `hlo.tar.gz`, to read offline;
- traces `--steps` calls with `jax.profiler` and sums the device time of each HLO
  instruction (on a CPU: the time of the XLA:CPU thunks, summed over threads), with the
  instruction's kind read from the HLO: a library matmul (cuBLAS), a Triton or XLA matmul
  fusion, cuDNN attention, a convolution, a reduction fusion (LayerNorm, softmax), an
  elementwise fusion, a copy or transpose;
- prints per call: the wall time, the summed op time, the time per kind, and the `--top`
  places in the model (the op_name XLA keeps, summed over the blocks) by time.
With `--timm` (PyTorch and timm installed): timm's model of the same size under
torch.compile and, in mixed_bfloat16, bf16 autocast, forward and gradient, its device time
summed by kernel with `torch.profiler`.
Output: the tables on stdout and in `op_profile.md` under `--out-dir`. On a GPU, kernels
that XLA launches inside a CUDA graph may carry no HLO op: they are matched by kernel name
(XLA names a fusion's kernel after it), else listed under their own name;
`XLA_FLAGS=--xla_gpu_enable_command_buffer=` turns the graphs off for exact attribution.
"""

import argparse
import glob
import io
import os
import re
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench import ARCH, DINOV2, NUM_CLASSES, TIMM_NAMES, build_keras_model  # noqa: E402

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\b([a-z][\w\-]*)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")


def parse_hlo(text):
    """{instruction name: (kind, source)} for every instruction of an HLO module's text."""
    bodies, lines_of = {}, []
    for line in text.splitlines():
        head = _COMPUTATION.match(line)
        if head and "=" not in line.split("(")[0]:
            lines_of = bodies.setdefault(head.group(1), [])
        elif line.strip() == "}":
            lines_of = []
        else:
            lines_of.append(line)
    ops = {}
    for lines in bodies.values():
        for line in lines:
            m = _INSTRUCTION.match(line)
            if m:
                name, opcode = m.groups()
                ops[name] = (_kind(opcode, line, bodies), _source(line))
    return ops


def _called_body(line, bodies):
    m = re.search(r"calls=%?([\w.\-]+)", line)
    return "\n".join(bodies.get(m.group(1), [])) if m else ""


def _kind(opcode, line, bodies):
    target = re.search(r'custom_call_target="([^"]+)"', line)
    target = target.group(1).lower() if target else ""
    if opcode == "custom-call":
        if "fmha" in target or "attention" in target:
            return "attention (cuDNN)"
        if "conv" in target:
            return "convolution (library)"
        if "gemm" in target or "matmul" in target or "blas" in target:
            return "matmul (library)"
        return f"custom-call {target}"
    if opcode == "fusion":
        body = _called_body(line, bodies)
        if "fmha" in body or "__cudnn" in line:
            return "attention (cuDNN)" if "fmha" in body else "cuDNN fusion"
        if " dot(" in body or "gemm" in line:
            return "matmul (fusion)"
        if " convolution(" in body:
            return "convolution (fusion)"
        if " reduce(" in body or "kind=kInput" in line:
            return "reduction fusion"
        ops_in_body = {m.group(2) for m in map(_INSTRUCTION.match, body.splitlines()) if m}
        if ops_in_body and ops_in_body <= {"parameter", "copy", "transpose", "bitcast"}:
            return "copy / transpose"
        return "elementwise fusion"
    if opcode in ("dot", "convolution"):
        return "matmul (XLA)" if opcode == "dot" else "convolution (XLA)"
    if opcode in ("copy", "transpose", "copy-start", "copy-done"):
        return "copy / transpose"
    return opcode


def _source(line):
    """Where XLA says an instruction comes from: the layer path and the op, blocks merged
    (`encoder_block_*`), " (backward)" where it is part of the gradient's transpose."""
    m = re.search(r'op_name="([^"]+)"', line)
    if not m:
        return ""
    parts, backward = [], False
    for part in m.group(1).split("/"):
        if part.startswith("jit("):
            continue
        backward |= part.startswith("transpose(")
        parts.append(re.sub(r"^(?:transpose\()?(?:jvp\()?([^()]*)\)*$", r"\1", part))
    source = re.sub(r"encoder_block_\d+", "encoder_block_*", "/".join(p for p in parts if p))
    return source + (" (backward)" if backward else "")


# Lines of a GPU plane that repeat the kernels' time (the profiler's own summaries).
_DERIVED_LINES = {"XLA Modules", "XLA Ops", "Steps", "Framework Ops", "Framework Name Scope",
                  "Source code", "TensorFlow Ops", "TensorFlow Name Scope", "Launch Stats"}


def device_events(xplane_path):
    """[(event name, duration ns, HLO op or None)] of the device's kernels (GPU) or of the
    XLA:CPU thunks (CPU) in a jax.profiler trace."""
    from jax.profiler import ProfileData

    data = ProfileData.from_file(xplane_path)
    planes = [p for p in data.planes if p.name.startswith("/device:GPU")]
    gpu = bool(planes)
    if not gpu:
        planes = [p for p in data.planes if p.name == "/host:CPU"]
    events = []
    for plane in planes:
        for line in plane.lines:
            if gpu and line.name in _DERIVED_LINES:
                continue  # summaries of the kernels on the stream lines
            for event in line.events:
                stats = dict(event.stats)
                op = stats.get("hlo_op")
                if op is None and not gpu:
                    continue  # CPU: only XLA thunks carry an HLO op
                events.append((event.name, event.duration_ns, op))
    return events


def summarize(events, ops, calls):
    """(per-kind rows, per-source rows, summed ms per call). A source row sums the ops of
    one kind from one place in the model over all blocks (`encoder_block_*`); ops without
    a recorded source, and GPU kernels without an HLO op, are listed under their own name.
    Rows: (kind, ms) and (source, kind, ms, ops summed)."""
    kernel_names = {re.sub(r"\W", "_", op): op for op in ops}  # XLA names kernels this way
    groups = {}
    for name, ns, op in events:
        key = op if op in ops else kernel_names.get(name, name)
        kind, source = ops.get(key, (_kernel_kind(name), ""))
        source = source or key
        ms, members = groups.get((source, kind), (0.0, set()))
        members.add(key)
        groups[(source, kind)] = (ms + ns / 1e6 / calls, members)
    by_kind = {}
    for (_, kind), (ms, _) in groups.items():
        by_kind[kind] = by_kind.get(kind, 0.0) + ms
    source_rows = sorted(((src, kind, ms, len(members))
                          for (src, kind), (ms, members) in groups.items()), key=lambda r: -r[2])
    kind_rows = sorted(by_kind.items(), key=lambda r: -r[1])
    return kind_rows, source_rows, sum(by_kind.values())


def _kernel_kind(name):
    lower = name.lower()
    if any(k in lower for k in ("gemm", "xmma", "nvjet", "cutlass", "matmul", "mm_")):
        return "matmul (library)"
    if any(k in lower for k in ("fmha", "flash", "attention", "sdpa")):
        return "attention kernel"
    if lower.startswith("triton"):
        return "Triton kernel"
    return "other kernel"


def _trace(fn, args, steps, sync):
    """Runs fn(*args) `steps` times under jax.profiler; returns (xplane path, wall s per call)."""
    import jax

    directory = tempfile.mkdtemp(prefix="op_profile_")
    with jax.profiler.trace(directory):
        start = time.perf_counter()
        for _ in range(steps):
            sync(fn(*args))
        wall = (time.perf_counter() - start) / steps
    return sorted(glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True))[-1], wall


def _train_step_fn(model, images):
    """A jitted AdamW training step on sparse cross-entropy, as Keras's JAX trainer builds
    it (gradient of the loss, then `optimizer.stateless_apply`); returns (fn, arguments)."""
    import jax
    import jax.numpy as jnp
    import keras

    optimizer = keras.optimizers.AdamW(learning_rate=1e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    labels = jnp.arange(images.shape[0]) % NUM_CLASSES

    def loss(trainable, frozen, x, y):
        logits, frozen = model.stateless_call(trainable, frozen, x, training=True)
        return loss_fn(y, logits), frozen

    def train_step(trainable, frozen, optimizer_variables, x, y):
        (value, frozen), grads = jax.value_and_grad(loss, has_aux=True)(trainable, frozen, x, y)
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        return value, trainable, frozen, optimizer_variables

    arguments = ([v.value for v in model.trainable_variables],
                 [v.value for v in model.non_trainable_variables],
                 [v.value for v in optimizer.variables], images, labels)
    return jax.jit(train_step), arguments


def profile_keras_vit(args):
    """{phase: (wall ms, kind rows, op rows, summed ms)} and {phase: optimised HLO text} for
    the forward pass, the gradient and the AdamW training step."""
    import jax.numpy as jnp
    import keras
    import numpy as np
    from breakdown import _block, _layer_fns

    keras.config.set_dtype_policy(args.precision)
    model = build_keras_model("keras_vit", args.preset, args.image_size)
    rng = np.random.default_rng(0)

    def images(batch):
        x = rng.uniform(-1, 1, (batch, args.image_size, args.image_size, 3))
        return jnp.asarray(x, "float32")

    forward, _, forward_args = _layer_fns(model, images(args.batch_size), input_gradient=False)
    _, gradient, gradient_args = _layer_fns(model, images(args.train_batch_size),
                                            input_gradient=False)
    phases = {"forward": (forward, forward_args), "gradient": (gradient, gradient_args),
              "train step": _train_step_fn(model, gradient_args[1])}
    results, hlo = {}, {}
    for phase, (fn, arguments) in phases.items():
        hlo[phase] = fn.lower(*arguments).compile().as_text()
        for _ in range(args.warmup):
            _block(fn(*arguments))
        path, wall = _trace(fn, arguments, args.steps, _block)
        kinds, ops, summed = summarize(device_events(path), parse_hlo(hlo[phase]), args.steps)
        results[phase] = (wall * 1e3, kinds, ops, summed)
        print(f"keras_vit {phase}: {wall * 1e3:.3f} ms per call", flush=True)
    return results, hlo


def torch_kernel_table(step, steps, warmup):
    """Runs step() `warmup` then `steps` times under torch.profiler; returns
    (wall ms per call, [(kernel or op name, kind, ms per call, count per call)]), device
    time where a GPU ran it, else CPU self time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        wall = (time.perf_counter() - start) / steps
    rows = []
    for avg in prof.key_averages():
        if cuda:
            us = getattr(avg, "self_device_time_total", None)
            if us is None:
                us = avg.self_cuda_time_total
        else:
            us = avg.self_cpu_time_total
        if us > 0 and (not cuda or str(getattr(avg, "device_type", "")).endswith("CUDA")):
            rows.append((avg.key, _kernel_kind(avg.key), us / 1e3 / steps, avg.count / steps))
    return wall * 1e3, sorted(rows, key=lambda r: -r[2])


def profile_timm(args):
    """{phase: (wall ms, kind rows, kernel rows, summed ms)} for timm's model."""
    import numpy as np
    import timm
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = timm.create_model(TIMM_NAMES[args.preset], pretrained=False,
                              num_classes=NUM_CLASSES, img_size=args.image_size).to(dev)
    compiled = torch.compile(model)
    bf16 = args.precision == "mixed_bfloat16"
    rng = np.random.default_rng(0)

    def images(batch):
        x = rng.uniform(-1, 1, (batch, 3, args.image_size, args.image_size)).astype("float32")
        return torch.from_numpy(x).to(dev)

    x, xt = images(args.batch_size), images(args.train_batch_size)

    def forward():
        with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
            return compiled(x)

    def gradient():
        model.zero_grad(set_to_none=True)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
            out = compiled(xt)
        out.float().sum().backward()

    results = {}
    for phase, step in (("forward", forward), ("gradient", gradient)):
        model.train(phase == "gradient")
        wall, rows = torch_kernel_table(step, args.steps, max(args.warmup, 3))
        kinds = {}
        for _, kind, ms, _ in rows:
            kinds[kind] = kinds.get(kind, 0.0) + ms
        kind_rows = sorted(kinds.items(), key=lambda r: -r[1])
        results[phase] = (wall, kind_rows, [(n, k, ms, f"{c:g} calls") for n, k, ms, c in rows],
                          sum(kinds.values()))
        print(f"timm {phase}: {wall:.3f} ms per call", flush=True)
    return results


def format_report(title, results, top):
    lines = [f"## {title}", ""]
    for phase, (wall, kinds, ops, summed) in results.items():
        if not summed:
            lines += [f"### {phase}: {wall:.3f} ms per call (wall), no device events traced", ""]
            continue
        lines += [f"### {phase}: {wall:.3f} ms per call (wall), {summed:.3f} ms summed op time",
                  "", "| kind | ms per call | share of summed |", "|---|---|---|"]
        lines += [f"| {kind} | {ms:.3f} | {ms / summed:.1%} |" for kind, ms in kinds]
        lines += ["", "| source (ops or kernels) | kind | ms per call | share | ops |",
                  "|---|---|---|---|---|"]
        lines += [f"| {source[:90]} | {kind} | {ms:.3f} | {ms / summed:.1%} | {count} |"
                  for source, kind, ms, count in ops[:top]]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="b16", choices=sorted(set(ARCH) - set(DINOV2)))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256, help="forward pass batch")
    p.add_argument("--train-batch-size", type=int, default=128, help="gradient batch")
    p.add_argument("--precision", default="mixed_bfloat16",
                   choices=["float32", "mixed_bfloat16", "mixed_float16"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="traced calls per phase")
    p.add_argument("--top", type=int, default=25, help="ops listed per phase")
    p.add_argument("--timm", action="store_true", help="also profile timm (needs timm)")
    p.add_argument("--out-dir", help="write op_profile.md and hlo.tar.gz here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from breakdown import jax_device_text

    header = (f"# Op profile: {args.preset} at {args.image_size}, batch {args.batch_size} "
              f"(forward) / {args.train_batch_size} (gradient), {args.precision}, on "
              f"{jax_device_text('op_profile.py')}, {args.steps} traced calls\n")
    results, hlo = profile_keras_vit(args)
    report = header + "\n" + format_report("keras_vit (JAX)", results, args.top)
    _write(args.out_dir, report, hlo)
    status = 0
    if args.timm:  # after keras_vit's report is on disk: a failure here loses nothing
        try:
            report += "\n" + format_report("timm + torch.compile", profile_timm(args), args.top)
        except Exception as e:
            report += f"\n## timm + torch.compile\n\nfailed: {type(e).__name__}: {e}\n"
            status = 1
        _write(args.out_dir, report)
    print(report, flush=True)
    return status


def _write(out_dir, report, hlo=None):
    """op_profile.md and, with `hlo`, hlo.tar.gz (hlo_<phase>.txt) under out_dir, if given."""
    if not out_dir:
        return
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "op_profile.md"), "w") as f:
        f.write(report)
    if hlo:
        with tarfile.open(os.path.join(out_dir, "hlo.tar.gz"), "w:gz") as tar:
            for phase, text in hlo.items():
                data = text.encode()
                info = tarfile.TarInfo(f"hlo_{phase.replace(' ', '_')}.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    sys.exit(main())
