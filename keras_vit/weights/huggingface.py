"""Hugging Face transformers `ViTModel` / `ViTForImageClassification` `.safetensors`, with
the `config.json` beside the file when there is one (exact GELU by default, LayerNorm
epsilon `layer_norm_eps`, 1e-12 by default)."""

import math
import re

from keras_vit.weights.checkpoint import (
    MAX_IMAGE_SIDE, architecture, count_blocks, position_embedding)
from keras_vit.weights.google import optional_dense
from keras_vit.weights.timm import conv_kernel, linear

_GELUS = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True}


def _positive_int(hf, name, limit=None):
    value = hf.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or (
            limit is not None and value > limit):
        raise ValueError(f"config.json: {name} must be a positive integer"
                         f"{f' up to {limit}' if limit else ''}, got {value!r}.")
    return value


def _config_values(hf):
    """The config.json entries the conversion uses, checked."""
    size = hf.get("image_size")
    if size is not None:
        pair = [size, size] if not isinstance(size, (list, tuple)) else list(size)
        if len(pair) != 2:
            raise ValueError(f"config.json: image_size must be an int or a pair, got {size!r}.")
        size = tuple(_positive_int({"image_size": s}, "image_size", MAX_IMAGE_SIDE) for s in pair)
    eps = hf.get("layer_norm_eps", 1e-12)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (
            math.isfinite(eps) and eps > 0):
        raise ValueError(f"config.json: layer_norm_eps must be a positive number, got {eps!r}.")
    act = hf.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in _GELUS:
        raise ValueError(f"Unsupported hidden_act {act!r} in the Hugging Face config.")
    return dict(image_size=size, num_heads=_positive_int(hf, "num_attention_heads"),
                mlp_dim=_positive_int(hf, "intermediate_size"), eps=float(eps),
                gelu_approximate=_GELUS[act])


def convert(r, hf_config):
    hf = _config_values(hf_config or {})
    keys = set(r.tensors)
    p = "vit." if "vit.embeddings.patch_embeddings.projection.weight" in keys else ""
    emb = f"{p}embeddings."
    r.ignorable = {f"{emb}mask_token"}
    kernel = r.take("patch/kernel", f"{emb}patch_embeddings.projection.weight", conv_kernel, ndim=4)
    r.take("patch/bias", f"{emb}patch_embeddings.projection.bias")
    r.take("cls", f"{emb}cls_token")
    grid = None
    if kernel is not None and hf["image_size"] is not None:
        size = hf["image_size"]
        grid = (size[0] // kernel.shape[0], size[1] // kernel.shape[1])
    grid = position_embedding(r, f"{emb}position_embeddings", True, grid=grid)
    num_layers = count_blocks(keys, rf"{re.escape(p)}encoder\.layer\.(\d+)\.")
    for i in range(num_layers):
        b = f"{p}encoder.layer.{i}."
        dense = {
            "query": "attention.attention.query", "key": "attention.attention.key",
            "value": "attention.attention.value", "out": "attention.output.dense",
            "mlp1": "intermediate.dense", "mlp2": "output.dense",
        }
        for part, name in dense.items():
            r.take(f"block{i}/{part}/kernel", f"{b}{name}.weight", linear, ndim=2)
            r.take(f"block{i}/{part}/bias", f"{b}{name}.bias")
        for part, name in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
            r.take(f"block{i}/{part}/scale", f"{b}{name}.weight")
            r.take(f"block{i}/{part}/bias", f"{b}{name}.bias")
    r.take("norm/scale", f"{p}layernorm.weight")
    r.take("norm/bias", f"{p}layernorm.bias")
    # ViTModel's pooler (Dense + tanh on the class token) is the original pre_logits layer.
    representation = optional_dense(r, "pre_logits", f"{p}pooler.dense.", "weight", linear)
    classes = optional_dense(r, "head", "classifier.", "weight", linear)
    return architecture(
        r, kernel, grid, num_layers, num_heads=hf["num_heads"], mlp_dim=hf["mlp_dim"],
        pooling="token", representation_size=representation, num_classes=classes,
        layer_norm_epsilon=hf["eps"], gelu_approximate=hf["gelu_approximate"],
    )
