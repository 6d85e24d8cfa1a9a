"""What a Hugging Face `config.json` (and `preprocessor_config.json`) says about a ViT
checkpoint: its family (from `model_type`, else from the keys), the image tower's config
of a whole model, the config values a conversion uses (checked), and the image mean and
std. `keras_vit.weights.huggingface` converts the tensors."""

import math

from keras_vit import arguments
from keras_vit.weights.checkpoint import CLIP, IMAGENET, image_size_pair, number_list, positive_int

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_fast": "gelu_tanh", "quick_gelu": "quick_gelu", "silu": "silu"}
# model_type: the family whose conversion reads it.
FAMILIES = {"vit": "vit", "vit_mae": "vit", "deit": "vit", "dinov2": "dinov2",
            "dinov2_with_registers": "dinov2", "clip_vision_model": "clip", "clip": "clip",
            "siglip_vision_model": "siglip", "siglip": "siglip",
            "siglip2_vision_model": "siglip", "siglip2": "siglip",
            "aimv2_vision_model": "aimv2", "aimv2": "aimv2"}
DEFAULT_NORMALIZATION = {"vit": None, "vit_mae": IMAGENET, "deit": IMAGENET, "dinov2": IMAGENET,
                         "dinov2_with_registers": IMAGENET, "clip_vision_model": CLIP,
                         "clip": CLIP, "siglip_vision_model": None, "siglip": None,
                         "siglip2_vision_model": None, "siglip2": None,
                         "aimv2_vision_model": CLIP, "aimv2": CLIP}
# Parts of whole-model checkpoints that are not the image tower: CLIP's, SigLIP's and
# AIMv2's text towers, MAE's pre-training decoder.
OTHER_PARTS = ("text_model.", "text_projection.", "logit_scale", "logit_bias", "decoder.")
# model_type of the whole models (image and text towers), whose vision_config is the image's.
WHOLE_MODELS = ("clip", "siglip", "siglip2", "aimv2")


def model_type_of(hf, tensors):
    """config.json's `model_type` (checked to be one keras_vit loads), else the one the
    keys show."""
    keys = set(tensors)
    model_type = hf.get("model_type")
    if model_type is None:
        if "embeddings.rms_norm.weight" in keys:
            return "aimv2_vision_model"
        if "vision_model.embeddings.rms_norm.weight" in keys:
            return "aimv2"
        p = tower_prefix(keys)
        if p is not None:  # CLIP has a class embedding; SigLIP's NaFlex a linear patch projection
            if f"{p}embeddings.class_embedding" in keys:
                return "clip_vision_model"
            patch = tensors[f"{p}embeddings.patch_embedding.weight"]
            return "siglip2_vision_model" if getattr(patch, "ndim", 4) == 2 else \
                "siglip_vision_model"
        if {"deit.embeddings.distillation_token", "embeddings.distillation_token"} & keys:
            return "deit"
        if any(".layer_scale1." in k for k in keys):
            return "dinov2_with_registers" if "embeddings.register_tokens" in keys else "dinov2"
        return "vit"
    if model_type not in FAMILIES:
        raise ValueError(
            f"config.json: model_type {model_type!r} is not a family keras_vit loads from the "
            f"Hugging Face format yet (it loads {', '.join(sorted(FAMILIES))}).")
    return model_type


def tower_prefix(keys):
    """The prefix of a CLIP or SigLIP image tower's keys: "vision_model." (a whole model,
    or a tower saved by transformers 4), "" (a tower saved by transformers 5), or None."""
    return next((p for p in ("vision_model.", "")
                 if f"{p}embeddings.patch_embedding.weight" in keys), None)


def config_values(hf, model_type):
    """The config.json entries the conversion uses, checked."""
    size = hf.get("image_size")
    if size is not None:
        size = image_size_pair(size, "image_size")
    family = FAMILIES[model_type]
    eps = hf.get("rms_norm_eps" if family == "aimv2" else "layer_norm_eps",
                 {"clip": 1e-5, "siglip": 1e-6, "aimv2": 1e-5}.get(family, 1e-12))
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (
            math.isfinite(eps) and eps > 0):
        raise ValueError(f"config.json: layer_norm_eps must be a positive number, got {eps!r}.")
    act = hf.get("hidden_act", {"clip": "quick_gelu", "siglip": "gelu_pytorch_tanh",
                                "aimv2": "silu"}.get(family, "gelu"))
    # SiLU is AIMv2's SwiGLU gate, and AIMv2 has no other MLP.
    if not isinstance(act, str) or act not in ACTIVATIONS or (
            (act == "silu") != (family == "aimv2")):
        raise ValueError(f"Unsupported hidden_act {act!r} in the Hugging Face config.")
    if hf.get("use_swiglu_ffn"):
        raise ValueError("config.json: use_swiglu_ffn (DINOv2-g's SwiGLU MLP) is not supported.")
    mlp_dim = None if model_type.startswith("dinov2") else positive_int(
        hf.get("intermediate_size"), "intermediate_size")
    return dict(image_size=size,
                num_heads=positive_int(hf.get("num_attention_heads"), "num_attention_heads"),
                mlp_dim=mlp_dim, eps=float(eps), activation=ACTIVATIONS[act])


def normalization(preprocessor, model_type, path):
    """(image_mean, image_std) from preprocessor_config.json (at `path`), else the
    family's; a ValueError naming the file and the field where they are not plausible."""
    mean, std = (preprocessor or {}).get("image_mean"), (preprocessor or {}).get("image_std")
    if mean is None and std is None:
        return DEFAULT_NORMALIZATION[model_type] or (None, None)
    names = (f"{path}: image_mean", f"{path}: image_std")
    mean, std = number_list(mean, names[0]), number_list(std, names[1])
    arguments.check_normalization(mean, std, *names)
    return mean, std
