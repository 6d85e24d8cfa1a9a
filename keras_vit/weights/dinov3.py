"""DINOv3 ViTs in timm's and transformers' formats: the S/B/L sizes (a GELU MLP) and the
S+/H+ sizes (a SwiGLU MLP, `mlp_type="swiglu"`).

DINOv3 has no learned position table: 2-D RoPE of the patch tokens ("dinov3" form, theta
`rope_temperature` / `rope_theta`, 100), a class token and register tokens (neither rotated),
layer scale, LayerNorm epsilon 1e-5. The features are the class token after the final norm
(`pooling="token"`), as upstream DINOv3 and transformers' `pooler_output` give them; timm's
default average pooling of the patch tokens is not built (a timm file with a head must say
`global_pool="token"`).

- timm (`vit_*_patch16_dinov3`, `*_qkvb`): timm's `Eva` state dict, a fused qkv (with
  `q_bias` and `v_bias` in the `_qkvb` variants, none otherwise), `gamma_1` / `gamma_2`;
  SwiGLU's gate and up as `mlp.fc1_g` / `mlp.fc1_x` (`swiglu_mlp=True`);
- transformers (`DINOv3ViTModel`, model_type "dinov3_vit"): separate q/k/v/o projections
  (`layer.N.` or `model.layer.N.` keys), `layer_scale1/2.lambda1`; `use_gated_mlp=True`
  (with `hidden_act` "silu"): `mlp.gate_proj`, `mlp.up_proj`, `mlp.down_proj`.

The key projection has no bias in either (timm keeps it at zero, transformers'
`key_bias=False`): it loads with `key_bias=False`, and each other bias field
(`query_bias`, ..., `patch_bias`) is False where the file has none of those biases.
"""

import re

from keras_vit import arguments
from keras_vit.weights.checkpoint import (
    IMAGENET, architecture, count_blocks, image_size_pair, positive_int, read_normalization)
from keras_vit.weights.google import optional_dense
from keras_vit.weights.timm import (
    configured_image_size, conv_kernel, heads_by_name, linear, pretrained_normalization, read_config,
    split_fused_qkv, take_biases, take_mlp, take_norm)

# timm model_args read here, or without effect at inference; _TIMM_REQUIRED: a value
# other than this is an architecture not built here.
_TIMM_ARGS = {"img_size", "patch_size", "embed_dim", "depth", "num_heads", "in_chans",
              "num_classes", "global_pool", "init_values", "num_reg_tokens", "qkv_bias",
              "rope_type", "rope_temperature", "dynamic_img_size", "dynamic_img_pad",
              "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate",
              "attn_drop_rate", "drop_path_rate", "weight_init", "use_rot_pos_emb",
              "mlp_ratio", "rope_shift_coords", "rope_jitter_coords", "rope_rescale_coords",
              "swiglu_mlp", "swiglu_align_to"}
_TIMM_REQUIRED = {"use_abs_pos_emb": False, "rope_rotate_half": True, "use_fc_norm": False,
                  "class_token": True, "qkv_fused": True, "qk_norm": False,
                  "scale_mlp": False, "scale_attn_inner": False, "rope_grid_offset": 0,
                  "rope_grid_indexing": "ij", "attn_type": "eva", "no_embed_class": False,
                  "use_post_norm": False, "use_pre_transformer_norm": False}


def is_timm_dinov3(tensors, files):
    """Whether a timm-format file is a DINOv3: its config.json's architecture says so, or
    (without one) Eva's layer-scale keys and no position table."""
    name = ((files or {}).get("config") or {}).get("architecture")
    if isinstance(name, str):
        return "dinov3" in name
    return "blocks.0.gamma_1" in tensors and "pos_embed" not in tensors


def is_hf_dinov3(tensors, files):
    """Whether a Hugging Face-format file is a DINOv3 (model_type "dinov3_vit", or its
    patch embedding's key without config.json)."""
    model_type = ((files or {}).get("config") or {}).get("model_type")
    if model_type is not None:
        return model_type == "dinov3_vit"
    return "embeddings.patch_embeddings.weight" in tensors


def _embeddings(r, cls_key, reg_key, kernel_key):
    """Class token, registers and the patch projection's kernel; returns (kernel,
    registers)."""
    r.take("class_token/token", cls_key, ndim=3)
    registers = 0
    if reg_key in r.tensors:
        registers = r.take("register_tokens/tokens", reg_key, ndim=3).shape[1]
    kernel = r.take("patch_embedding/projection/kernel", kernel_key, conv_kernel, ndim=4)
    return kernel, registers


def _options(registers, theta, mean_std, mlp_type):
    mean, std = mean_std
    return dict(rope="dinov3", rope_theta=float(theta), position_embedding="none",
                num_register_tokens=registers, layer_scale_init=1.0, pooling="token",
                layer_norm_epsilon=1e-5, mlp_type=mlp_type, mlp_activation="gelu",
                image_mean=mean, image_std=std)


def convert_timm(r, files):
    files = files or {}
    cfg = _timm_config(files.get("config") or {},
                       files.get("paths", {}).get("config", "config.json"))
    kernel, registers = _embeddings(r, "cls_token", "reg_token", "patch_embed.proj.weight")
    num_layers = count_blocks(r.tensors, r"blocks\.(\d+)\.")
    biases = {"patch_bias": [("patch_embedding/projection/bias", "patch_embed.proj.bias")]}
    mlp_bias, mlp_type = "blocks.0.mlp.fc2.bias" in r.tensors, "mlp"
    for i in range(num_layers):
        b, block = f"blocks.{i}.", f"encoder_block_{i}/"
        split_fused_qkv(r, f"{block}attention/", f"{b}attn.qkv.weight", None)
        for field, part, name in (
                ("query_bias", "attention/query", "attn.q_bias"),  # the _qkvb variants
                ("value_bias", "attention/value", "attn.v_bias"),
                ("output_bias", "attention/attention_output", "attn.proj.bias")):
            biases.setdefault(field, []).append((f"{block}{part}/bias", b + name))
        r.take(f"{block}attention/attention_output/kernel", f"{b}attn.proj.weight", linear, ndim=2)
        mlp_type, inner_norm = take_mlp(r, block, f"{b}mlp.", mlp_bias)
        if inner_norm or cfg["swiglu"] not in (None, mlp_type == "swiglu"):
            raise ValueError(f"{b}mlp is not the {'SwiGLU' if cfg['swiglu'] else 'GELU'} MLP "
                             "config.json's swiglu_mlp says (and DINOv3 has no inner norm).")
        take_norm(r, f"{block}attention_norm", f"{b}norm1")
        take_norm(r, f"{block}mlp_norm", f"{b}norm2")
        r.take(f"{block}attention_scale", f"{b}gamma_1")
        r.take(f"{block}mlp_scale", f"{b}gamma_2")
    flags = dict(take_biases(r, biases), key_bias=False, mlp_bias=mlp_bias)
    take_norm(r, "encoder_norm", "norm")
    classes = optional_dense(r, "head", "head.", "weight", linear)
    if classes and cfg["pooling"] not in (None, "token"):
        raise ValueError(f"This timm DINOv3 has a head on global_pool={cfg['pooling']!r}: "
                         "keras_vit builds DINOv3 with class-token pooling only.")
    width = None if kernel is None else int(kernel.shape[-1])
    heads = cfg["num_heads"] or heads_by_name(cfg["architecture"], width)
    grid = None if kernel is None or cfg["image_size"] is None else tuple(
        s // p for s, p in zip(cfg["image_size"], kernel.shape[:2]))
    return architecture(r, kernel, grid, num_layers, num_heads=heads, num_classes=classes,
                        **_options(registers, cfg["theta"], cfg["normalization"] or IMAGENET,
                                   mlp_type), **flags)


def convert_hf(r, files):
    files = files or {}
    hf = _hf_config(files.get("config") or {})
    r.ignorable = {"embeddings.mask_token"}
    kernel, registers = _embeddings(r, "embeddings.cls_token", "embeddings.register_tokens",
                                    "embeddings.patch_embeddings.weight")
    p = "model.layer." if any(k.startswith("model.layer.") for k in r.tensors) else "layer."
    num_layers = count_blocks(r.tensors, rf"{re.escape(p)}(\d+)\.")
    biases = {"patch_bias": [("patch_embedding/projection/bias", "embeddings.patch_embeddings.bias")]}
    gate = (("mlp_bias", "mlp_gate", "mlp.gate_proj"),) if hf["gated"] else ()
    for i in range(num_layers):
        b, block = f"{p}{i}.", f"encoder_block_{i}/"
        for field, part, name in (("query_bias", "attention/query", "attention.q_proj"),
                                  ("key_bias", "attention/key", "attention.k_proj"),
                                  ("value_bias", "attention/value", "attention.v_proj"),
                                  ("output_bias", "attention/attention_output", "attention.o_proj"),
                                  *gate, ("mlp_bias", "mlp_dense_1", "mlp.up_proj"),
                                  ("mlp_bias", "mlp_dense_2", "mlp.down_proj")):
            r.take(f"{block}{part}/kernel", f"{b}{name}.weight", linear, ndim=2)
            biases.setdefault(field, []).append((f"{block}{part}/bias", f"{b}{name}.bias"))
        take_norm(r, f"{block}attention_norm", f"{b}norm1")
        take_norm(r, f"{block}mlp_norm", f"{b}norm2")
        r.take(f"{block}attention_scale", f"{b}layer_scale1.lambda1")
        r.take(f"{block}mlp_scale", f"{b}layer_scale2.lambda1")
    flags = take_biases(r, biases)
    take_norm(r, "encoder_norm", "norm")
    grid = None if kernel is None or hf["image_size"] is None else tuple(
        s // p for s, p in zip(hf["image_size"], kernel.shape[:2]))
    mean_std = _hf_normalization(files.get("preprocessor"), files.get("paths", {}).get(
        "preprocessor", "preprocessor_config.json"))
    options = _options(registers, hf["theta"], mean_std, "swiglu" if hf["gated"] else "mlp")
    options.update(layer_norm_epsilon=hf["eps"], **flags)
    return architecture(r, kernel, grid, num_layers, num_heads=hf["num_heads"],
                        mlp_dim=hf["mlp_dim"], **options)


def _timm_config(config, path):
    """What the timm conversion uses from config.json (at `path`), checked."""
    args, pretrained = read_config(config, _TIMM_ARGS, _TIMM_REQUIRED)
    if args.get("rope_type", "dinov3") != "dinov3":
        raise ValueError(f"config.json: rope_type {args['rope_type']!r} is not DINOv3's.")
    theta = args.get("rope_temperature", 100.0)
    arguments.check_number(rope_temperature=theta)
    pool = args.get("global_pool", config.get("global_pool"))
    return dict(architecture=config.get("architecture"), pooling={"avg": "gap"}.get(pool, pool),
                swiglu=args.get("swiglu_mlp"),  # None: the keys say
                num_heads=positive_int(args.get("num_heads"), "model_args num_heads"),
                image_size=configured_image_size(args, pretrained), theta=theta,
                normalization=pretrained_normalization(pretrained, path))


def _hf_config(hf):
    """The DINOv3ViTConfig entries the conversion uses, checked."""
    gated = bool(hf.get("use_gated_mlp", False))
    activation = "silu" if gated else "gelu"  # SwiGLU's gate (S+, H+), else the GELU MLP
    if hf.get("hidden_act", "gelu") != activation:
        raise ValueError(f"config.json: hidden_act {hf['hidden_act']!r} with use_gated_mlp={gated} "
                         f"is not DINOv3's {activation}.")
    rope = hf.get("rope_parameters")
    theta = (rope.get("rope_theta") if isinstance(rope, dict) else None) or hf.get("rope_theta", 100.0)
    arguments.check_number(rope_theta=theta)
    eps = hf.get("layer_norm_eps", 1e-5)
    arguments.check_number(layer_norm_eps=eps)
    size = hf.get("image_size")
    return dict(image_size=None if size is None else image_size_pair(size, "image_size"),
                num_heads=positive_int(hf.get("num_attention_heads"), "num_attention_heads"),
                mlp_dim=positive_int(hf.get("intermediate_size"), "intermediate_size"),
                theta=theta, eps=float(eps), gated=gated)


def _hf_normalization(preprocessor, path):
    preprocessor = preprocessor or {}
    return read_normalization(preprocessor.get("image_mean"), preprocessor.get("image_std"),
                              (f"{path}: image_mean", f"{path}: image_std")) or IMAGENET
