"""timm state dicts in `.safetensors`, with timm's `config.json` beside the file when
there is one (as timm's hub repos hold it).

PyTorch layouts (Linear weights (out, in), conv weights (D, C, p, p)), a fused qkv
projection, exact GELU, LayerNorm epsilon 1e-6 (1e-5 for CLIP). The keys say the
family's parts:

- `vit_*`, `deit_*`, MAE (`vit_*.mae`): the original ViT; `*_gap_*`: no class token,
  average pooling, `fc_norm` after pooling, qkv without bias;
- DeiT distilled: `dist_token` and `head_dist` (the model averages both heads);
- DeiT III, DINOv2: layer scale (`ls1/ls2.gamma`), a position embedding without the
  class-token slot (DeiT III, DINOv2 with registers), register tokens (`reg_token`);
- CLIP (`vit_*_clip_*`): a norm before the encoder (`norm_pre`), no patch bias, the
  projection as the head; quick GELU where the architecture name says `quickgelu`;
- SigLIP (`vit_*_siglip_*`): no class token, attention pooling (`attn_pool`);
- AIMv2 (`aimv2_*`): RMSNorm (norms without bias), SwiGLU (`mlp.fc1_g`, `mlp.fc1_x`),
  no attention or MLP biases, an RMSNorm in the patch embedding (`patch_embed.norm`),
  average pooling; epsilon 1e-5.

config.json gives what the keys cannot: the heads (`model_args.num_heads`, else the
architecture's size name), the image size, the activation, the pooling and the mean/std
(`pretrained_cfg`, else the family's known values).
"""

import re

import numpy as np

from keras_vit.weights.checkpoint import (
    CLIP, IMAGENET, SIZES, architecture, count_blocks, image_size_pair,
    position_embedding, positive_int, read_normalization, square_grid)
from keras_vit.weights.google import optional_dense

# "silu" is SwiGLU's gate (AIMv2), whose models have no plain MLP.
_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu",
                "silu": "silu"}
# AIMv2's heads by timm's size name (its widths are not the standard sizes').
_AIMV2_HEADS = {"large": 8, "huge": 12, "1b": 16, "3b": 24}
_POOLING = {"token": "token", "avg": "gap", "map": "map"}
# model_args entries: read here, seen in the keys, or without effect at inference; a
# value in _REQUIRED must be as given (another one is an architecture not built here).
_MODEL_ARGS = {"img_size", "num_heads", "act_layer", "global_pool", "num_classes",
               "patch_size", "embed_dim", "depth", "mlp_ratio", "in_chans", "class_token",
               "no_embed_class", "reg_tokens", "init_values", "pre_norm", "fc_norm",
               "qkv_bias", "proj_bias", "dynamic_img_size", "dynamic_img_pad", "drop_rate",
               "pos_drop_rate",
               "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
               "weight_init"}
_REQUIRED = {"qk_norm": False, "pos_embed": "learn", "final_norm": True}


def conv_kernel(weight):
    """PyTorch conv weight (D, C, ph, pw) -> Keras kernel (ph, pw, C, D)."""
    return weight.transpose(2, 3, 1, 0)


def linear(weight):
    """PyTorch Linear weight (out, in) -> Keras kernel (in, out)."""
    return weight.T


def take_linear(r, path, name, bias=True):
    """A PyTorch Linear `name` (`.weight`, `.bias` unless `bias=False`) into the Dense at
    variable `path`."""
    r.take(f"{path}/kernel", f"{name}.weight", linear, ndim=2)
    if bias:
        r.take(f"{path}/bias", f"{name}.bias")


def take_norm(r, path, name, norm_type="layer_norm"):
    """A PyTorch LayerNorm `name` (`.weight`, `.bias`) into the LayerNormalization at
    variable `path`; an RMSNorm (`.weight`) into the RMSNormalization's scale."""
    if norm_type == "rms_norm":
        r.take(f"{path}/scale", f"{name}.weight")
        return
    r.take(f"{path}/gamma", f"{name}.weight")
    r.take(f"{path}/beta", f"{name}.bias")


def bias_flags(keys, biases):
    """{ViTConfig bias field: True where `keys` holds every key of `biases[field]` (a list
    of keys, e.g. one per block), False where it holds none}; some but not all is a
    ValueError naming the first missing key."""
    flags = {}
    for field, names in biases.items():
        present = [name in keys for name in names]
        if any(present) and not all(present):
            missing = next(name for name, here in zip(names, present) if not here)
            raise ValueError(f"The file has some of its {field} biases but not {missing}.")
        flags[field] = all(present)
    return flags


def take_biases(r, biases):
    """`bias_flags` of {field: [(variable path, key in the file)]}, taking each bias of a
    field the file has."""
    flags = bias_flags(r.tensors, {field: [key for _, key in pairs]
                                   for field, pairs in biases.items()})
    for field, pairs in biases.items():
        for path, key in pairs if flags[field] else ():
            r.take(path, key)
    return flags


def take_mlp(r, block, prefix, bias=True, norm_type="layer_norm"):
    """timm's MLP at `prefix` (e.g. "blocks.0.mlp.") into the MLP variables of the block
    at `block` (e.g. "encoder_block_0/"), in each of timm's forms: `Mlp` (fc1, fc2),
    `SwiGLU` (fc1_g the gate, fc1_x the up; AIMv2, EVA-02 with an inner norm) and the packed
    SwiGLU (`GluMlp` with gate_last=False, EVA's: fc1's first half the gate, its second the
    up), each with its inner norm (`norm`) where the file has one. `bias`: whether its
    Linear layers have biases. Returns (mlp_type, mlp_inner_norm) for `ViTConfig`."""
    keys = r.tensors
    fc1, fc2 = keys.get(f"{prefix}fc1.weight"), keys.get(f"{prefix}fc2.weight")
    if f"{prefix}fc1_g.weight" in keys:
        mlp_type = "swiglu"
        take_linear(r, block + "mlp_gate", f"{prefix}fc1_g", bias)
        take_linear(r, block + "mlp_dense_1", f"{prefix}fc1_x", bias)
    elif fc1 is not None and fc2 is not None and fc1.ndim == fc2.ndim == 2 and (
            fc1.shape[0] == 2 * fc2.shape[1]):
        mlp_type = "swiglu"
        split_fused_qkv(r, block, f"{prefix}fc1.weight", f"{prefix}fc1.bias" if bias else None,
                        parts=("mlp_gate", "mlp_dense_1"))
    else:
        mlp_type = "mlp"
        take_linear(r, block + "mlp_dense_1", f"{prefix}fc1", bias)
    take_linear(r, block + "mlp_dense_2", f"{prefix}fc2", bias)
    inner_norm = f"{prefix}norm.weight" in keys
    if inner_norm:
        take_norm(r, block + "mlp_inner_norm", f"{prefix}norm", norm_type)
    return mlp_type, inner_norm


def split_fused_qkv(r, prefix, weight_key, bias_key, parts=("query", "key", "value")):
    """Reads a fused (len(parts) * width, D) projection (PyTorch layout) and its bias into
    the variables `{prefix}{part}/kernel` and `.../bias` for each part; `bias_key=None`: no bias in
    the file (no bias variables)."""
    weight = r.get(weight_key, ndim=2)
    bias = None if bias_key is None else r.get(bias_key, ndim=1)
    if weight is None or (bias is None and bias_key is not None):
        return
    if weight.shape[0] % len(parts) or (bias is not None and bias.shape[0] != weight.shape[0]):
        raise ValueError(f"{weight_key} has shape {weight.shape} and {bias_key} "
                         f"{getattr(bias, 'shape', None)}: "
                         f"not a fused ({len(parts)} x width) projection.")
    for part, rows in zip(parts, np.split(weight, len(parts))):
        r.put(f"{prefix}{part}/kernel", rows.T, f"{weight_key} ({part} rows)")
    if bias is not None:
        for part, values in zip(parts, np.split(bias, len(parts))):
            r.put(f"{prefix}{part}/bias", values, f"{bias_key} ({part})")


def convert(r, files):
    keys = set(r.tensors)
    files = files or {}
    cfg = _config_values(files.get("config") or {},
                         files.get("paths", {}).get("config", "config.json"))
    kernel = r.take("patch_embedding/projection/kernel", "patch_embed.proj.weight", conv_kernel,
                    ndim=4)
    if "patch_embed.proj.bias" in keys or kernel is None:
        r.take("patch_embedding/projection/bias", "patch_embed.proj.bias")
    else:  # CLIP's patch conv has no bias
        r.put("patch_embedding/projection/bias", np.zeros(kernel.shape[-1], kernel.dtype),
              "patch_embed.proj (no bias)")
    has_cls, distilled = "cls_token" in keys, "dist_token" in keys
    if has_cls:
        r.take("class_token/token", "cls_token")
    if distilled:
        r.take("distillation_token/tokens", "dist_token", ndim=3)
    grid, class_position = _grid(r, kernel, cfg["image_size"], has_cls, distilled)
    grid = position_embedding(r, "pos_embed", class_position, grid=grid, distilled=distilled)
    registers = 0
    if "reg_token" in keys:
        registers = r.take("register_tokens/tokens", "reg_token", ndim=3).shape[1]
    pre_norm = "norm_pre.weight" in keys
    if pre_norm:
        take_norm(r, "pre_norm", "norm_pre")
    num_layers = count_blocks(keys, r"blocks\.(\d+)\.")
    layer_scale = "blocks.0.ls1.gamma" in keys
    blocks = _block_options(keys)
    norm_type = blocks["norm_type"]
    if blocks["patch_norm"]:
        take_norm(r, "patch_embedding/norm", "patch_embed.norm", norm_type)
    for i in range(num_layers):
        b = f"blocks.{i}."
        block = f"encoder_block_{i}/"
        split_fused_qkv(r, f"{block}attention/", f"{b}attn.qkv.weight",
                        f"{b}attn.qkv.bias" if blocks["query_bias"] else None)
        take_linear(r, block + "attention/attention_output", b + "attn.proj",
                    blocks["output_bias"])
        blocks["mlp_type"], blocks["mlp_inner_norm"] = take_mlp(
            r, block, f"{b}mlp.", blocks["mlp_bias"], norm_type)
        take_norm(r, f"{block}attention_norm", f"{b}norm1", norm_type)
        take_norm(r, f"{block}mlp_norm", f"{b}norm2", norm_type)
        if layer_scale:
            r.take(f"{block}attention_scale", f"{b}ls1.gamma")
            r.take(f"{block}mlp_scale", f"{b}ls2.gamma")
    pooling = _pooling(keys, cfg["pooling"])
    pooled_norm = "fc_norm.weight" in keys
    if pooled_norm and (pooling != "gap" or "norm.weight" in keys):
        raise ValueError("This timm checkpoint has a norm after pooling (fc_norm) with "
                         f"pooling {pooling!r}{' and a final norm' if 'norm.weight' in keys else ''}"
                         ": keras_vit has it for average pooling without a final norm only.")
    if pooled_norm:
        take_norm(r, "pooled_norm", "fc_norm", norm_type)
    else:
        take_norm(r, "encoder_norm", "norm", norm_type)
    if pooling == "map":
        attention_pool(r)
    representation = optional_dense(r, "pre_logits", "pre_logits.fc.", "weight", linear)
    classes = optional_dense(r, "head", "head.", "weight", linear)
    if distilled:
        optional_dense(r, "head_dist", "head_dist.", "weight", linear)
    if cfg["num_classes"] is not None and cfg["num_classes"] != (classes or 0):
        raise ValueError(f"config.json says num_classes={cfg['num_classes']} but the file's "
                         f"head has {classes or 0} classes.")
    mean, std = cfg["normalization"] or _family_normalization(cfg["architecture"], cfg["tag"], keys)
    width = None if kernel is None else int(kernel.shape[-1])
    activation = cfg["activation"] or ("silu" if blocks["mlp_type"] == "swiglu" else "gelu")
    if (activation == "silu") != (blocks["mlp_type"] == "swiglu"):
        raise ValueError(f"config.json: act_layer {activation!r} with "
                         f"{'a SwiGLU' if blocks['mlp_type'] == 'swiglu' else 'a plain'} MLP "
                         "is not an architecture keras_vit builds (SwiGLU's gate is SiLU).")
    activation = "gelu" if activation == "silu" else activation  # (SwiGLU: unused)
    options = dict(image_mean=mean, image_std=std, mlp_activation=activation, pre_norm=pre_norm,
                   pooled_norm=pooled_norm, num_register_tokens=registers,
                   distillation_token=distilled, class_token_position=class_position or not has_cls)
    if layer_scale:
        options["layer_scale_init"] = 1.0
    return architecture(
        r, kernel, grid, num_layers, num_heads=cfg["num_heads"] or heads_by_name(cfg["architecture"], width),
        pooling=pooling, representation_size=representation, num_classes=classes,
        layer_norm_epsilon=1e-5 if pre_norm or norm_type == "rms_norm" else 1e-6, **blocks,
        **options,
    )


def _block_options(keys):
    """The `ViTConfig` block options the keys say: RMSNorm (norms without a bias, AIMv2),
    a norm in the patch embedding (`patch_embed.norm`), which projections have biases
    (`take_mlp` says the MLP's form)."""
    rms = "blocks.0.norm1.weight" in keys and "blocks.0.norm1.bias" not in keys
    qkv_bias = "blocks.0.attn.qkv.bias" in keys
    return dict(
        norm_type="rms_norm" if rms else "layer_norm",
        mlp_type="mlp", mlp_inner_norm=False,
        patch_norm="patch_embed.norm.weight" in keys,
        query_bias=qkv_bias, key_bias=qkv_bias, value_bias=qkv_bias,
        output_bias="blocks.0.attn.proj.bias" in keys, mlp_bias="blocks.0.mlp.fc2.bias" in keys)


def _grid(r, kernel, image_size, has_cls, distilled):
    """(patch grid or None, whether the class token has a position): config.json's image
    size where it fits the position table, else the table's square grid; DeiT III's and
    the register models' tables have no class-token slot (timm's `no_embed_class`)."""
    pos = r.tensors.get("pos_embed")
    configured = None if kernel is None or image_size is None else tuple(
        s // p for s, p in zip(image_size, kernel.shape[:2]))
    if kernel is None or pos is None or pos.ndim != 3 or distilled or not has_cls:
        return configured, has_cls
    tokens = pos.shape[1]
    if configured is not None and tokens - configured[0] * configured[1] in (0, 1):
        return configured, tokens - configured[0] * configured[1] == 1
    prefix, grid = square_grid(tokens, True)
    return grid, prefix == 1


def _pooling(keys, configured):
    """"token", "gap" or "map": config.json's `global_pool` checked against the keys."""
    from_keys = "map" if "attn_pool.latent" in keys else "token" if "cls_token" in keys else "gap"
    if configured is not None and configured != from_keys:
        raise ValueError(
            f"config.json says global_pool={'avg' if configured == 'gap' else configured!r}, but the "
            f"file's keys are those of a model with {from_keys!r} pooling"
            + (" (keras_vit averages only models without a class token)." if configured == "gap" else "."))
    return from_keys


def attention_pool(r):
    """timm's AttentionPoolLatent: one latent query, q and fused kv projections, out
    projection, then a LayerNorm'd MLP on a residual."""
    r.take("pooling/probe", "attn_pool.latent", ndim=3)
    take_linear(r, "pooling/attention/query", "attn_pool.q")
    split_fused_qkv(r, "pooling/attention/", "attn_pool.kv.weight", "attn_pool.kv.bias",
                    parts=("key", "value"))
    for part, name in (("attention/attention_output", "proj"), ("mlp_dense_1", "mlp.fc1"),
                       ("mlp_dense_2", "mlp.fc2")):
        take_linear(r, f"pooling/{part}", f"attn_pool.{name}")
    take_norm(r, "pooling/norm", "attn_pool.norm")


def heads_by_name(name, width):
    """The heads of timm's size name in `name` (e.g. "vit_small_patch14_dinov2"), when
    the file's width is that size's; else None."""
    aimv2 = re.match(r"aimv2_([a-z0-9]+)_", name or "")
    if aimv2:
        return _AIMV2_HEADS.get(aimv2.group(1))
    match = re.match(r"(?:vit|deit3?)_([a-z0-9]+)_", name or "")
    size = SIZES.get(match.group(1)) if match else None
    return size[1] if size and size[0] == width else None


def _family_normalization(name, tag, keys):
    """The family's (mean, std): from the architecture name and tag in config.json, else
    from the keys where they tell the family; (None, None) is 0.5 / 0.5."""
    if name is not None:
        if name.startswith("aimv2"):
            return CLIP
        if name.startswith("deit") or "dinov2" in name or (tag or "").startswith("mae"):
            return IMAGENET
        return CLIP if "_clip_" in name else (None, None)
    if "norm_pre.weight" in keys:
        return CLIP
    if "dist_token" in keys or ("blocks.0.ls1.gamma" in keys and "cls_token" in keys):
        return IMAGENET  # DeiT distilled, DeiT III, DINOv2
    return None, None


def read_config(config, known=_MODEL_ARGS, required=_REQUIRED):
    """(model_args, pretrained_cfg) of timm's config.json, checked: a model_args entry in
    `required` must have that value, and any other must be `known` (read by the caller,
    or without effect at inference)."""
    if not isinstance(config, dict):
        raise ValueError("timm config.json must be an object.")
    args = config.get("model_args") or {}
    pretrained = config.get("pretrained_cfg") or {}
    if not isinstance(args, dict) or not isinstance(pretrained, dict):
        raise ValueError("timm config.json: model_args and pretrained_cfg must be objects.")
    for name, value in args.items():
        if name in required and value != required[name]:
            raise ValueError(f"config.json: model_args {name}={value!r} is an architecture "
                             "keras_vit does not build.")
        if name not in known and name not in required:
            raise ValueError(f"config.json: model_args has {name!r}, which keras_vit does not "
                             "read: it may change the architecture.")
    return args, pretrained


def configured_image_size(args, pretrained):
    """The image size config.json gives (model_args img_size, else pretrained_cfg
    input_size), as (height, width); None where it gives none."""
    size = args.get("img_size")
    if size is None and isinstance(pretrained.get("input_size"), list) and len(pretrained["input_size"]) == 3:
        size = pretrained["input_size"][1:]
    return None if size is None else image_size_pair(size, "img_size")


def _config_values(config, path):
    """What the conversion uses from timm's config.json (at `path`), checked."""
    args, pretrained = read_config(config)
    name = config.get("architecture")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"config.json: architecture must be a string, got {name!r}.")
    act = args.get("act_layer", "quick_gelu" if "quickgelu" in (name or "") else None)
    if act is not None and (not isinstance(act, str) or act not in _ACTIVATIONS):
        raise ValueError(f"config.json: act_layer {act!r} is not one of {', '.join(_ACTIVATIONS)}.")
    pool = args.get("global_pool", config.get("global_pool"))
    if pool is not None and (not isinstance(pool, str) or pool not in _POOLING):
        raise ValueError(f"config.json: global_pool {pool!r} is not one keras_vit builds "
                         f"(it builds {', '.join(_POOLING)}).")
    classes = args.get("num_classes", config.get("num_classes"))
    return dict(
        architecture=name, tag=pretrained.get("tag") if isinstance(pretrained.get("tag"), str) else None,
        num_heads=positive_int(args.get("num_heads"), "model_args num_heads"),
        activation=act and _ACTIVATIONS[act], pooling=None if pool is None else _POOLING[pool],
        image_size=configured_image_size(args, pretrained),
        num_classes=positive_int(classes, "num_classes", zero=True),
        normalization=pretrained_normalization(pretrained, path),
    )


def pretrained_normalization(pretrained, path):
    """(mean, std) from pretrained_cfg, or None where it does not say them; a ValueError
    naming the file and the field where they are not plausible."""
    return read_normalization(pretrained.get("mean"), pretrained.get("std"),
                              (f"{path}: pretrained_cfg mean", f"{path}: pretrained_cfg std"))
