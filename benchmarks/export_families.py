"""TFLite float32 and full int8 export of DINOv2-S/14, SigLIP-B/16 and DINOv3-S/16, with parity.

Builds the features models (no head) at 224 with random weights (no checkpoint is
downloaded), writes a float32 and a full-integer int8 TFLite file of each with
`keras_vit.export.export_tflite`, compares each file's features with Keras
(`keras_vit.export.parity_report`) and prints one Markdown table: model, params, variant,
file size, conversion time, builtin ops only, parity, LiteRT latency per image.

    KERAS_BACKEND=tensorflow python benchmarks/export_families.py --out table.md

Under TensorFlow the conversions run in this process, so the conversion time is the
converter's; under JAX or PyTorch it includes a TensorFlow subprocess's start.

Random weights (`randomised`): the kernels keep their initialisers, every other variable
(biases, norms, layer scales, learned tokens, position embedding) is drawn at random, so
the features differ from image to image as a trained model's do. (At DINOv2's initial
layer scale of 1e-5 every block would be a no-op and every image would get the same
features, which no parity number could tell apart.)
"""

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from keras_vit import ViT, export  # noqa: E402
from keras_vit.export.parity import ReferenceLogits  # noqa: E402

IMAGENET = dict(image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225))
FAMILIES = {
    # DINOv2 ViT-S/14 features, as the checkpoint: exact GELU, layer scale, ImageNet mean/std.
    "DINOv2-S/14": dict(image_size=224, patch_size=14, hidden_dim=384, num_layers=12,
                        num_heads=6, mlp_dim=1536, layer_scale_init=1e-5,
                        gelu_approximate=False, include_top=False, **IMAGENET),
    # SigLIP ViT-B/16 image tower: no class token, MAP pooling, tanh GELU, 0.5 / 0.5.
    "SigLIP-B/16": dict(image_size=224, patch_size=16, hidden_dim=768, num_layers=12,
                        num_heads=12, mlp_dim=3072, pooling="map", mlp_activation="gelu_tanh",
                        include_top=False),
    # DINOv3 ViT-S/16 features (timm's vit_small_patch16_dinov3): 2-D RoPE and no position
    # table (exported as precomputed tables at 224), 4 registers, layer scale, no q/k/v biases.
    "DINOv3-S/16": dict(image_size=224, patch_size=16, hidden_dim=384, num_layers=12,
                        num_heads=6, mlp_dim=1536, layer_scale_init=1e-5, rope="dinov3",
                        rope_theta=100.0, position_embedding="none", num_register_tokens=4,
                        query_bias=False, key_bias=False, value_bias=False, pooling="token",
                        layer_norm_epsilon=1e-5, gelu_approximate=False, include_top=False,
                        **IMAGENET),
}
# timm's counts (vit_small_patch14_dinov2 less its 518-pixel position embedding's extra
# 1113 positions; vit_base_patch16_siglip_224; vit_small_patch16_dinov3), the check that
# the architecture is theirs.
EXPECTED_PARAMS = {"DINOv2-S/14": 21_628_800, "SigLIP-B/16": 92_884_224, "DINOv3-S/16": 21_586_944}
VARIANTS = ("float32", "int8")


def randomised(model, seed=0, spread=0.2):
    """`model` with every variable except the kernels drawn at random (seeded): scales
    (norm gammas, layer scales) 1 + N(0, spread), learned tokens (class, registers, the MAP
    probe) N(0, 1), the rest (biases, betas, position embedding) N(0, spread)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name, shape = variable.path.rsplit("/", 1)[-1], variable.shape
        if name == "kernel":
            continue
        if name == "gamma" or name.endswith("_scale"):
            value = 1.0 + rng.normal(0, spread, shape)
        elif name in ("token", "tokens", "probe"):
            value = rng.normal(0, 1.0, shape)
        else:
            value = rng.normal(0, spread, shape)
        variable.assign(value.astype("float32"))
    return model


def random_images(count, size, seed, block=16):
    """`count` random size x size RGB images with some structure (block x block squares and
    noise), float32 pixels 0..255."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, size // block, size // block, 3))
    images = np.repeat(np.repeat(coarse, block, axis=1), block, axis=2)
    return np.clip(images + rng.integers(-20, 21, images.shape), 0, 255).astype("float32")


def measure(name, config, folder, args):
    """One table row per variant of the family `name`: export, builtin-op check, parity."""
    model = randomised(ViT(**config))
    params = model.count_params()
    if params != EXPECTED_PARAMS[name]:
        print(f"warning: {name} has {params:,} parameters, timm's has {EXPECTED_PARAMS[name]:,}",
              file=sys.stderr)
    size = config["image_size"]
    representative = random_images(args.calibration_samples, size, seed=1)
    reference = ReferenceLogits(model, random_images(args.eval_images, size, seed=2))
    rows = []
    for variant in VARIANTS:
        path = os.path.join(folder, f"{name.replace('/', '_')}_{variant}.tflite")
        start = time.perf_counter()
        try:
            export.export_tflite(model, path, quantize=variant, representative_data=representative,
                                 num_calibration_samples=args.calibration_samples)
            builtin = "yes"
        except RuntimeError as error:  # written, but holds ops outside the builtins
            if not os.path.exists(path):
                raise
            builtin = f"no: {error}"
        seconds = time.perf_counter() - start
        row = {"model": name, "params": params, "variant": variant, "seconds": seconds,
               "builtin": builtin, "size_mb": os.path.getsize(path) / 1e6}
        if builtin == "yes":
            row.update(export.parity_report(model, path, reference.images, reference=reference,
                                            num_threads=args.threads, variant=variant))
        rows.append(row)
        print(f"{name} {variant}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return rows


def cpu_name():
    """The CPU's model name (Linux), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def table(rows, args):
    """The Markdown table of the rows, with a line on how they were measured."""
    header = ["model", "params", "variant", "file size", "conversion", "builtin ops only",
              "max abs diff", "min cosine", "max relative error", "retrieval agreement",
              "latency / image"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        parity = ["—"] * 5
        if "min_cosine" in r:
            parity = [f"{r['max_abs_diff']:.2e}", f"{r['min_cosine']:.5f}",
                      f"{r['max_relative_error']:.2e}", f"{100 * r['retrieval_agreement']:.1f} %",
                      f"{r['latency_ms']:.1f} ms"]
        lines.append("| " + " | ".join([
            r["model"], f"{r['params'] / 1e6:.2f} M", r["variant"], f"{r['size_mb']:.1f} MB",
            f"{r['seconds']:.1f} s", r["builtin"], *parity]) + " |")
    lines.append(
        f"\nRandom weights (`randomised`); int8 calibrated on {args.calibration_samples} random "
        f"images, parity on {args.eval_images} others (features: cosine and L2 relative error "
        "per image, retrieval agreement = share of images whose TFLite features are nearest "
        f"their own Keras features); latency: median per image, batch 1, LiteRT with "
        f"{args.threads} thread(s) on {cpu_name()} "
        f"({os.cpu_count()} cores)."
    )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--calibration-samples", type=int, default=32,
                        help="random images that calibrate int8 (default: 32)")
    parser.add_argument("--eval-images", type=int, default=16,
                        help="random images for parity and latency (default: 16)")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT threads (default: 1)")
    parser.add_argument("--out", help="also write the table here")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.families:
            rows += measure(name, FAMILIES[name], folder, args)
    text = table(rows, args)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
