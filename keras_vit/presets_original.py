"""The original ViT presets (Dosovitskiy et al., 2021; Steiner et al., 2021), as literal
data: the Google checkpoints (vit_jax `.npz`) of ViT-Ti, S, B, L and H, and timm's and
Hugging Face's conversions of some. `keras_vit.presets` describes the fields and names.

Top-1 sources: timm's results-imagenet.csv (its own evaluation of the same files) and the
google-research/vision_transformer README.
"""

ORIGINAL_PRESETS = {
    "ti16": {
        "description": "ViT-Ti/16: 12 layers, width 192, MLP 768, 3 heads, 16x16 patches.",
        "config": {
            "patch_size": 16, "hidden_dim": 192, "mlp_dim": 768, "num_heads": 3, "num_layers": 12,
        },
        "weights": {
            "augreg_in21k_ft_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 75.454,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 78.424,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
        },
        "default_weights": "augreg_in21k_ft_in1k",
    },
    "s16": {
        "description": "ViT-S/16: 12 layers, width 384, MLP 1536, 6 heads, 16x16 patches.",
        "config": {
            "patch_size": 16, "hidden_dim": 384, "mlp_dim": 1536, "num_heads": 6,
            "num_layers": 12,
        },
        "weights": {
            "augreg_in21k_ft_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 81.384,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 83.802,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
            "augreg_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 78.846,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/augreg/S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 81.116,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
        },
        "default_weights": "augreg_in21k_ft_in1k",
    },
    "s32": {
        "description": "ViT-S/32: 12 layers, width 384, MLP 1536, 6 heads, 32x32 patches.",
        "config": {
            "patch_size": 32, "hidden_dim": 384, "mlp_dim": 1536, "num_heads": 6,
            "num_layers": 12,
        },
        "weights": {
            "augreg_in21k_ft_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 75.994,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/augreg/S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 80.486,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
        },
        "default_weights": "augreg_in21k_ft_in1k",
    },
    "b16": {
        "description": "ViT-B/16: 12 layers, width 768, MLP 3072, 12 heads, 16x16 patches.",
        "config": {
            "patch_size": 16, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12,
        },
        "weights": {
            "augreg_in21k_ft_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 84.532,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 85.996,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
            "augreg_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 79.154,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 81.102,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg2_in21k_ft_in1k": {
                "url": "https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/resolve/main/model.safetensors",
                "format": "timm", "image_size": 224, "num_classes": 1000, "top1": 85.096,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "orig_in21k": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
            "orig_in21k_ft_in1k": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k%2Bimagenet2012/ViT-B_16-224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 81.786,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "orig_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k%2Bimagenet2012/ViT-B_16.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 84.2,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "hf_orig_in21k_ft_in1k": {
                "url": "https://huggingface.co/google/vit-base-patch16-224/resolve/main/model.safetensors",
                "format": "hf", "image_size": 224, "num_classes": 1000, "top1": 81.786,
                "top1_source": "timm results-imagenet.csv (same weights, orig_in21k_ft_in1k)",
                "sha256": None, "size": None,
                "config_url": "https://huggingface.co/google/vit-base-patch16-224/resolve/main/config.json",
            },
        },
        "default_weights": "augreg_in21k_ft_in1k",
    },
    "b32": {
        "description": "ViT-B/32: 12 layers, width 768, MLP 3072, 12 heads, 32x32 patches.",
        "config": {
            "patch_size": 32, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12,
        },
        "weights": {
            "augreg_in21k_ft_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 80.716,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 83.35,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
            "augreg_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 74.894,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 78.752,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "orig_in21k": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_32.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
            "orig_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k%2Bimagenet2012/ViT-B_32.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 81.79,
                "top1_source": "google-research/vision_transformer README", "sha256": None,
                "size": None,
            },
        },
        "default_weights": "augreg_in21k_ft_in1k",
    },
    "b8": {
        "description": "ViT-B/8: 12 layers, width 768, MLP 3072, 12 heads, 8x8 patches.",
        "config": {
            "patch_size": 8, "hidden_dim": 768, "mlp_dim": 3072, "num_heads": 12,
            "num_layers": 12,
        },
        "weights": {
            "augreg_in21k_ft_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 85.798,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
            "augreg2_in21k_ft_in1k": {
                "url": "https://huggingface.co/timm/vit_base_patch8_224.augreg2_in21k_ft_in1k/resolve/main/model.safetensors",
                "format": "timm", "image_size": 224, "num_classes": 1000, "top1": 86.218,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
        },
        "default_weights": "augreg_in21k_ft_in1k",
    },
    "l16": {
        "description": "ViT-L/16: 24 layers, width 1024, MLP 4096, 16 heads, 16x16 patches.",
        "config": {
            "patch_size": 16, "hidden_dim": 1024, "mlp_dim": 4096, "num_heads": 16,
            "num_layers": 24,
        },
        "weights": {
            "augreg_in21k_ft_in1k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 85.834,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 87.084,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
            "augreg_in21k": {
                "url": "https://storage.googleapis.com/vit_models/augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
            "orig_in21k": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k/ViT-L_16.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
            "orig_in21k_ft_in1k": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k%2Bimagenet2012/ViT-L_16-224.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 1000, "top1": 82.7,
                "top1_source": "google-research/vision_transformer README", "sha256": None,
                "size": None,
            },
            "orig_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k%2Bimagenet2012/ViT-L_16.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 85.07,
                "top1_source": "google-research/vision_transformer README", "sha256": None,
                "size": None,
            },
        },
        "default_weights": "augreg_in21k_ft_in1k",
    },
    "l32": {
        "description": (
            "ViT-L/32: 24 layers, width 1024, MLP 4096, 16 heads, 32x32 patches. No public 224 "
            "ImageNet-1k fine-tune: the default is the original one at 384."
        ),
        "config": {
            "patch_size": 32, "hidden_dim": 1024, "mlp_dim": 4096, "num_heads": 16,
            "num_layers": 24,
        },
        "weights": {
            "orig_in21k": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k/ViT-L_32.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
            "orig_in21k_ft_in1k_384": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k%2Bimagenet2012/ViT-L_32.npz",
                "format": "vit_jax", "image_size": 384, "num_classes": 1000, "top1": 81.51,
                "top1_source": "timm results-imagenet.csv", "sha256": None, "size": None,
            },
        },
        "default_weights": "orig_in21k_ft_in1k_384",
    },
    "h14": {
        "description": (
            "ViT-H/14: 32 layers, width 1280, MLP 5120, 16 heads, 14x14 patches. Only an "
            "ImageNet-21k checkpoint is public: the default has 21843 classes (fine-tune it with "
            "num_classes=...)."
        ),
        "config": {
            "patch_size": 14, "hidden_dim": 1280, "mlp_dim": 5120, "num_heads": 16,
            "num_layers": 32,
        },
        "weights": {
            "orig_in21k": {
                "url": "https://storage.googleapis.com/vit_models/imagenet21k/ViT-H_14.npz",
                "format": "vit_jax", "image_size": 224, "num_classes": 21843, "top1": None,
                "top1_source": None, "sha256": None, "size": None,
            },
        },
        "default_weights": "orig_in21k",
    },
}
