"""The 2025-26 ViT families' presets, as data (the same layout as `keras_vit.presets`).

Their "config" is what the loader reads from the hub file (checked: the same parameter
count as timm's model); a checkpoint still brings its own image size and mean / std.
DINOv3's repositories are gated: accept the DINOv3 licence on the model's Hugging Face
page, then log in (`hf auth login`) or set `HF_TOKEN`; without that the download fails
with a message saying so. "top1" is None where no ImageNet-1k figure of that exact file is
published; "top1_source" then says what the paper reports instead.
"""

RECENT_PRESETS = {
    "dinov3_s16": {
        "description": (
            "DINOv3 ViT-S/16 (Simeoni et al., 2025): self-supervised features (LVD-1689M), "
            "2-D RoPE, 4 registers, no head; pass num_classes=... to fine-tune. Gated: accept "
            "the licence on the Hugging Face page, then `hf auth login` or set HF_TOKEN."
        ),
        "config": {
            "patch_size": 16, "image_size": 256, "hidden_dim": 384, "mlp_dim": 1536,
            "num_heads": 6, "num_layers": 12, "num_register_tokens": 4,
            "layer_scale_init": 1.0, "layer_norm_epsilon": 1e-05, "mlp_activation": "gelu",
            "position_embedding": "none", "rope": "dinov3", "rope_theta": 100.0,
            "query_bias": False, "key_bias": False, "value_bias": False, "include_top": False,
            "image_mean": (0.485, 0.456, 0.406), "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "lvd1689m": {
                "url": "hf://timm/vit_small_patch16_dinov3.lvd1689m", "format": "timm", "image_size": 256,
                "num_classes": None, "top1": None,
                "top1_source": "none published: the DINOv3 paper reports ImageNet-ReaL probes",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "lvd1689m",
    },
    "dinov3_b16": {
        "description": (
            "DINOv3 ViT-B/16 (Simeoni et al., 2025): self-supervised features (LVD-1689M), "
            "2-D RoPE, 4 registers, no head; pass num_classes=... to fine-tune. Gated: accept "
            "the licence on the Hugging Face page, then `hf auth login` or set HF_TOKEN."
        ),
        "config": {
            "patch_size": 16, "image_size": 256, "hidden_dim": 768, "mlp_dim": 3072,
            "num_heads": 12, "num_layers": 12, "num_register_tokens": 4,
            "layer_scale_init": 1.0, "layer_norm_epsilon": 1e-05, "mlp_activation": "gelu",
            "position_embedding": "none", "rope": "dinov3", "rope_theta": 100.0,
            "query_bias": False, "key_bias": False, "value_bias": False, "include_top": False,
            "image_mean": (0.485, 0.456, 0.406), "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "lvd1689m": {
                "url": "hf://timm/vit_base_patch16_dinov3.lvd1689m", "format": "timm", "image_size": 256,
                "num_classes": None, "top1": None,
                "top1_source": "none published: the DINOv3 paper reports ImageNet-ReaL probes",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "lvd1689m",
    },
    "dinov3_l16": {
        "description": (
            "DINOv3 ViT-L/16 (Simeoni et al., 2025): self-supervised features (LVD-1689M), "
            "2-D RoPE, 4 registers, no head; pass num_classes=... to fine-tune. Gated: accept "
            "the licence on the Hugging Face page, then `hf auth login` or set HF_TOKEN."
        ),
        "config": {
            "patch_size": 16, "image_size": 256, "hidden_dim": 1024, "mlp_dim": 4096,
            "num_heads": 16, "num_layers": 24, "num_register_tokens": 4,
            "layer_scale_init": 1.0, "layer_norm_epsilon": 1e-05, "mlp_activation": "gelu",
            "position_embedding": "none", "rope": "dinov3", "rope_theta": 100.0,
            "query_bias": False, "key_bias": False, "value_bias": False, "include_top": False,
            "image_mean": (0.485, 0.456, 0.406), "image_std": (0.229, 0.224, 0.225),
        },
        "weights": {
            "lvd1689m": {
                "url": "hf://timm/vit_large_patch16_dinov3.lvd1689m", "format": "timm", "image_size": 256,
                "num_classes": None, "top1": None,
                "top1_source": "none published: the DINOv3 paper reports ImageNet-ReaL probes",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "lvd1689m",
    },
    "siglip2_b16": {
        "description": (
            "SigLIP 2 B/16 image tower at 224 (Tschannen et al., 2025): SigLIP's architecture "
            "(no class token, attention pooling, tanh GELU), new weights; features, no head. "
            "Its top-1 is zero-shot."
        ),
        "config": {
            "patch_size": 16, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12, "pooling": "map", "mlp_activation": "gelu_tanh",
            "layer_norm_epsilon": 1e-06, "include_top": False,
        },
        "weights": {
            "webli": {
                "url": "hf://google/siglip2-base-patch16-224",
                "format": "hf", "image_size": 224, "num_classes": None, "top1": 78.2,
                "top1_source": "SigLIP 2 paper, zero-shot ImageNet (B/16, 224)", "sha256": None,
                "size": None,
            },
        },
        "default_weights": "webli",
    },
    "siglip2_b16_naflex": {
        "description": (
            "SigLIP 2 B/16 NaFlex image tower (Tschannen et al., 2025): any aspect ratio up to "
            "256 patches; build it at keras_vit.naflex.naflex_size(image size) (its 16x16 "
            "position table is resized as transformers does); features, no head."
        ),
        "config": {
            "image_size": 256, "patch_size": 16, "hidden_dim": 768, "mlp_dim": 3072,
            "num_heads": 12, "num_layers": 12, "pooling": "map", "mlp_activation": "gelu_tanh",
            "layer_norm_epsilon": 1e-06, "include_top": False,
        },
        "weights": {
            "webli": {
                "url": "hf://google/siglip2-base-patch16-naflex",
                "format": "hf", "image_size": 256, "num_classes": None, "top1": None,
                "top1_source": "none for this file: the paper reports NaFlex per sequence length",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "webli",
    },
    "aimv2_l14": {
        "description": (
            "AIMv2 ViT-L/14 at 224 (Fini et al., 2025): autoregressive multimodal pre-training, "
            "RMSNorm, SwiGLU, no biases, average pooling; features, no head."
        ),
        "config": {
            "patch_size": 14, "hidden_dim": 1024, "num_layers": 24, "num_heads": 8,
            "mlp_dim": 2816, "pooling": "gap", "include_top": False, "layer_norm_epsilon": 1e-05,
            "norm_type": "rms_norm", "mlp_type": "swiglu", "patch_norm": True,
            "query_bias": False, "key_bias": False, "value_bias": False, "output_bias": False,
            "mlp_bias": False, "image_mean": (0.48145466, 0.4578275, 0.40821073),
            "image_std": (0.26862954, 0.26130258, 0.27577711),
        },
        "weights": {
            "apple_pt": {
                "url": "hf://timm/aimv2_large_patch14_224.apple_pt",
                "format": "timm", "image_size": 224, "num_classes": None, "top1": None,
                "top1_source": "none published for this file (the paper's are attentive probes)",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "apple_pt",
    },
    "eva02_b14": {
        "description": (
            "EVA-02 B/14 (Fang et al., 2023), masked image modelling on ImageNet-22k: axial 2-D "
            "RoPE on a learned table, SwiGLU with its inner norm, a class token beside average "
            "pooling; features, no head: a starting point for fine-tuning (num_classes=...)."
        ),
        "config": {
            "patch_size": 14, "hidden_dim": 768, "mlp_dim": 2048, "num_heads": 12, "num_layers": 12,
            "pooling": "gap", "class_token": True,
            "pooled_norm": True, "include_top": False, "mlp_activation": "gelu",
            "mlp_type": "swiglu", "mlp_inner_norm": True, "key_bias": False, "rope": "axial",
            "rope_theta": 10000.0, "rope_rotate_half": False, "rope_reference_grid": (16, 16),
            "image_mean": (0.48145466, 0.4578275, 0.40821073),
            "image_std": (0.26862954, 0.26130258, 0.27577711),
        },
        "weights": {
            "mim_in22k": {
                "url": "hf://timm/eva02_base_patch14_224.mim_in22k",
                "format": "timm", "image_size": 224, "num_classes": None, "top1": None,
                "top1_source": "none for this file: pre-training only, the paper's are fine-tuned",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "mim_in22k",
    },
    "pe_core_b16": {
        "description": (
            "Perception Encoder core B/16 (Bolya et al., 2025), the image tower of a CLIP model: "
            "axial 2-D RoPE with a learned table, a norm before the blocks, attention pooling "
            "(8 heads) over the class token and patches, then its 1024-wide projection as the "
            "head."
        ),
        "config": {
            "patch_size": 16, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12, "num_layers": 12,
            "num_classes": 1024, "pooling": "map", "class_token": True, "pooling_heads": 8,
            "layer_norm_epsilon": 1e-05, "mlp_activation": "gelu", "pre_norm": True,
            "patch_bias": False, "rope": "axial", "rope_theta": 10000.0,
            "rope_rotate_half": False, "rope_reference_grid": (14, 14), "rope_grid_offset": 1.0,
            "rope_grid_indexing": "xy", "image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5),
        },
        "weights": {
            "fb": {
                "url": "hf://timm/vit_pe_core_base_patch16_224.fb",
                "format": "timm", "image_size": 224, "num_classes": 1024, "top1": None,
                "top1_source": "zero-shot ImageNet: in the Perception Encoder paper, not recorded here",
                "sha256": None, "size": None,
            },
        },
        "default_weights": "fb",
    },
}
