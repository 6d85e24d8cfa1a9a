"""The ViT presets, as data: architectures and the pretrained weights each one has.

`PRESETS[name]` holds a `description`, the constructor arguments in `config`, a dict of
named `weights` (each with where it comes from and what it scores) and the name of the
`default_weights` that `ViT.from_preset(name)` loads.
"""

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

PRESETS = {
    name: {
        "description": (
            f"{long_name}: {layers} layers, width {hidden}, MLP {mlp}, {heads} heads, "
            f"{patch}x{patch} patches."
        ),
        "config": {
            "patch_size": patch,
            "hidden_dim": hidden,
            "mlp_dim": mlp,
            "num_heads": heads,
            "num_layers": layers,
        },
        "weights": {},
        "default_weights": None,
    }
    for name, (long_name, patch, hidden, mlp, heads, layers) in _ARCHITECTURES.items()
}


def list_presets():
    """Returns {preset name: description}."""
    return {name: preset["description"] for name, preset in PRESETS.items()}


def get_preset(name):
    """Returns the preset entry for `name`, or raises a ValueError listing the valid names."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(sorted(PRESETS))}."
        )
    return PRESETS[name]


def build_from_preset(cls, preset, weights="default", **overrides):
    """Builds `cls` (a ViT) from a preset name; see `ViT.from_preset`."""
    entry = get_preset(preset)
    if weights is None:
        return cls(**{**entry["config"], **overrides})
    raise ValueError(
        f"Preset {preset!r} has no pretrained weights yet; pass weights=None for a "
        "randomly initialised model."
    )
