"""Reads the public ViT checkpoint formats and loads them into a `keras_vit.ViT`.

The format is told from the keys, not the file name:

- "vit_jax" and "big_vision": Google's `.npz` files (`google.py`);
- "timm": a timm state dict in `.safetensors`, with timm's `config.json` beside it when
  there is one (`timm.py`): ViT, DeiT (distilled too), DeiT III, DINOv2 (with registers),
  CLIP, SigLIP, MAE and AIMv2; DINOv3 (`dinov3.py`); EVA-02 and Perception Encoder core
  (`eva.py`);
- "hf": Hugging Face ViT, MAE, DINOv2 (with registers), CLIP, SigLIP and AIMv2 image-tower
  `.safetensors`, with the `config.json` beside it when there is one (`huggingface.py`);
  DINOv3 (`dinov3.py`); Apple's own AIMv2 encoders (`aimv2_apple.py`);
- "keras": a `.keras` file of a `keras_vit.ViT` (`keras_file.py`).

Files are read as hostile input (`files.py`), and the architecture read from a file is
checked against every tensor in it before a model is built (`checkpoint.py`); `loading.py`
assigns the arrays to a model's variables.
"""

import os

from keras_vit.weights import aimv2_apple, dinov3, eva, google, huggingface, keras_file, timm
from keras_vit.weights.checkpoint import (
    MAX_IMAGE_SIDE, Checkpoint, Reader, check_against_tensors, file_config)
from keras_vit.weights.files import read_json, read_tensors
from keras_vit.weights.loading import (
    apply_checkpoint, build_model, default_include_top, require_num_heads, targets)

__all__ = ["Checkpoint", "apply_checkpoint", "build_model", "default_include_top", "detect_format",
           "load_checkpoint", "read_tensors", "require_num_heads", "targets"]

# Keys that mean an architecture this ViT does not implement.
_UNSUPPORTED = {
    "MAPHead": "big_vision's attention-pooling (MAP) head",
    "q_norm.": "QK normalisation",
}

_CONVERTERS = {"vit_jax": google.convert, "big_vision": google.convert,
               "timm": timm.convert, "hf": huggingface.convert}


def detect_format(tensors):
    """Returns "vit_jax", "big_vision", "timm" or "hf" from the keys of a checkpoint."""
    keys = set(tensors)
    if google.google_prefix(keys) is not None:
        return "big_vision" if google.is_big_vision(keys) else "vit_jax"
    if "patch_embed.proj.weight" in keys:
        return "timm"
    if {"embeddings.patch_embeddings.projection.weight",
            "vit.embeddings.patch_embeddings.projection.weight",
            "deit.embeddings.patch_embeddings.projection.weight",
            "vision_model.embeddings.patch_embedding.weight",
            "embeddings.patch_embedding.weight",  # CLIP / SigLIP towers saved alone
            "embeddings.patch_embeddings.weight",  # DINOv3
            "embeddings.patch_embed.weight",  # AIMv2
            "vision_model.embeddings.patch_embed.weight",  # a whole Aimv2Model
            aimv2_apple.MARKER} & keys:
        return "hf"
    shown = ", ".join(sorted(keys)[:8])
    raise ValueError(
        "Unrecognised checkpoint: expected the keys of a vit_jax/big_vision .npz, a timm "
        f"or a Hugging Face ViT state dict; found {len(keys)} keys: {shown}, ..."
    )


def _converter(fmt, tensors, files):
    """The conversion of a file of format `fmt` (DINOv3's, EVA's where the file is one)."""
    if fmt == "timm" and dinov3.is_timm_dinov3(tensors, files):
        return dinov3.convert_timm
    if fmt == "timm" and eva.is_timm_eva(tensors, files):
        return eva.convert_timm
    if fmt == "hf" and dinov3.is_hf_dinov3(tensors, files):
        return dinov3.convert_hf
    if fmt == "hf" and aimv2_apple.is_apple_aimv2(tensors):
        return aimv2_apple.convert
    return _CONVERTERS[fmt]


def _side_files(path, fmt):
    """The config.json (and for Hugging Face, preprocessor_config.json) beside `path`,
    if any, as {"config": ..., "preprocessor": ...}, with the paths they are read from
    (present or not) in "paths"; None for Google's formats."""
    if fmt not in ("hf", "timm"):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    names = {"config": "config.json"}
    if fmt == "hf":
        names["preprocessor"] = "preprocessor_config.json"
    files = {"paths": {key: os.path.join(folder, name) for key, name in names.items()}}
    for key, path in files["paths"].items():
        if os.path.isfile(path):
            files[key] = read_json(path, f"{fmt} {os.path.basename(path)}")
    return files


def load_checkpoint(path):
    """Reads `path` and converts it; returns a `Checkpoint` (the file's `ViTConfig` and its
    arrays by variable path).

    A `.safetensors` file reads the `config.json` beside it when there is one (and in the
    Hugging Face format, `preprocessor_config.json`). Raises a ValueError naming the missing keys when the file lacks
    some, the unsupported feature when it is another kind of model, or the first tensor
    that disagrees with the architecture read from the file.
    """
    if os.fspath(path).endswith(".keras"):
        return keras_file.load(path)
    tensors = read_tensors(path)
    fmt = detect_format(tensors)
    for key in tensors:
        for marker, feature in _UNSUPPORTED.items():
            if marker in key:
                raise ValueError(
                    f"{path!r} is a model with {feature} (key {key!r}), which "
                    "keras_vit does not build."
                )
    reader = Reader(tensors, fmt)
    files = _side_files(path, fmt)
    arch = _converter(fmt, tensors, files)(reader, files)
    if reader.missing:
        listed = ", ".join(reader.missing[:10])
        raise ValueError(
            f"Checkpoint {path!r} ({fmt} format) lacks {len(reader.missing)} expected "
            f"key(s): {listed}{', ...' if len(reader.missing) > 10 else ''}."
        )
    for name in ("image_size", "patch_size"):
        if max(arch[name]) > MAX_IMAGE_SIDE:
            raise ValueError(f"Checkpoint {path!r}: {name} {arch[name]} is too large.")
    unexpected = sorted(set(reader.tensors) - reader.used - reader.ignorable)
    checkpoint = Checkpoint(path, fmt, reader.params, file_config(arch), unexpected,
                            reader.resample_method, () if arch["num_heads"] else ("num_heads",))
    check_against_tensors(checkpoint)
    return checkpoint
