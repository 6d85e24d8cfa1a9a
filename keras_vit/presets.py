"""The ViT presets, as data: architectures and the pretrained weights each one has.

`PRESETS[name]` holds a `description`, the constructor arguments in `config`, a dict of
named `weights` and the name of the `default_weights` that `ViT.from_preset(name)` loads.
Each weights entry says where the file is (`url`, plus `config_url` for Hugging Face),
its `format`, native `image_size`, `num_classes` (21843 for ImageNet-21k heads), the
published ImageNet-1k `top1` (None where the head is not an ImageNet-1k one) with the
`top1_source` it comes from, and optional `sha256` / `size` for verification.

Weights names:
    augreg_in21k_ft_in1k[_384]  AugReg (Steiner et al., 2021): ImageNet-21k, then ImageNet-1k
    augreg_in21k                AugReg, ImageNet-21k only (21843 classes)
    augreg_in1k[_384]           AugReg, ImageNet-1k only
    augreg2_in21k_ft_in1k       timm's re-fine-tune of AugReg (timm format, exact GELU)
    orig_in21k                  original paper, ImageNet-21k only (21843 classes, pre_logits)
    orig_in21k_ft_in1k[_384]    original paper, fine-tuned on ImageNet-1k
    hf_orig_in21k_ft_in1k       Hugging Face's conversion of orig_in21k_ft_in1k
Top-1 sources: timm's results-imagenet.csv (its own evaluation of the same files) and the
google-research/vision_transformer README.
"""

import os

_ARCHITECTURES = {
    # name: (long name, patch, hidden, mlp, heads, layers)
    "ti16": ("ViT-Ti/16", 16, 192, 768, 3, 12),
    "s16": ("ViT-S/16", 16, 384, 1536, 6, 12),
    "s32": ("ViT-S/32", 32, 384, 1536, 6, 12),
    "b16": ("ViT-B/16", 16, 768, 3072, 12, 12),
    "b32": ("ViT-B/32", 32, 768, 3072, 12, 12),
    "b8": ("ViT-B/8", 8, 768, 3072, 12, 12),
    "l16": ("ViT-L/16", 16, 1024, 4096, 16, 24),
    "l32": ("ViT-L/32", 32, 1024, 4096, 16, 24),
    "h14": ("ViT-H/14", 14, 1280, 5120, 16, 32),
}

_GCS = "https://storage.googleapis.com/vit_models/"
_TIMM_CSV = "timm results-imagenet.csv"
_VIT_JAX_README = "google-research/vision_transformer README"

# AugReg file stems (from the vit_models/augreg index, as listed in timm's default_cfgs):
# preset: (i21k stem, fine-tune suffix lr, i21k->i1k 384 stem if it differs, i1k stem).
_AUGREG = {
    "ti16": ("Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "0.03", None, None),
    "s16": ("S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0", "0.03", None,
            "S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0"),
    "s32": ("S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0", "0.03", None, None),
    "b32": ("B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0", "0.03",
            "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
            "B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1"),
    "b16": ("B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0", "0.01", None,
            "B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1"),
    "b8": ("B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0", "0.01", None, None),
    "l16": ("L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1", "0.01", None, None),
}

# Published ImageNet-1k top-1 (%): weights name -> {preset: top-1}, from timm's table.
_TOP1 = {
    "augreg_in21k_ft_in1k": {"ti16": 75.454, "s16": 81.384, "s32": 75.994, "b32": 80.716,
                             "b16": 84.532, "b8": 85.798, "l16": 85.834},
    "augreg_in21k_ft_in1k_384": {"ti16": 78.424, "s16": 83.802, "s32": 80.486, "b32": 83.350,
                                 "b16": 85.996, "l16": 87.084},
    "augreg_in1k": {"s16": 78.846, "b32": 74.894, "b16": 79.154},
    "augreg_in1k_384": {"s16": 81.116, "b32": 78.752, "b16": 81.102},
}


def _entry(url, top1, top1_source, image_size=224, num_classes=1000, fmt="vit_jax", **extra):
    return {
        "url": url,
        "format": fmt,
        "image_size": image_size,
        "num_classes": num_classes,
        "top1": top1,
        "top1_source": top1_source if top1 is not None else None,
        "sha256": None,
        "size": None,
        **extra,
    }


def _augreg_weights(preset):
    stem, lr, stem_384, stem_in1k = _AUGREG[preset]
    weights = {}
    for res in (224, 384):
        name = "augreg_in21k_ft_in1k" + ("" if res == 224 else "_384")
        if preset in _TOP1[name]:
            base = stem_384 if res == 384 and stem_384 else stem
            url = f"{_GCS}augreg/{base}--imagenet2012-steps_20k-lr_{lr}-res_{res}.npz"
            weights[name] = _entry(url, _TOP1[name][preset], _TIMM_CSV, image_size=res)
    weights["augreg_in21k"] = _entry(f"{_GCS}augreg/{stem}.npz", None, None, num_classes=21843)
    if stem_in1k:
        for res in (224, 384):
            name = "augreg_in1k" + ("" if res == 224 else "_384")
            url = f"{_GCS}augreg/{stem_in1k}--imagenet2012-steps_20k-lr_0.01-res_{res}.npz"
            weights[name] = _entry(url, _TOP1[name][preset], _TIMM_CSV, image_size=res)
    return weights


def _orig_weights(file_name, in1k_224=None, in1k_384=None):
    """The original paper's files; in1k_* are (top-1, source) or None where absent."""
    weights = {
        "orig_in21k": _entry(f"{_GCS}imagenet21k/{file_name}.npz", None, None, num_classes=21843)
    }
    ft = f"{_GCS}imagenet21k%2Bimagenet2012/{file_name}"
    if in1k_224:
        weights["orig_in21k_ft_in1k"] = _entry(f"{ft}-224.npz", *in1k_224)
    if in1k_384:
        weights["orig_in21k_ft_in1k_384"] = _entry(f"{ft}.npz", *in1k_384, image_size=384)
    return weights


def _timm_weights(name, top1):
    url = f"https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
    return _entry(url, top1, _TIMM_CSV, fmt="timm")


_HF_B16 = "https://huggingface.co/google/vit-base-patch16-224/resolve/main/"

_WEIGHTS = {
    "ti16": _augreg_weights("ti16"),
    "s16": _augreg_weights("s16"),
    "s32": _augreg_weights("s32"),
    "b32": {
        **_augreg_weights("b32"),
        **_orig_weights("ViT-B_32", in1k_384=(81.79, _VIT_JAX_README)),
    },
    "b16": {
        **_augreg_weights("b16"),
        "augreg2_in21k_ft_in1k": _timm_weights("vit_base_patch16_224.augreg2_in21k_ft_in1k", 85.096),
        **_orig_weights(
            "ViT-B_16", in1k_224=(81.786, _TIMM_CSV), in1k_384=(84.200, _TIMM_CSV)
        ),
        "hf_orig_in21k_ft_in1k": _entry(
            f"{_HF_B16}model.safetensors", 81.786, _TIMM_CSV + " (same weights, orig_in21k_ft_in1k)",
            fmt="hf", config_url=f"{_HF_B16}config.json",
        ),
    },
    "b8": {
        **_augreg_weights("b8"),
        "augreg2_in21k_ft_in1k": _timm_weights("vit_base_patch8_224.augreg2_in21k_ft_in1k", 86.218),
    },
    "l16": {
        **_augreg_weights("l16"),
        **_orig_weights(
            "ViT-L_16", in1k_224=(82.7, _VIT_JAX_README), in1k_384=(85.07, _VIT_JAX_README)
        ),
    },
    "l32": _orig_weights("ViT-L_32", in1k_384=(81.510, _TIMM_CSV)),
    "h14": _orig_weights("ViT-H_14"),
}

_DEFAULTS = {
    name: "augreg_in21k_ft_in1k" for name in ("ti16", "s16", "s32", "b32", "b16", "b8", "l16")
}
_DEFAULTS["l32"] = "orig_in21k_ft_in1k_384"
_DEFAULTS["h14"] = "orig_in21k"
_DEFAULT_NOTES = {
    "l32": " No public 224 ImageNet-1k fine-tune: the default is the original one at 384.",
    "h14": " Only an ImageNet-21k checkpoint is public: the default has 21843 classes "
           "(fine-tune it with num_classes=...).",
}

PRESETS = {
    name: {
        "description": (
            f"{long_name}: {layers} layers, width {hidden}, MLP {mlp}, {heads} heads, "
            f"{patch}x{patch} patches." + _DEFAULT_NOTES.get(name, "")
        ),
        "config": {
            "patch_size": patch,
            "hidden_dim": hidden,
            "mlp_dim": mlp,
            "num_heads": heads,
            "num_layers": layers,
        },
        "weights": _WEIGHTS[name],
        "default_weights": _DEFAULTS[name],
    }
    for name, (long_name, patch, hidden, mlp, heads, layers) in _ARCHITECTURES.items()
}

# Models trained by this project's recipes: the repository's saved_models/, installed with
# the package as keras_vit/saved_models/ (or the folder named by $KERAS_VIT_SAVED_MODELS).
_INSTALLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "saved_models")
_REPOSITORY = os.path.join(os.path.dirname(os.path.dirname(_INSTALLED)), "saved_models")
SAVED_MODELS = os.environ.get("KERAS_VIT_SAVED_MODELS") or (
    _INSTALLED if os.path.isdir(_INSTALLED) else _REPOSITORY)
PRESETS["fashion_mnist"] = {
    "description": (
        "ViT trained from scratch on Fashion-MNIST by recipes/fashion_mnist.py: (28, 28, 1) "
        "images with pixels 0..255, 10 classes, 93.45 % on the official test set "
        "(saved_models/fashion_mnist/README.md)."
    ),
    "config": {
        "image_size": 28,
        "num_channels": 1,
        "patch_size": 4,
        "hidden_dim": 256,
        "mlp_dim": 512,
        "num_heads": 4,
        "num_layers": 6,
        "num_classes": 10,
    },
    "weights": {
        "fashion_mnist": _entry(
            None, None, None, image_size=28, num_classes=10, fmt="keras",
            file="fashion_mnist/model.keras",
        ),
    },
    "default_weights": "fashion_mnist",
}


# The later ViT families, from their Hugging Face hub repositories (hf:// handles, fetched
# with huggingface_hub). "config" is the architecture for weights=None; a checkpoint brings
# its own image size, mean / std and epsilon.
_DINOV2_README = "facebookresearch/dinov2 README (ImageNet linear probe)"
_IMAGENET_NORMALIZATION = dict(image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225))
_DINOV2 = {
    # name: (long name, hidden, heads, layers, registers, hub repo, ImageNet linear top-1)
    "dinov2_s14": ("DINOv2 ViT-S/14", 384, 6, 12, 0, "facebook/dinov2-small", 81.1),
    "dinov2_b14": ("DINOv2 ViT-B/14", 768, 12, 12, 0, "facebook/dinov2-base", 84.5),
    "dinov2_l14": ("DINOv2 ViT-L/14", 1024, 16, 24, 0, "facebook/dinov2-large", 86.3),
    "dinov2_reg_s14": ("DINOv2 ViT-S/14 with registers", 384, 6, 12, 4,
                       "facebook/dinov2-with-registers-small", 80.9),
    "dinov2_reg_b14": ("DINOv2 ViT-B/14 with registers", 768, 12, 12, 4,
                       "facebook/dinov2-with-registers-base", 84.6),
    "dinov2_reg_l14": ("DINOv2 ViT-L/14 with registers", 1024, 16, 24, 4,
                       "facebook/dinov2-with-registers-large", 86.7),
}


def _dinov2_preset(long_name, hidden, heads, layers, registers, repo, top1):
    return {
        "description": (f"{long_name}: self-supervised features (LVD-142M), no head; pass "
                        "num_classes=... to fine-tune. Its top-1 is a linear probe's."),
        "config": dict(patch_size=14, hidden_dim=hidden, mlp_dim=4 * hidden, num_heads=heads,
                       num_layers=layers, num_register_tokens=registers, layer_scale_init=1.0,
                       gelu_approximate=False, include_top=False, **_IMAGENET_NORMALIZATION),
        "weights": {"lvd142m": _entry(f"hf://{repo}", top1, _DINOV2_README, image_size=518,
                                      num_classes=None, fmt="hf")},
        "default_weights": "lvd142m",
    }


PRESETS.update({name: _dinov2_preset(*spec) for name, spec in _DINOV2.items()})
PRESETS["deit_b16_distilled"] = {
    "description": ("DeiT-B/16 distilled (Touvron et al., 2021): a distillation token with its "
                    "own head, ImageNet-1k only; logits are the average of both heads."),
    "config": dict(patch_size=16, hidden_dim=768, mlp_dim=3072, num_heads=12, num_layers=12,
                   distillation_token=True, gelu_approximate=False, layer_norm_epsilon=1e-12,
                   **_IMAGENET_NORMALIZATION),
    "weights": {"in1k": _entry("hf://facebook/deit-base-distilled-patch16-224", 83.4,
                               "DeiT paper / Hugging Face model card", fmt="hf")},
    "default_weights": "in1k",
}


_CLIP_NORMALIZATION = dict(image_mean=(0.48145466, 0.4578275, 0.40821073),
                           image_std=(0.26862954, 0.26130258, 0.27577711))
_B16 = dict(patch_size=16, hidden_dim=768, mlp_dim=3072, num_heads=12, num_layers=12,
            gelu_approximate=False)
PRESETS["deit3_b16"] = {
    "description": ("DeiT III B/16 (Touvron et al., 2022): layer scale, no position for the "
                    "class token; ImageNet-21k, then ImageNet-1k (timm's file)."),
    "config": dict(_B16, layer_scale_init=1.0, class_token_position=False,
                   layer_norm_epsilon=1e-6, **_IMAGENET_NORMALIZATION),
    "weights": {"in22k_ft_in1k": _entry("hf://timm/deit3_base_patch16_224.fb_in22k_ft_in1k",
                                        85.7, "DeiT III paper, Table 8 (224, IN-21k)", fmt="timm")},
    "default_weights": "in22k_ft_in1k",
}
PRESETS["clip_b16"] = {
    "description": ("OpenAI CLIP ViT-B/16 image tower (Radford et al., 2021): a norm before "
                    "the encoder, quick GELU; the head is CLIP's 512-wide image projection "
                    "(include_top=False: the 768-wide pooled features). Its top-1 is zero-shot."),
    "config": dict(_B16, num_classes=512, pre_norm=True, mlp_activation="quick_gelu",
                   layer_norm_epsilon=1e-5, **_CLIP_NORMALIZATION),
    "weights": {"openai": _entry("hf://openai/clip-vit-base-patch16", 68.3,
                                 "CLIP paper, zero-shot ImageNet (ViT-B/16)", num_classes=512,
                                 fmt="hf")},
    "default_weights": "openai",
}
PRESETS["siglip_b16"] = {
    "description": ("SigLIP B/16 image tower at 224 (Zhai et al., 2023): no class token, "
                    "attention pooling (MAP), tanh GELU; features, no head. Its top-1 is "
                    "zero-shot."),
    "config": dict(_B16, pooling="map", mlp_activation="gelu_tanh", gelu_approximate=True,
                   layer_norm_epsilon=1e-6, include_top=False),
    "weights": {"webli": _entry("hf://google/siglip-base-patch16-224", 76.2,
                                "SigLIP paper, zero-shot ImageNet (B/16, 224)",
                                num_classes=None, fmt="hf")},
    "default_weights": "webli",
}
PRESETS["mae_b16"] = {
    "description": ("MAE ViT-B/16 encoder (He et al., 2022), self-supervised on ImageNet-1k, "
                    "no head: a starting point for fine-tuning (num_classes=...). Its top-1 is "
                    "after the paper's full fine-tuning."),
    "config": dict(_B16, layer_norm_epsilon=1e-12, include_top=False, **_IMAGENET_NORMALIZATION),
    "weights": {"in1k": _entry("hf://facebook/vit-mae-base", 83.6,
                               "MAE paper, ImageNet-1k fine-tuned (ViT-B)", num_classes=None,
                               fmt="hf")},
    "default_weights": "in1k",
}


def list_presets():
    """Returns {preset name: description}."""
    return {name: preset["description"] for name, preset in PRESETS.items()}


def list_weights(preset):
    """Returns {weights name: (top-1 or None, url)} of a preset."""
    return {
        name: (spec["top1"], spec["url"] or spec.get("file"))
        for name, spec in get_preset(preset)["weights"].items()
    }


def get_preset(name):
    """Returns the preset entry for `name`, or raises a ValueError listing the valid names."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(sorted(PRESETS))}, or the "
            "path of a checkpoint file."
        )
    return PRESETS[name]
