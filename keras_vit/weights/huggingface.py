"""Hugging Face transformers `.safetensors`, with the `config.json` (and
`preprocessor_config.json`) beside the file when there are:

- ViT (`ViTModel`, `ViTForImageClassification`) and MAE (`ViTMAEModel`, no masking at
  inference): the original architecture; exact GELU, `layer_norm_eps` 1e-12 by default;
- DINOv2 (`Dinov2Model`, `Dinov2WithRegistersModel`): layer scale, register tokens;
- CLIP's image tower (`CLIPVisionModel`, `CLIPVisionModelWithProjection`): a norm before
  the encoder, no patch bias, quick GELU (OpenAI); the projection becomes the head;
- DeiT (`DeiTForImageClassificationWithTeacher`, `DeiTForImageClassification`,
  `DeiTModel`): a distillation token; with the teacher's head too, the model averages the
  two heads' logits, as transformers does;
- SigLIP's image tower (`SiglipVisionModel`, SigLIP 2's fixed-resolution weights too): no
  class token, multi-head attention pooling (MAP) with a learned probe, the tanh GELU;
  without its head (`vision_use_head=False`) the average of the normed tokens;
- SigLIP 2's NaFlex tower (`Siglip2VisionModel`): SigLIP's, with the patch projection a
  linear layer on (ph, pw, C)-flattened patches and a square table (`num_patches`) that
  transformers resizes to each image's patch grid, antialiased bilinear: build the model
  at the image's size (`keras_vit.naflex.naflex_size`) and the table is resized the same;
- AIMv2's image tower (`Aimv2VisionModel`, not `is_native`): RMSNorm (`rms_norm_eps`),
  SwiGLU, biases as `qkv_bias` / `mlp_bias` say, an RMSNorm after the patch projection;
  with its attention-pooling head (`use_head=True`, transformers' default) the features
  are the head's output (pooling "probe"), without it the average of the normed tokens
  (timm's pooling).

A whole `CLIPModel`, `SiglipModel`, `Siglip2Model`, `Aimv2Model` or `ViTMAEForPreTraining`
loads its image tower (from `vision_config`; CLIP's and AIMv2's projection as the head); the
text tower and MAE's decoder are left out. What config.json and preprocessor_config.json
say (the family, from `model_type` or else the keys; the image mean and std, else the
family's known values) is read by `keras_vit.weights.hf_config`.
"""

import math
import re

import numpy as np

from keras_vit.weights.checkpoint import (
    architecture, count_blocks, position_embedding, positive_int)
from keras_vit.weights.google import optional_dense
from keras_vit.weights.hf_config import (
    FAMILIES, OTHER_PARTS, WHOLE_MODELS, config_values, model_type_of, normalization,
    tower_prefix)
from keras_vit.weights.timm import conv_kernel, linear, split_fused_qkv, take_linear, take_norm

# Per family: where the embeddings are, and each block part's name in the file.
_BLOCK_NAMES = {
    "vit": {"layers": "encoder.layer", "attention/query": "attention.attention.query",
            "attention/key": "attention.attention.key",
            "attention/value": "attention.attention.value",
            "attention/attention_output": "attention.output.dense",
            "mlp_dense_1": "intermediate.dense", "mlp_dense_2": "output.dense",
            "attention_norm": "layernorm_before", "mlp_norm": "layernorm_after"},
    "clip": {"layers": "encoder.layers", "attention/query": "self_attn.q_proj",
             "attention/key": "self_attn.k_proj", "attention/value": "self_attn.v_proj",
             "attention/attention_output": "self_attn.out_proj", "mlp_dense_1": "mlp.fc1",
             "mlp_dense_2": "mlp.fc2", "attention_norm": "layer_norm1",
             "mlp_norm": "layer_norm2"},
}
_BLOCK_NAMES["dinov2"] = {**_BLOCK_NAMES["vit"], "mlp_dense_1": "mlp.fc1", "mlp_dense_2": "mlp.fc2",
                          "attention_norm": "norm1", "mlp_norm": "norm2"}
_BLOCK_NAMES["siglip"] = _BLOCK_NAMES["clip"]


def convert(r, files):
    files = files or {}
    keys = set(r.tensors)
    config = files.get("config") or {}
    model_type = model_type_of(config, r.tensors)
    family = FAMILIES[model_type]
    if model_type in WHOLE_MODELS:  # the image tower's config
        config = config.get("vision_config") or {}
        if not isinstance(config, dict):
            raise ValueError("config.json: vision_config must be an object.")
    r.ignorable = {k for k in keys if k.startswith(OTHER_PARTS)}
    hf = config_values(config, model_type)
    if family == "aimv2":
        return _aimv2(r, files, config, hf)
    if family == "clip":
        p = tower_prefix(keys) or ""
        kernel, pos_key = _clip_embeddings(r, p)
    elif family == "siglip":
        p = tower_prefix(keys) or ""
        kernel, pos_key = _siglip_embeddings(r, p, config)
        if model_type.startswith("siglip2"):
            r.resample_method = "bilinear_antialias"
    else:
        p = next((prefix for prefix in ("vit.", "deit.")
                  if f"{prefix}embeddings.patch_embeddings.projection.weight" in keys), "")
        emb = f"{p}embeddings."
        r.ignorable |= {f"{emb}mask_token"}
        kernel = r.take("patch_embedding/projection/kernel",
                        f"{emb}patch_embeddings.projection.weight", conv_kernel, ndim=4)
        r.take("patch_embedding/projection/bias", f"{emb}patch_embeddings.projection.bias")
        r.take("class_token/token", f"{emb}cls_token")
        pos_key = f"{emb}position_embeddings"
    grid = None
    if kernel is not None and hf["image_size"] is not None:
        size = hf["image_size"]
        grid = (size[0] // kernel.shape[0], size[1] // kernel.shape[1])
    distilled = model_type == "deit"
    if distilled:
        r.take("distillation_token/tokens", f"{p}embeddings.distillation_token", ndim=3)
    grid = position_embedding(r, pos_key, family != "siglip", grid=grid, distilled=distilled)
    registers = 0
    if f"{p}embeddings.register_tokens" in keys:
        registers = r.take("register_tokens/tokens", f"{p}embeddings.register_tokens",
                           ndim=3).shape[1]
    names = _BLOCK_NAMES[family]
    num_layers = count_blocks(keys, rf"{re.escape(p)}{re.escape(names['layers'])}\.(\d+)\.")
    for i in range(num_layers):
        b = f"{p}{names['layers']}.{i}."
        block = f"encoder_block_{i}/"
        for part in ("attention/query", "attention/key", "attention/value",
                     "attention/attention_output", "mlp_dense_1", "mlp_dense_2"):
            take_linear(r, block + part, b + names[part])
        for part in ("attention_norm", "mlp_norm"):
            take_norm(r, block + part, b + names[part])
        if family == "dinov2":
            r.take(f"{block}attention_scale", f"{b}layer_scale1.lambda1")
            r.take(f"{block}mlp_scale", f"{b}layer_scale2.lambda1")
    final = "post_layernorm" if family in ("clip", "siglip") else "layernorm"
    take_norm(r, "encoder_norm", p + final)
    pooling = _pooling(family, keys, p)
    representation = classes = None
    if family == "clip":
        classes = _clip_projection(r)
    elif distilled:
        classes, distillation_head = _deit_heads(r)
        representation = optional_dense(r, "pre_logits", f"{p}pooler.dense.", "weight", linear)
    elif pooling == "map":
        _map_head(r, f"{p}head.")
    else:
        # ViTModel's pooler (Dense + tanh on the class token) is the original pre_logits.
        representation = optional_dense(r, "pre_logits", f"{p}pooler.dense.", "weight", linear)
        classes = optional_dense(r, "head", "classifier.", "weight", linear)
    mean, std = normalization(files.get("preprocessor"), model_type, files.get(
        "paths", {}).get("preprocessor", "preprocessor_config.json"))
    options = dict(image_mean=mean, image_std=std, mlp_activation=hf["activation"])
    if family == "dinov2":
        options.update(layer_scale_init=1.0, num_register_tokens=registers)
    if model_type == "dinov2_with_registers":
        r.resample_method = "bicubic_antialias"
    if family == "clip":
        options.update(pre_norm=True)
    if distilled:
        options.update(distillation_token=True, distillation_head=distillation_head)
    return architecture(
        r, kernel, grid, num_layers, num_heads=hf["num_heads"], mlp_dim=hf["mlp_dim"],
        pooling=pooling, representation_size=representation, num_classes=classes,
        layer_norm_epsilon=hf["eps"], **options,
    )


def _pooling(family, keys, p):
    """SigLIP's towers pool with their MAP head; one saved without it
    (`vision_use_head=False`) averages its normed tokens, as timm's SigLIP `gap` models."""
    if family != "siglip":
        return "token"
    return "map" if f"{p}head.probe" in keys else "gap"


def _clip_embeddings(r, p):
    """CLIP's embeddings: a (D,) class embedding, a bias-free patch conv, a 2-D position
    table, and the norm before the encoder. Returns (patch kernel, position key)."""
    emb = f"{p}embeddings."
    r.ignorable |= {f"{emb}position_ids"}
    kernel = r.take("patch_embedding/projection/kernel", f"{emb}patch_embedding.weight",
                    conv_kernel, ndim=4)
    if kernel is not None:
        r.put("patch_embedding/projection/bias", np.zeros(kernel.shape[-1], kernel.dtype),
              f"{emb}patch_embedding (no bias)")
    r.take("class_token/token", f"{emb}class_embedding", lambda a: a.reshape(1, 1, -1), ndim=1)
    pos_key = _position_table(r, emb)
    take_norm(r, "pre_norm", f"{p}pre_layrnorm")
    return kernel, pos_key


def _clip_projection(r):
    """`visual_projection` (no bias) as the head; returns its width, or None."""
    kernel = r.take("head/kernel", "visual_projection.weight", linear, ndim=2) \
        if "visual_projection.weight" in r.tensors else None
    if kernel is None:
        return None
    r.put("head/bias", np.zeros(kernel.shape[1], kernel.dtype), "visual_projection (no bias)")
    return int(kernel.shape[1])


def _deit_heads(r):
    """The heads of a DeiT: (classes, whether the distillation token has a head).
    `DeiTForImageClassificationWithTeacher` has both heads, `DeiTForImageClassification`
    a head on the class token only, `DeiTModel` none."""
    if "cls_classifier.weight" in r.tensors:
        classes = optional_dense(r, "head", "cls_classifier.", "weight", linear)
        optional_dense(r, "head_dist", "distillation_classifier.", "weight", linear)
        return classes, True
    return optional_dense(r, "head", "classifier.", "weight", linear), False


def _siglip_embeddings(r, p, config):
    """SigLIP's embeddings: a patch conv (SigLIP 2 NaFlex: a (D, ph * pw * C) linear layer,
    `patch_size` and `num_channels` from `config`) and a 2-D position table, no class
    token. Returns (patch kernel, position key)."""
    emb = f"{p}embeddings."
    r.ignorable |= {f"{emb}position_ids"}
    weight = r.tensors.get(f"{emb}patch_embedding.weight")
    kernel = r.take("patch_embedding/projection/kernel", f"{emb}patch_embedding.weight",
                    conv_kernel if getattr(weight, "ndim", 4) == 4 else _naflex_patch_kernel(
                        config))
    r.take("patch_embedding/projection/bias", f"{emb}patch_embedding.bias")
    return kernel, _position_table(r, emb)


def _naflex_patch_kernel(config):
    """The transform of NaFlex's (D, ph * pw * C) patch projection to a (p, p, C, D)
    kernel; the patch side from config.json, else from the width with 3 channels."""
    channels = positive_int(config.get("num_channels", 3), "num_channels")

    def transform(weight):
        if weight.ndim != 2:
            raise ValueError(f"The NaFlex patch projection has shape {weight.shape}, expected "
                             "(width, patch * patch * channels).")
        side = config.get("patch_size", math.isqrt(weight.shape[1] // channels))
        side = positive_int(side, "patch_size")
        if side * side * channels != weight.shape[1]:
            raise ValueError(f"The NaFlex patch projection has {weight.shape[1]} inputs, not "
                             f"{side}x{side} patches of {channels} channels.")
        return weight.T.reshape(side, side, channels, weight.shape[0])

    return transform


def _position_table(r, emb):
    """The key of CLIP's / SigLIP's (tokens, D) position table, seen as (1, tokens, D)."""
    pos_key = f"{emb}position_embedding.weight"
    if pos_key in r.tensors and r.tensors[pos_key].ndim == 2:
        r.tensors = {**r.tensors, pos_key: r.tensors[pos_key][None]}
    return pos_key


def _map_head(r, h):
    """SigLIP's attention-pooling head: probe, a fused in-projection, out-projection,
    LayerNorm and MLP."""
    r.take("pooling/probe", f"{h}probe", ndim=3)
    split_fused_qkv(r, "pooling/attention/", f"{h}attention.in_proj_weight",
                    f"{h}attention.in_proj_bias")
    for part, name in (("attention/attention_output", "attention.out_proj"),
                       ("mlp_dense_1", "mlp.fc1"), ("mlp_dense_2", "mlp.fc2")):
        take_linear(r, f"pooling/{part}", h + name)
    take_norm(r, "pooling/norm", f"{h}layernorm")


def _aimv2(r, files, config, hf):
    """`Aimv2VisionModel`: RMSNorm everywhere (one after the patch projection too),
    SwiGLU (`ffn.gate_proj`, `ffn.up_proj`, `ffn.down_proj`), attention projections with
    a bias where `qkv_bias` (the output projection too) and MLP biases where `mlp_bias`;
    no class token. The features are the output of the head (`head.cls_token` the query,
    `k_proj` / `v_proj` with biases where `qkv_bias`, `output_proj`), else the mean of the
    normed tokens. A whole `Aimv2Model` (keys under "vision_model.") adds
    `visual_projection` as the head, as CLIP's."""
    keys = set(r.tensors)
    p = "vision_model." if "vision_model.embeddings.patch_embed.weight" in keys else ""
    has_head = f"{p}head.cls_token" in keys
    for name in ("use_head", "is_native", "qkv_bias", "mlp_bias"):
        if not isinstance(config.get(name, has_head if name == "use_head" else False), bool):
            raise ValueError(f"config.json: {name} must be true or false.")
    if config.get("use_head", has_head) != has_head:
        raise ValueError(f"config.json: use_head={str(not has_head).lower()}, but the file "
                         f"{'has' if has_head else 'has no'} attention-pooling head "
                         f"(head.cls_token).")
    if config.get("is_native"):
        raise ValueError("config.json: is_native=true (AIMv2's sinusoidal positions for native "
                         "resolution) is not an architecture keras_vit builds.")
    qkv_bias = config.get("qkv_bias", f"{p}encoder.layers.0.attention.q_proj.bias" in keys)
    mlp_bias = config.get("mlp_bias", f"{p}encoder.layers.0.ffn.up_proj.bias" in keys)
    emb = f"{p}embeddings."
    r.ignorable |= {f"{emb}position_ids"}
    kernel = r.take("patch_embedding/projection/kernel", f"{emb}patch_embed.weight", conv_kernel,
                    ndim=4)
    r.take("patch_embedding/projection/bias", f"{emb}patch_embed.bias")
    take_norm(r, "patch_embedding/norm", f"{emb}rms_norm", "rms_norm")
    grid = None if kernel is None or hf["image_size"] is None else tuple(
        size // patch for size, patch in zip(hf["image_size"], kernel.shape[:2]))
    grid = position_embedding(r, _position_table(r, emb), False, grid=grid)
    num_layers = count_blocks(keys, rf"{re.escape(p)}encoder\.layers\.(\d+)\.")
    parts = {"attention/query": ("attention.q_proj", qkv_bias),
             "attention/key": ("attention.k_proj", qkv_bias),
             "attention/value": ("attention.v_proj", qkv_bias),
             "attention/attention_output": ("attention.out_proj", qkv_bias),
             "mlp_gate": ("ffn.gate_proj", mlp_bias), "mlp_dense_1": ("ffn.up_proj", mlp_bias),
             "mlp_dense_2": ("ffn.down_proj", mlp_bias)}
    for i in range(num_layers):
        b, block = f"{p}encoder.layers.{i}.", f"encoder_block_{i}/"
        for part, (name, bias) in parts.items():
            take_linear(r, block + part, b + name, bias)
        take_norm(r, block + "attention_norm", b + "rms_norm1", "rms_norm")
        take_norm(r, block + "mlp_norm", b + "rms_norm2", "rms_norm")
    take_norm(r, "encoder_norm", f"{p}rms_norm", "rms_norm")
    if has_head:
        r.take("pooling/probe", f"{p}head.cls_token", ndim=3)
        take_linear(r, "pooling/attention/key", f"{p}head.k_proj", qkv_bias)
        take_linear(r, "pooling/attention/value", f"{p}head.v_proj", qkv_bias)
        take_linear(r, "pooling/attention/attention_output", f"{p}head.output_proj")
    classes = _clip_projection(r)
    mean, std = normalization(files.get("preprocessor"), "aimv2_vision_model", files.get(
        "paths", {}).get("preprocessor", "preprocessor_config.json"))
    return architecture(
        r, kernel, grid, num_layers, num_heads=hf["num_heads"], mlp_dim=hf["mlp_dim"],
        num_classes=classes, pooling="probe" if has_head else "gap", layer_norm_epsilon=hf["eps"],
        image_mean=mean, image_std=std, mlp_activation="gelu", norm_type="rms_norm",
        mlp_type="swiglu", patch_norm=True, query_bias=qkv_bias, key_bias=qkv_bias,
        value_bias=qkv_bias, output_bias=qkv_bias, mlp_bias=mlp_bias)
