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
        qkv_weight = r.get(f"{b}attn.qkv.weight", ndim=2)
        qkv_bias = r.get(f"{b}attn.qkv.bias", ndim=1)
        if qkv_weight is not None and qkv_bias is not None:
            if qkv_weight.shape[0] % 3 or qkv_bias.shape[0] != qkv_weight.shape[0]:
                raise ValueError(f"{b}attn.qkv has weight {qkv_weight.shape} and bias "
                                 f"{qkv_bias.shape}: not a fused (3 x width) projection.")
            for j, part in enumerate(("query", "key", "value")):
                rows = np.split(qkv_weight, 3)[j]
                r.put(f"block{i}/{part}/kernel", rows.T, f"{b}attn.qkv.weight ({part} rows)")
                r.put(f"block{i}/{part}/bias", np.split(qkv_bias, 3)[j], f"{b}attn.qkv.bias ({part})")
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
