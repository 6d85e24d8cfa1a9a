"""The ViT presets, as data: architectures and the pretrained weights each one has.

`PRESETS[name]` holds a `description`, the `ViT` constructor arguments of its architecture
in `config` (`keras_vit.ViTConfig`'s defaults for the others), a dict of named `weights`
and the name of the `default_weights` that `ViT.from_preset(name)` loads.
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
The table is literal data (the original ViT presets are in `presets_original.py`, the
2025-26 families' in `presets_recent.py`); finding
the files it names (downloads, `hf://` handles, the shipped `saved_models/`) is
`keras_vit.preset_loading`'s.
"""

from keras_vit.presets_original import ORIGINAL_PRESETS
from keras_vit.presets_recent import RECENT_PRESETS

PRESETS = {
    **ORIGINAL_PRESETS,
    # A model trained by this project's recipes, shipped in saved_models/.
    "fashion_mnist": {
        "description": (
            "ViT trained from scratch on Fashion-MNIST by recipes/fashion_mnist.py: (28, 28, 1) "
            "images with pixels 0..255, 10 classes, 93.45 % on the official test set "
            "(saved_models/fashion_mnist/README.md)."
        ),
        "config": {
            "image_size": 28, "num_channels": 1, "patch_size": 4, "hidden_dim": 256,
            "mlp_dim": 512, "num_heads": 4, "num_layers": 6, "num_classes": 10,
        },
        "weights": {
            "fashion_mnist": {
                "url": None,
                "format": "keras", "image_size": 28, "num_classes": 10, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
                "file": "fashion_mnist/model.keras",
            },
        },
        "default_weights": "fashion_mnist",
    },
    # The later ViT families, from their Hugging Face hub repositories (hf:// handles).
    # "config" is the architecture for weights=None; a checkpoint brings its own image
    # size, mean / std and epsilon.
    "dinov2_s14": {
        "description": (
            "DINOv2 ViT-S/14: self-supervised features (LVD-142M), no head; pass num_classes=... "
            "to fine-tune. Its top-1 is a linear probe's."
        ),
        "config": {
            "patch_size": 14, "hidden_dim": 384, "mlp_dim": 1536, "num_heads": 6,
            "num_layers": 12, "num_register_tokens": 0, "layer_scale_init": 1.0,
            "gelu_approximate": False, "include_top": False, "image_mean": (0.485, 0.456, 0.406),
            "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "lvd142m": {
                "url": "hf://facebook/dinov2-small",
                "format": "hf", "image_size": 518, "num_classes": None, "top1": 81.1,
                "top1_source": "facebookresearch/dinov2 README (ImageNet linear probe)",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "lvd142m",
    },
    "dinov2_b14": {
        "description": (
            "DINOv2 ViT-B/14: self-supervised features (LVD-142M), no head; pass num_classes=... "
            "to fine-tune. Its top-1 is a linear probe's."
        ),
        "config": {
            "patch_size": 14, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12, "num_register_tokens": 0, "layer_scale_init": 1.0,
            "gelu_approximate": False, "include_top": False, "image_mean": (0.485, 0.456, 0.406),
            "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "lvd142m": {
                "url": "hf://facebook/dinov2-base",
                "format": "hf", "image_size": 518, "num_classes": None, "top1": 84.5,
                "top1_source": "facebookresearch/dinov2 README (ImageNet linear probe)",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "lvd142m",
    },
    "dinov2_l14": {
        "description": (
            "DINOv2 ViT-L/14: self-supervised features (LVD-142M), no head; pass num_classes=... "
            "to fine-tune. Its top-1 is a linear probe's."
        ),
        "config": {
            "patch_size": 14, "hidden_dim": 1024, "mlp_dim": 4096, "num_heads": 16,
            "num_layers": 24, "num_register_tokens": 0, "layer_scale_init": 1.0,
            "gelu_approximate": False, "include_top": False, "image_mean": (0.485, 0.456, 0.406),
            "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "lvd142m": {
                "url": "hf://facebook/dinov2-large",
                "format": "hf", "image_size": 518, "num_classes": None, "top1": 86.3,
                "top1_source": "facebookresearch/dinov2 README (ImageNet linear probe)",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "lvd142m",
    },
    "dinov2_reg_s14": {
        "description": (
            "DINOv2 ViT-S/14 with registers: self-supervised features (LVD-142M), no head; pass "
            "num_classes=... to fine-tune. Its top-1 is a linear probe's."
        ),
        "config": {
            "patch_size": 14, "hidden_dim": 384, "mlp_dim": 1536, "num_heads": 6,
            "num_layers": 12, "num_register_tokens": 4, "layer_scale_init": 1.0,
            "gelu_approximate": False, "include_top": False, "image_mean": (0.485, 0.456, 0.406),
            "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "lvd142m": {
                "url": "hf://facebook/dinov2-with-registers-small",
                "format": "hf", "image_size": 518, "num_classes": None, "top1": 80.9,
                "top1_source": "facebookresearch/dinov2 README (ImageNet linear probe)",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "lvd142m",
    },
    "dinov2_reg_b14": {
        "description": (
            "DINOv2 ViT-B/14 with registers: self-supervised features (LVD-142M), no head; pass "
            "num_classes=... to fine-tune. Its top-1 is a linear probe's."
        ),
        "config": {
            "patch_size": 14, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12, "num_register_tokens": 4, "layer_scale_init": 1.0,
            "gelu_approximate": False, "include_top": False, "image_mean": (0.485, 0.456, 0.406),
            "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "lvd142m": {
                "url": "hf://facebook/dinov2-with-registers-base",
                "format": "hf", "image_size": 518, "num_classes": None, "top1": 84.6,
                "top1_source": "facebookresearch/dinov2 README (ImageNet linear probe)",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "lvd142m",
    },
    "dinov2_reg_l14": {
        "description": (
            "DINOv2 ViT-L/14 with registers: self-supervised features (LVD-142M), no head; pass "
            "num_classes=... to fine-tune. Its top-1 is a linear probe's."
        ),
        "config": {
            "patch_size": 14, "hidden_dim": 1024, "mlp_dim": 4096, "num_heads": 16,
            "num_layers": 24, "num_register_tokens": 4, "layer_scale_init": 1.0,
            "gelu_approximate": False, "include_top": False, "image_mean": (0.485, 0.456, 0.406),
            "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "lvd142m": {
                "url": "hf://facebook/dinov2-with-registers-large",
                "format": "hf", "image_size": 518, "num_classes": None, "top1": 86.7,
                "top1_source": "facebookresearch/dinov2 README (ImageNet linear probe)",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "lvd142m",
    },
    "deit_b16_distilled": {
        "description": (
            "DeiT-B/16 distilled (Touvron et al., 2021): a distillation token with its own head, "
            "ImageNet-1k only; logits are the average of both heads."
        ),
        "config": {
            "patch_size": 16, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12, "distillation_token": True, "gelu_approximate": False,
            "layer_norm_epsilon": 1e-12, "image_mean": (0.485, 0.456, 0.406),
            "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "in1k": {
                "url": "hf://facebook/deit-base-distilled-patch16-224",
                "format": "hf", "image_size": 224, "num_classes": 1000, "top1": 83.4,
                "top1_source": "DeiT paper / Hugging Face model card", "sha256": None,
                "size": None,
            },
        },
        "default_weights": "in1k",
    },
    "deit3_b16": {
        "description": (
            "DeiT III B/16 (Touvron et al., 2022): layer scale, no position for the class token; "
            "ImageNet-21k, then ImageNet-1k (timm's file)."
        ),
        "config": {
            "patch_size": 16, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12, "gelu_approximate": False, "layer_scale_init": 1.0,
            "class_token_position": False, "layer_norm_epsilon": 1e-06,
            "image_mean": (0.485, 0.456, 0.406), "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "in22k_ft_in1k": {
                "url": "hf://timm/deit3_base_patch16_224.fb_in22k_ft_in1k",
                "format": "timm", "image_size": 224, "num_classes": 1000, "top1": 85.7,
                "top1_source": "DeiT III paper, Table 8 (224, IN-21k)", "sha256": None,
                "size": None,
            },
        },
        "default_weights": "in22k_ft_in1k",
    },
    "clip_b16": {
        "description": (
            "OpenAI CLIP ViT-B/16 image tower (Radford et al., 2021): a norm before the encoder, "
            "quick GELU; the head is CLIP's 512-wide image projection (include_top=False: the "
            "768-wide pooled features). Its top-1 is zero-shot."
        ),
        "config": {
            "patch_size": 16, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12, "gelu_approximate": False, "num_classes": 512, "pre_norm": True,
            "mlp_activation": "quick_gelu", "layer_norm_epsilon": 1e-05,
            "image_mean": (0.48145466, 0.4578275, 0.40821073),
            "image_std": (0.26862954, 0.26130258, 0.27577711),
        },
        "weights": {
            "openai": {
                "url": "hf://openai/clip-vit-base-patch16",
                "format": "hf", "image_size": 224, "num_classes": 512, "top1": 68.3,
                "top1_source": "CLIP paper, zero-shot ImageNet (ViT-B/16)", "sha256": None,
                "size": None,
            },
        },
        "default_weights": "openai",
    },
    "siglip_b16": {
        "description": (
            "SigLIP B/16 image tower at 224 (Zhai et al., 2023): no class token, attention "
            "pooling (MAP), tanh GELU; features, no head. Its top-1 is zero-shot."
        ),
        "config": {
            "patch_size": 16, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12, "gelu_approximate": True, "pooling": "map",
            "mlp_activation": "gelu_tanh", "layer_norm_epsilon": 1e-06, "include_top": False,
        },
        "weights": {
            "webli": {
                "url": "hf://google/siglip-base-patch16-224",
                "format": "hf", "image_size": 224, "num_classes": None, "top1": 76.2,
                "top1_source": "SigLIP paper, zero-shot ImageNet (B/16, 224)", "sha256": None,
                "size": None,
            },
        },
        "default_weights": "webli",
    },
    "mae_b16": {
        "description": (
            "MAE ViT-B/16 encoder (He et al., 2022), self-supervised on ImageNet-1k, no head: a "
            "starting point for fine-tuning (num_classes=...). Its top-1 is after the paper's "
            "full fine-tuning."
        ),
        "config": {
            "patch_size": 16, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12, "gelu_approximate": False, "layer_norm_epsilon": 1e-12,
            "include_top": False, "image_mean": (0.485, 0.456, 0.406),
            "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "in1k": {
                "url": "hf://facebook/vit-mae-base",
                "format": "hf", "image_size": 224, "num_classes": None, "top1": 83.6,
                "top1_source": "MAE paper, ImageNet-1k fine-tuned (ViT-B)", "sha256": None,
                "size": None,
            },
        },
        "default_weights": "in1k",
    },
    **RECENT_PRESETS,
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
