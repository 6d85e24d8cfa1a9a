"""timm state dicts in `.safetensors`: PyTorch layouts (Linear weights (out, in), conv
weights (D, C, p, p)) and a fused qkv projection; exact GELU, LayerNorm epsilon 1e-6."""

import numpy as np

from keras_vit.weights.checkpoint import architecture, count_blocks, position_embedding
from keras_vit.weights.google import optional_dense


def conv_kernel(weight):
    """PyTorch conv weight (D, C, ph, pw) -> Keras kernel (ph, pw, C, D)."""
    return weight.transpose(2, 3, 1, 0)


def linear(weight):
    """PyTorch Linear weight (out, in) -> Keras kernel (in, out)."""
    return weight.T


def split_fused_qkv(r, canonical, weight_key, bias_key):
    """Reads a fused (3 * D, D) query/key/value projection (PyTorch layout) and its bias
    into `{canonical}query/kernel`, `.../bias`, and the same for key and value."""
    weight, bias = r.get(weight_key, ndim=2), r.get(bias_key, ndim=1)
    if weight is None or bias is None:
        return
    if weight.shape[0] % 3 or bias.shape[0] != weight.shape[0]:
        raise ValueError(f"{weight_key} has shape {weight.shape} and {bias_key} {bias.shape}: "
                         "not a fused (3 x width) projection.")
    for part, rows, values in zip(("query", "key", "value"), np.split(weight, 3), np.split(bias, 3)):
        r.put(f"{canonical}{part}/kernel", rows.T, f"{weight_key} ({part} rows)")
        r.put(f"{canonical}{part}/bias", values, f"{bias_key} ({part})")


def convert(r, _):
    keys = set(r.tensors)
    kernel = r.take("patch/kernel", "patch_embed.proj.weight", conv_kernel, ndim=4)
    r.take("patch/bias", "patch_embed.proj.bias")
    has_cls = "cls_token" in keys
    if has_cls:
        r.take("cls", "cls_token")
    grid = position_embedding(r, "pos_embed", has_cls)
    num_layers = count_blocks(keys, r"blocks\.(\d+)\.")
    for i in range(num_layers):
        b = f"blocks.{i}."
        split_fused_qkv(r, f"block{i}/", f"{b}attn.qkv.weight", f"{b}attn.qkv.bias")
        for part, name in (("out", "attn.proj"), ("mlp1", "mlp.fc1"), ("mlp2", "mlp.fc2")):
            r.take(f"block{i}/{part}/kernel", f"{b}{name}.weight", linear, ndim=2)
            r.take(f"block{i}/{part}/bias", f"{b}{name}.bias")
        for part, name in (("norm1", "norm1"), ("norm2", "norm2")):
            r.take(f"block{i}/{part}/scale", f"{b}{name}.weight")
            r.take(f"block{i}/{part}/bias", f"{b}{name}.bias")
    r.take("norm/scale", "norm.weight")
    r.take("norm/bias", "norm.bias")
    representation = optional_dense(r, "pre_logits", "pre_logits.fc.", "weight", linear)
    classes = optional_dense(r, "head", "head.", "weight", linear)
    return architecture(
        r, kernel, grid, num_layers, pooling="token" if has_cls else "gap",
        representation_size=representation, num_classes=classes, layer_norm_epsilon=1e-6,
        gelu_approximate=False,
    )
