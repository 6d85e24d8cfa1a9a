"""Google's `.npz` checkpoints: vit_jax (the original and AugReg) and big_vision.

vit_jax: Flax parameters joined with "/", e.g. `Transformer/encoderblock_0/...`.
big_vision: keys under `params/`; the position embedding `pos_embedding` covers the
patches only (the class token gets no position), and a scanned model stacks its blocks
under one `Transformer/encoderblock` with a leading layer axis. Both were trained with the
tanh-approximate GELU and LayerNorm epsilon 1e-6.
"""

import re

from keras_vit.weights.checkpoint import MAX_LAYERS, architecture, count_blocks, position_embedding

# A LayerNormalization's variables and their Flax names.
NORM_LEAVES = {"gamma": "scale", "beta": "bias"}


def google_prefix(keys):
    """The prefix ("", "params/", "opt/target/") in front of `embedding/kernel`, or None."""
    found = [k[: -len("embedding/kernel")] for k in keys if k.endswith("embedding/kernel")]
    found = [p for p in found if p == "" or p.endswith("/")]
    return min(found, key=len) if found else None


def is_big_vision(keys):
    prefix = google_prefix(keys)
    return (
        prefix.startswith("params/")
        or f"{prefix}pos_embedding" in keys
        or f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in keys
    )


def _scanned_layers(r, key):
    """The layer count of a scanned model: the leading axis of its stacked LayerNorm."""
    scale = r.tensors[key]
    if scale.ndim != 2 or not 0 < scale.shape[0] <= MAX_LAYERS:
        raise ValueError(f"{key!r} has shape {scale.shape}: expected (layers, width) with "
                         f"1 to {MAX_LAYERS} layers.")
    return scale.shape[0]


def convert(r, _):
    keys = set(r.tensors)
    prefix = google_prefix(keys)
    encoder = f"{prefix}Transformer/"
    scanned_key = f"{encoder}encoderblock/LayerNorm_0/scale"
    scanned = scanned_key in keys
    if scanned:
        num_layers = _scanned_layers(r, scanned_key)
    else:
        num_layers = count_blocks(keys, rf"{re.escape(encoder)}encoderblock_(\d+)/")
    block_keys = [k for k in keys if k.startswith(f"{encoder}encoderblock")]
    names = {n for k in block_keys for n in k.split("/") if re.fullmatch(r"[A-Za-z]+_\d+", n)}
    norms = sorted(n for n in names if n.startswith("LayerNorm_"))
    attention = min((n for n in names if n.startswith("MultiHeadDotProductAttention_")),
                    default="MultiHeadDotProductAttention_1")
    mlp = min((n for n in names if n.startswith("MlpBlock_")), default="MlpBlock_3")
    norm_1, norm_2 = (norms + ["LayerNorm_0", "LayerNorm_2"][len(norms):])[:2]

    kernel = r.take("patch_embedding/projection/kernel", f"{prefix}embedding/kernel", ndim=4)
    r.take("patch_embedding/projection/bias", f"{prefix}embedding/bias")
    has_cls = f"{prefix}cls" in keys
    if has_cls:
        r.take("class_token/token", f"{prefix}cls")
    pos_key = f"{prefix}pos_embedding"
    if pos_key not in keys:
        pos_key = f"{encoder}posembed_input/pos_embedding"
    grid = position_embedding(r, pos_key, has_cls)
    for i in range(num_layers):
        block = f"{encoder}encoderblock/" if scanned else f"{encoder}encoderblock_{i}/"
        index = i if scanned else None
        for part, name in (("attention_norm", norm_1), ("mlp_norm", norm_2)):
            for leaf, flax_leaf in NORM_LEAVES.items():
                r.take(f"encoder_block_{i}/{part}/{leaf}", f"{block}{name}/{flax_leaf}",
                       index=index)
        parts = {
            "attention/query": f"{attention}/query", "attention/key": f"{attention}/key",
            "attention/value": f"{attention}/value",
            "attention/attention_output": f"{attention}/out",
            "mlp_dense_1": f"{mlp}/Dense_0", "mlp_dense_2": f"{mlp}/Dense_1",
        }
        for part, name in parts.items():
            ndim = {"attention/query": 3, "mlp_dense_1": 2}.get(part)
            r.take(f"encoder_block_{i}/{part}/kernel", f"{block}{name}/kernel", index=index,
                   ndim=ndim)
            r.take(f"encoder_block_{i}/{part}/bias", f"{block}{name}/bias", index=index)
    for leaf, flax_leaf in NORM_LEAVES.items():
        r.take(f"encoder_norm/{leaf}", f"{encoder}encoder_norm/{flax_leaf}")
    representation = optional_dense(r, "pre_logits", f"{prefix}pre_logits/", "kernel")
    classes = optional_dense(r, "head", f"{prefix}head/", "kernel")
    return architecture(
        r, kernel, grid, num_layers, pooling="token" if has_cls else "gap",
        representation_size=representation, num_classes=classes, layer_norm_epsilon=1e-6,
        mlp_activation="gelu_tanh",
    )


def optional_dense(r, path, prefix, kernel_name, transform=None):
    """Reads an optional Dense (pre_logits, head); returns its width or None if absent."""
    if f"{prefix}{kernel_name}" not in r.tensors:
        return None
    kernel = r.take(f"{path}/kernel", f"{prefix}{kernel_name}", transform, ndim=2)
    r.take(f"{path}/bias", f"{prefix}bias")
    return int(kernel.shape[1])
