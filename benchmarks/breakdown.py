"""Where a keras_vit training step spends its time, component by component (JAX).

Times one jitted forward pass and one jitted gradient (forward + backward) of each part of
a ViT at a preset's size, with the FLOPs each does, so the gap between the whole model and
the card's matmul throughput can be pinned on a part:

    KERAS_BACKEND=jax python benchmarks/breakdown.py --preset b16 --batch-size 128 \\
        --precision mixed_bfloat16 --attention plain,fast,head_major

Rows (B = batch, T = tokens, D = width, M = MLP width, L = blocks):
- matmul (B*T, D) x (D, M): a bare matmul in the compute dtype, the ceiling to compare with;
- patch embedding: keras_vit's Conv2D, and the same product written as patches x matrix
  ("patchify matmul", not in the library: the alternative to measure);
- layer norm, attention (one row per `--attention` implementation), MLP, one encoder block;
- model: the whole ViT; "model - parts" is the model's time minus L blocks and the patch
  embedding, i.e. what the parts miss (head, embeddings, and anything XLA does across
  blocks, such as recomputing the residual stream's gradient);
- model with the blocks' output gradient materialised the other way round from the default
  (`keras_vit.config.set_gradient_materialization`: "off" on a CPU, "on" on a GPU in bf16),
  which shows whether XLA recomputes the residual gradient there.
The forward pass runs in inference mode; the gradient, of sum(output), in training mode,
with respect to the variables and the input (not the images, as in training). FLOPs count
2 per multiply-add; a gradient counts 3x the forward FLOPs (2x for the patch embedding,
whose images get no gradient).
"""

import argparse
import inspect
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench import ARCH, DINOV2, attention_spec, attention_specs, median_time  # noqa: E402


def _flops(preset, image_size, batch):
    """(forward, gradient) FLOPs of each part, 2 per multiply-add. A gradient costs 3x its
    forward pass, 2x for the patch embedding (no gradient for the images)."""
    patch, d, m, _, layers = ARCH[preset]
    n = (image_size // patch) ** 2
    t = n + 1
    attention = 2 * batch * t * d * 4 * d + 2 * 2 * batch * t * t * d
    mlp = 2 * 2 * batch * t * d * m
    block = attention + mlp
    embed = 2 * batch * n * patch * patch * 3 * d
    rest = layers * block + 2 * batch * d * 1000
    forward = dict(matmul=2 * batch * t * d * m, patch=embed, layer_norm=0,
                   attention=attention, mlp=mlp, block=block)
    flops = {name: (f, 3 * f) for name, f in forward.items()}
    flops["patch"] = (embed, 2 * embed)
    flops["model"] = (embed + rest, 2 * embed + 3 * rest)
    return flops


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


def _layer_fns(layer, x, copies=1, input_gradient=True):
    """(forward, gradient, arguments) for a built Keras layer called on `copies` times `x`
    (2 for self-attention's query and value). The forward pass runs in inference mode, the
    gradient in training mode (where "auto" attention may pick another path), with respect
    to the variables, and to `x` unless `input_gradient` is False (images, as in training)."""
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]
    has_training = "training" in inspect.signature(layer.call).parameters

    def call(tv, x, training):
        kwargs = {"training": training} if has_training else {}
        return layer.stateless_call(tv, frozen, *[x] * copies, **kwargs)[0]

    def loss(tv, x):
        return jnp.sum(call(tv, x, training=True).astype("float32"))

    argnums = (0, 1) if input_gradient else 0
    forward = jax.jit(lambda tv, x: call(tv, x, training=False))
    return forward, jax.jit(jax.grad(loss, argnums=argnums)), (trainable, x)


def _patchify_fns(conv_layer, images):
    """The patch embedding as (B, N, p*p*C) patches times the conv kernel seen as a matrix."""
    import jax
    import jax.numpy as jnp

    ph, pw = conv_layer.patch_size
    dtype = conv_layer.compute_dtype

    def forward(params, x):
        kernel, bias = params
        b, h, w, c = x.shape
        x = x.astype(dtype).reshape(b, h // ph, ph, w // pw, pw, c)
        x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // ph) * (w // pw), ph * pw * c)
        return x @ kernel.astype(dtype).reshape(-1, kernel.shape[-1]) + bias.astype(dtype)

    def loss(params, x):
        return jnp.sum(forward(params, x).astype("float32"))

    params = [v.value for v in conv_layer.projection.weights]
    return jax.jit(forward), jax.jit(jax.grad(loss)), (params, images)


def _matmul_fns(batch_tokens, d, m, dtype):
    import jax
    import jax.numpy as jnp

    a = jnp.ones((batch_tokens, d), dtype)
    b = jnp.ones((d, m), dtype)
    forward = jax.jit(lambda a, b: a @ b)
    grad = jax.jit(jax.grad(lambda a, b: jnp.sum((a @ b).astype("float32")), argnums=(0, 1)))
    return forward, grad, (a, b)


def build_rows(args):
    """[(name, forward, gradient, arguments, flops, multiplier in the model)]."""
    import jax.numpy as jnp
    import keras
    import numpy as np

    from keras_vit import ViT, attention, config
    from keras_vit import layers as vit_layers

    keras.config.set_dtype_policy(args.precision)
    patch, d, m, heads, layers = ARCH[args.preset]
    b, size = args.batch_size, args.image_size
    t = (size // patch) ** 2 + 1
    compute = keras.config.dtype_policy().compute_dtype
    flops = _flops(args.preset, size, b)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(-1, 1, (b, size, size, 3)), "float32")
    tokens = jnp.asarray(rng.normal(size=(b, t, d)), compute)

    rows = [("matmul (B*T, D) x (D, M)", *_matmul_fns(b * t, d, m, compute), flops["matmul"],
             0)]
    embed = vit_layers.PatchEmbedding(patch, d)
    embed.build(images.shape)
    rows.append(("patch embedding (conv)", *_layer_fns(embed, images, input_gradient=False),
                 flops["patch"], 1))
    rows.append(("patch embedding (patchify matmul)", *_patchify_fns(embed, images),
                 flops["patch"], 0))
    norm = keras.layers.LayerNormalization(epsilon=1e-6)
    norm.build(tokens.shape)
    rows.append(("layer norm", *_layer_fns(norm, tokens), (0, 0), 0))
    for spec in args.attention:
        impl, pad = attention_spec(spec)
        layer = attention.ViTAttention(num_heads=heads, key_dim=d // heads, implementation=impl,
                                       **({"pad_multiple": pad} if pad else {}))
        layer.build(tokens.shape, tokens.shape)
        rows.append((f"attention ({spec})", *_layer_fns(layer, tokens, copies=2),
                     flops["attention"], 0))
    mlp = keras.Sequential([
        keras.Input((t, d)),
        keras.layers.Dense(m, activation=keras.activations.gelu),
        keras.layers.Dense(d),
    ])
    rows.append(("MLP", *_layer_fns(mlp, tokens), flops["mlp"], 0))
    block = vit_layers.TransformerEncoderBlock(d, heads, m, mlp_activation="gelu")
    block.build(tokens.shape)
    rows.append(("encoder block", *_layer_fns(block, tokens), flops["block"], layers))
    model = ViT(image_size=size, patch_size=patch, hidden_dim=d, num_layers=layers,
                num_heads=heads, mlp_dim=m, include_preprocessing=False,
                gelu_approximate=False)
    rows.append(("model", *_layer_fns(model, images, input_gradient=False), flops["model"], 0))
    default = config.get_gradient_materialization()
    for mode in ("on", "off"):
        if _materializes(mode, compute) != _materializes(default, compute):
            fns = _layer_fns(model, images, input_gradient=False)
            rows.append((f"model (gradient materialization {mode})",
                         *_with_materialization(mode, *fns), flops["model"], 0))
    return rows


def _materializes(mode, dtype):
    """Whether blocks computing in `dtype` materialise their output gradient under `mode`."""
    from keras_vit import config
    from keras_vit import layers as vit_layers

    with config.gradient_materialization(mode):
        return vit_layers.materializes_gradient(dtype)


def _with_materialization(mode, forward, gradient, arguments):
    """`forward` and `gradient` traced (on their first call) under materialization `mode`."""
    from keras_vit import config

    under_mode = config.gradient_materialization(mode)
    return under_mode(forward), under_mode(gradient), arguments


def measure(args):
    """Times every row; returns ([(name, fwd s, grad s, flops, multiplier)], [(name, error)]).

    A row that fails (say, a padded length cuDNN refuses) is reported, not fatal, except
    the whole model's, which the table is relative to."""
    timed, failed = [], []
    for name, forward, grad, arguments, flops, times_in_model in build_rows(args):
        reps = dict(warmup=args.warmup, repeats=args.repeats, steps=args.steps)
        try:
            fwd = median_time(lambda: forward(*arguments), _block, **reps)
            grad_s = median_time(lambda: grad(*arguments), _block, **reps)
        except Exception as e:
            if name == "model":
                raise
            first_line = (str(e).strip().splitlines() or [""])[0][:300]
            error = f"{type(e).__name__}: {first_line}"
            failed.append((name, error))
            print(f"{name}: failed: {error}", flush=True)
            continue
        timed.append((name, fwd, grad_s, flops, times_in_model))
        print(f"{name}: fwd {fwd * 1e3:.3f} ms, grad {grad_s * 1e3:.3f} ms", flush=True)
    return timed, failed


def format_table(timed, failed=()):
    """Markdown table with TFLOP/s and each part's share of the model's time, then the rows
    that failed."""
    model = next(row for row in timed if row[0] == "model")

    def tflops(flops, seconds):
        return f"{flops / seconds / 1e12:.3g}" if flops else "-"

    lines = [
        "| part | fwd ms | fwd TFLOP/s | grad ms | grad TFLOP/s | share of model fwd / grad |",
        "|---|---|---|---|---|---|",
    ]
    parts_fwd = parts_grad = 0.0
    for name, fwd, grad, (fwd_flops, grad_flops), times_in_model in timed:
        share = "-"
        if times_in_model:
            parts_fwd += times_in_model * fwd
            parts_grad += times_in_model * grad
            share = (f"{times_in_model} x = {times_in_model * fwd / model[1]:.0%} / "
                     f"{times_in_model * grad / model[2]:.0%}")
        lines.append(f"| {name} | {fwd * 1e3:.3f} | {tflops(fwd_flops, fwd)} | {grad * 1e3:.3f} "
                     f"| {tflops(grad_flops, grad)} | {share} |")
    rest_fwd, rest_grad = model[1] - parts_fwd, model[2] - parts_grad
    lines.append(f"| model - parts | {rest_fwd * 1e3:.3f} | - | {rest_grad * 1e3:.3f} | - "
                 f"| {rest_fwd / model[1]:.0%} / {rest_grad / model[2]:.0%} |")
    if failed:
        lines.append("")
        lines += [f"- {name} failed: {error}" for name, error in failed]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="b16", choices=sorted(set(ARCH) - set(DINOV2)))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="mixed_bfloat16",
                   choices=["float32", "mixed_bfloat16", "mixed_float16"])
    p.add_argument("--attention", default="plain,fast,fast:1,fast:2,fast:8,head_major",
                   help="comma list of keras_vit.attention implementations to time; fast:N "
                   "pads the sequence to a multiple of N (fast alone: the layer's default, 64; "
                   "fast:1 does not pad)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", help="also write the Markdown table here")
    args = p.parse_args(argv)
    args.attention = attention_specs(p, args.attention)
    return args


def jax_device_text(script):
    """"<device> (jax X, keras Y)", or exit with a message if Keras does not run on JAX."""
    import keras

    if keras.backend.backend() != "jax":
        sys.exit(f"{script} measures JAX functions: run it with KERAS_BACKEND=jax.")
    import jax

    return f"{jax.devices()[0].device_kind} (jax {jax.__version__}, keras {keras.__version__})"


def main(argv=None):
    args = parse_args(argv)
    header = (f"Breakdown: {args.preset} at {args.image_size}, batch {args.batch_size}, "
              f"{args.precision}, on {jax_device_text('breakdown.py')}")
    print(header, flush=True)
    table = format_table(*measure(args))
    print("\n" + table, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(header + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
