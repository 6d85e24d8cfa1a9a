"""EVA-02 (`eva02_*`) and Perception Encoder core (`vit_pe_core_*`) ViTs in timm's format
(timm's `Eva` model), with timm's `config.json` beside the file.

Both have a class token with a learned position, a learned absolute position table and
2-D axial RoPE of the patch tokens (`rope="axial"`: timm's "cat" form, interleaved pairs,
coordinates scaled to the pre-training grid `ref_feat_shape`):

- EVA-02 (the ImageNet `mim_in22k` and fine-tuned models): SwiGLU MLPs (packed `fc1` in
  the tiny and small sizes; `fc1_g` / `fc1_x` with a LayerNorm inside from the base size,
  timm's `scale_mlp`), q and v biases but none on k, average pooling of the patch tokens
  (the class token is kept but not pooled) then `fc_norm`, LayerNorm epsilon 1e-6;
- PE core: a norm before the blocks (`norm_pre`) and no patch bias, a plain GELU MLP,
  RoPE in "xy" order offset by 1 where there is a class token, the final norm then
  attention pooling (8 heads) over every token, class token included, and the 1024-wide
  projection as the head (its bias zero), LayerNorm epsilon 1e-5.

The hub's config.json has no model_args: what the keys cannot say comes from the family
(the architecture name); model_args, where given, override it. Not built, and refused by
name: EVA-02 CLIP towers (the sub-LN inside the attention, `scale_attn_inner`), the
post-norm `eva02_enormous`, EVA-01 and PE lang / spatial (no final norm, no pooling).
"""

import re

from keras_vit import arguments
from keras_vit.weights.checkpoint import (
    CLIP, SIZES, architecture, count_blocks, position_embedding, positive_int)
from keras_vit.weights.google import optional_dense
from keras_vit.weights.timm import (
    attention_pool, configured_image_size, conv_kernel, linear, pretrained_normalization,
    bias_flags, read_config, split_fused_qkv, take_linear, take_mlp, take_norm)

FAMILIES = ("eva02_", "vit_pe_core_")
# timm model_args read here, seen in the keys, or without effect at inference;
# _TIMM_REQUIRED: a value other than this is an architecture not built here.
_TIMM_ARGS = {"img_size", "patch_size", "embed_dim", "depth", "num_heads", "in_chans",
              "num_classes", "global_pool", "qkv_bias", "qkv_fused", "mlp_ratio", "swiglu_mlp",
              "scale_mlp", "init_values", "class_token", "use_abs_pos_emb", "use_rot_pos_emb",
              "rope_type", "rope_temperature", "rope_rotate_half", "rope_grid_offset",
              "rope_grid_indexing", "ref_feat_shape", "use_pre_transformer_norm",
              "use_post_transformer_norm", "use_fc_norm", "attn_pool_num_heads",
              "attn_pool_mlp_ratio", "attn_type", "dynamic_img_size", "dynamic_img_pad",
              "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate",
              "attn_drop_rate", "drop_path_rate", "head_init_scale", "rope_shift_coords",
              "rope_jitter_coords", "rope_rescale_coords"}
_TIMM_REQUIRED = {"qk_norm": False, "scale_attn_inner": False, "use_post_norm": False,
                  "no_embed_class": False, "num_reg_tokens": 0, "attn_only_layer_scale": False,
                  "gated_attn": False, "num_kv_heads": None, "swiglu_align_to": 0,
                  "attn_head_dim": None, "rope_mrope_section": None}
_HEADS = {name: heads for name, (_, heads) in SIZES.items()} | {"gigantic": 16}
# What the keys say: {key in block 0: the architecture keras_vit does not build}.
_UNBUILT_KEYS = {"attn.norm.weight": "the sub-LN inside the attention (timm's scale_attn_inner, "
                                     "EVA-02 CLIP)",
                 "attn.gate.weight": "gated attention"}


def is_timm_eva(tensors, files):
    """Whether a timm-format file is one of timm's `Eva` models other than DINOv3: its
    config.json's architecture says "eva..." or "vit_pe_...", or (without one) EVA's q and
    v biases without a k bias."""
    name = ((files or {}).get("config") or {}).get("architecture")
    if isinstance(name, str):
        return name.startswith(("eva", "vit_pe_"))
    return "blocks.0.attn.q_bias" in tensors or (
        "blocks.0.attn.q_proj.weight" in tensors and "blocks.0.attn.k_proj.bias" not in tensors)


def convert_timm(r, files):
    files = files or {}
    keys = set(r.tensors)
    config = files.get("config") or {}
    cfg = _timm_config(config, files.get("paths", {}).get("config", "config.json"),
                       has_cls="cls_token" in keys)
    for key, feature in _UNBUILT_KEYS.items():
        if f"blocks.0.{key}" in keys:
            raise ValueError(f"This timm {cfg['family']} has {feature} (key blocks.0.{key}), "
                             "which keras_vit does not build.")
    if "reg_token" in keys:
        raise ValueError("This timm EVA model has register tokens with positions, which "
                         "keras_vit does not build.")
    kernel = r.take("patch_embedding/projection/kernel", "patch_embed.proj.weight", conv_kernel,
                    ndim=4)
    patch_bias = "patch_embed.proj.bias" in keys
    if patch_bias:
        r.take("patch_embedding/projection/bias", "patch_embed.proj.bias")
    has_cls = "cls_token" in keys
    if has_cls:
        r.take("class_token/token", "cls_token", ndim=3)
    grid = None if kernel is None or cfg["image_size"] is None else tuple(
        s // p for s, p in zip(cfg["image_size"], kernel.shape[:2]))
    grid = position_embedding(r, "pos_embed", has_cls, grid=grid)
    pre_norm = "norm_pre.weight" in keys
    if pre_norm:
        take_norm(r, "pre_norm", "norm_pre")
    num_layers = count_blocks(keys, r"blocks\.(\d+)\.")
    blocks = _block_flags(keys, num_layers)
    layer_scale = "blocks.0.gamma_1" in keys
    for i in range(num_layers):
        b, block = f"blocks.{i}.", f"encoder_block_{i}/"
        _attention(r, f"{block}attention/", f"{b}attn.", blocks)
        blocks["mlp_type"], blocks["mlp_inner_norm"] = take_mlp(
            r, block, f"{b}mlp.", blocks["mlp_bias"])
        take_norm(r, f"{block}attention_norm", f"{b}norm1")
        take_norm(r, f"{block}mlp_norm", f"{b}norm2")
        if layer_scale:
            r.take(f"{block}attention_scale", f"{b}gamma_1")
            r.take(f"{block}mlp_scale", f"{b}gamma_2")
    pooling, pooled_norm = _pooling(r, keys, cfg["pooling"])
    classes = optional_dense(r, "head", "head.", "weight", linear)
    mean, std = cfg["normalization"] or cfg["family_normalization"]
    width = None if kernel is None else int(kernel.shape[-1])
    heads = cfg["num_heads"] or _heads_by_name(cfg["architecture"], width)
    options = dict(
        class_token=has_cls if pooling != "token" else None, pooling=pooling,
        pooled_norm=pooled_norm, pre_norm=pre_norm, patch_bias=patch_bias,
        position_embedding="learned" if "pos_embed" in keys else "none",
        layer_norm_epsilon=cfg["epsilon"], mlp_activation="gelu", image_mean=mean, image_std=std,
        layer_scale_init=1.0 if layer_scale else None, **cfg["rope"], **blocks)
    if pooling == "map":
        options["pooling_heads"] = cfg["pooling_heads"]
    return architecture(r, kernel, grid, num_layers, num_heads=heads, num_classes=classes,
                        **options)


def _block_flags(keys, num_layers):
    """Which projections have biases, the same in every block (some but not all blocks is
    an error): PE's fused qkv with its fused bias; EVA's fused qkv with q_bias and v_bias,
    the key's fixed at zero; or separate q, k and v projections."""
    a = "blocks.0.attn."
    if a + "qkv.weight" in keys and a + "qkv.bias" in keys:  # PE
        names = dict(query_bias="qkv.bias", key_bias="qkv.bias", value_bias="qkv.bias")
    elif a + "qkv.weight" in keys:
        names = dict(query_bias="q_bias", value_bias="v_bias")
    else:
        names = {f"{part}_bias": f"{part[0]}_proj.bias" for part in ("query", "key", "value")}
    blocks = [f"blocks.{i}." for i in range(num_layers)]
    biases = {field: [f"{b}attn.{name}" for b in blocks]
              for field, name in dict(names, output_bias="proj.bias").items()}
    biases["mlp_bias"] = [f"{b}mlp.fc2.bias" for b in blocks]
    return {"key_bias": False, **bias_flags(keys, biases), "mlp_type": "mlp",
            "mlp_inner_norm": False}


def _attention(r, path, prefix, flags):
    """One block's attention: a fused qkv (with a fused bias, PE; or EVA's q_bias and
    v_bias) or separate q/k/v projections, and the output projection."""
    if f"{prefix}qkv.weight" in r.tensors:
        fused_bias = f"{prefix}qkv.bias" if f"{prefix}qkv.bias" in r.tensors else None
        split_fused_qkv(r, path, f"{prefix}qkv.weight", fused_bias)
        if fused_bias is None:
            for part, name in (("query", "q_bias"), ("value", "v_bias")):
                if flags[f"{part}_bias"]:
                    r.take(f"{path}{part}/bias", prefix + name)
    else:
        for part in ("query", "key", "value"):
            take_linear(r, path + part, f"{prefix}{part[0]}_proj", flags[f"{part}_bias"])
    take_linear(r, path + "attention_output", prefix + "proj", flags["output_bias"])


def _pooling(r, keys, configured):
    """(pooling, pooled_norm), reading the final norm and the attention pool: timm's
    `fc_norm` (after average pooling) or `norm` (on the tokens), `attn_pool` for "map"."""
    pooling = "map" if "attn_pool.latent" in keys else configured
    if pooling != configured and configured is not None:
        raise ValueError(f"config.json says global_pool={configured!r} but the file has an "
                         "attention pool.")
    pooled_norm = "fc_norm.weight" in keys
    if pooled_norm == ("norm.weight" in keys) or (pooled_norm and pooling != "gap"):
        raise ValueError("keras_vit builds timm's EVA with one final norm: fc_norm after "
                         "average pooling, or norm on the tokens; this file has "
                         f"{'both' if pooled_norm else 'neither'} (global_pool={pooling!r}).")
    take_norm(r, "pooled_norm" if pooled_norm else "encoder_norm", "fc_norm" if pooled_norm else "norm")
    if pooling == "map":
        attention_pool(r)
    return pooling, pooled_norm


def _family(name):
    """"eva02" or "vit_pe_core" from the architecture name; a ValueError for the other
    `Eva` models."""
    if name is None:
        return "eva02"
    if not isinstance(name, str):
        raise ValueError(f"config.json: architecture must be a string, got {name!r}.")
    if "enormous" in name:
        raise ValueError(f"{name}: post-norm blocks (timm's use_post_norm) are not built by keras_vit.")
    for family in FAMILIES:
        if name.startswith(family):
            return family[:-1]
    raise ValueError(f"{name}: keras_vit loads timm's eva02_* and vit_pe_core_* EVA models only.")


def _heads_by_name(name, width):
    match = re.match(r"(?:eva02|vit_pe_core)_([a-z]+)_", name or "")
    size = match and match.group(1)
    return _HEADS.get(size) if size in _HEADS and width % _HEADS[size] == 0 else None


def _family_args(family, name, has_cls):
    """The model_args of timm's registered models of `family` that the keys cannot say."""
    if family == "eva02":
        return dict(use_rot_pos_emb=True, ref_feat_shape=(16, 16), global_pool="avg",
                    epsilon=1e-6, normalization=CLIP)
    size = re.search(r"_patch(\d+)_(\d+)", name or "")
    return dict(use_rot_pos_emb=True, global_pool="map", rope_grid_indexing="xy",
                rope_grid_offset=1.0 if has_cls else 0.0, attn_pool_num_heads=8,
                ref_feat_shape=size and (int(size.group(2)) // int(size.group(1)),) * 2,
                epsilon=1e-5, normalization=(None, None))


def _timm_config(config, path, has_cls):
    """What the conversion uses from config.json (at `path`), checked: the family's
    values where model_args does not give them."""
    args, pretrained = read_config(config, _TIMM_ARGS, _TIMM_REQUIRED)
    name = config.get("architecture")
    family = _family(name)
    values = {**_family_args(family, name, has_cls), **args}
    values["global_pool"] = args.get("global_pool", config.get("global_pool", values["global_pool"]))
    if values.get("rope_type", "cat") != "cat":
        raise ValueError(f"config.json: rope_type {values['rope_type']!r} is not EVA's 'cat'.")
    pool = values["global_pool"]
    if pool not in ("avg", "token", "map"):
        raise ValueError(f"config.json: global_pool {pool!r} is not one keras_vit builds.")
    rope = {}
    if values["use_rot_pos_emb"]:
        theta = values.get("rope_temperature", 10000.0)
        offset = values.get("rope_grid_offset", 0.0)
        arguments.check_number(rope_temperature=theta, rope_grid_offset=offset)
        rope = dict(rope="axial", rope_theta=float(theta), rope_grid_offset=float(offset),
                    rope_rotate_half=bool(values.get("rope_rotate_half", False)),
                    rope_grid_indexing=values.get("rope_grid_indexing", "ij"),
                    rope_reference_grid=values.get("ref_feat_shape"))
    return dict(
        architecture=name, family={"eva02": "EVA-02", "vit_pe_core": "PE core"}[family],
        pooling={"avg": "gap"}.get(pool, pool), rope=rope, epsilon=values["epsilon"],
        num_heads=positive_int(args.get("num_heads"), "model_args num_heads"),
        pooling_heads=positive_int(values.get("attn_pool_num_heads"), "attn_pool_num_heads"),
        image_size=configured_image_size(args, pretrained),
        normalization=pretrained_normalization(pretrained, path),
        family_normalization=values["normalization"])
