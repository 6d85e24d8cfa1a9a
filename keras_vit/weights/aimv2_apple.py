"""Apple's own AIMv2 image encoders: the `apple/aimv2-*` hub repositories (loaded in
transformers with `trust_remote_code`) and ml-aim's PyTorch models.

Their `model.safetensors` is timm's AIMv2 layout under other names, which timm's own
conversion renames (`RENAMES`): `preprocessor.patchifier.{proj, norm}`,
`preprocessor.pos_embed`, `trunk.blocks.N.{norm_1, attn.qkv, attn.proj, norm_2,
mlp.fc1 (the gate), mlp.fc3 (the up), mlp.fc2}`, `trunk.post_trunk_norm`. Their config.json
is Apple's `AIMv2Config` (`hidden_size`, `num_attention_heads`, `image_size`,
`rms_norm_eps`, ...) and their preprocessor_config.json has the image mean and std. The
keys are renamed and read as timm's `aimv2_*`: the features are the average of the normed
tokens (timm's pooling; the encoders have no head). Errors name the renamed (timm) keys.
"""

from keras_vit.weights import timm
from keras_vit.weights.checkpoint import FORMAT_RESAMPLE_METHODS, image_size_pair, positive_int

# (Apple's key fragment, timm's), applied in this order, as timm's `_convert_aimv2` does.
RENAMES = (("norm_1", "norm1"), ("norm_2", "norm2"), ("preprocessor.patchifier.", "patch_embed."),
           ("preprocessor.pos_embed", "pos_embed"), ("trunk.", ""),
           ("post_trunk_norm.", "norm."), ("mlp.fc1", "mlp.fc1_g"), ("mlp.fc3", "mlp.fc1_x"))
MARKER = "preprocessor.patchifier.proj.weight"


def is_apple_aimv2(tensors):
    return MARKER in tensors


def timm_key(key):
    """Apple's key -> timm's."""
    for old, new in RENAMES:
        key = key.replace(old, new)
    return key


def convert(r, files):
    files = files or {}
    if "preprocessor.pos_embed" not in r.tensors:
        raise ValueError("This AIMv2 has no learned position table (preprocessor.pos_embed): "
                         "the native-resolution encoders' sinusoidal positions are not an "
                         "architecture keras_vit builds.")
    renamed = {timm_key(key): value for key, value in r.tensors.items()}
    if len(renamed) != len(r.tensors):
        raise ValueError("The file has keys that are the same once renamed as timm's AIMv2 keys "
                         "(e.g. both 'norm_1' and 'norm1'): not an AIMv2 checkpoint.")
    r.tensors, r.resample_method = renamed, FORMAT_RESAMPLE_METHODS["timm"]
    return timm.convert(r, {"config": _timm_config(files), "paths": files.get("paths", {})})


def _timm_config(files):
    """timm's config.json for what Apple's config.json and preprocessor_config.json say:
    the head count, the image size, the mean and std; the other fields are read from the
    keys, and an epsilon or activation keras_vit would not build is refused."""
    config, preprocessor = files.get("config") or {}, files.get("preprocessor") or {}
    if not isinstance(config, dict) or not isinstance(preprocessor, dict):
        raise ValueError("config.json and preprocessor_config.json must be objects.")
    if config.get("rms_norm_eps", 1e-5) != 1e-5:
        raise ValueError(f"config.json: rms_norm_eps {config['rms_norm_eps']!r}: keras_vit "
                         "reads AIMv2 with timm's 1e-5.")
    if config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json: hidden_act {config['hidden_act']!r}: AIMv2's SwiGLU "
                         "gate is SiLU.")
    args = {"num_classes": 0}
    if config.get("num_attention_heads") is not None:
        args["num_heads"] = positive_int(config["num_attention_heads"], "num_attention_heads")
    if config.get("image_size") is not None:
        args["img_size"] = list(image_size_pair(config["image_size"], "image_size"))
    pretrained = {key: preprocessor[name] for key, name in (("mean", "image_mean"),
                                                            ("std", "image_std"))
                  if name in preprocessor}
    return {"architecture": "aimv2", "model_args": args, "pretrained_cfg": pretrained}
