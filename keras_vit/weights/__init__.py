"""Reads the public ViT checkpoint formats and loads them into a `keras_vit.ViT`.

The format is told from the keys, not the file name:

- "vit_jax" and "big_vision": Google's `.npz` files (`google.py`);
- "timm": a timm state dict in `.safetensors` (`timm.py`);
- "hf": Hugging Face ViT, MAE, DINOv2 (with registers) and CLIP image-tower
  `.safetensors`, with the `config.json` beside it when there is one (`huggingface.py`);
- "keras": a `.keras` file of a `keras_vit.ViT` (`keras_file.py`).

Files are read as hostile input (`files.py`), and the architecture read from a file is
checked against every tensor in it before a model is built (`checkpoint.py`); `loading.py`
assigns the arrays to a model's variables.
"""

import os

from keras_vit.weights import google, huggingface, keras_file, timm
from keras_vit.weights.checkpoint import Checkpoint, Reader, check_against_tensors
from keras_vit.weights.files import read_json, read_tensors
from keras_vit.weights.loading import apply_checkpoint, build_model, require_num_heads, targets

__all__ = ["Checkpoint", "apply_checkpoint", "build_model", "detect_format",
           "load_checkpoint", "read_tensors", "require_num_heads", "targets"]

# Keys that mean an architecture this ViT does not implement.
_UNSUPPORTED = {
    "MAPHead": "attention-pooling (MAP) heads",
    "fc_norm.": "timm's norm after pooling (fc_norm)",
    "reg_token": "register tokens",
    ".ls1.": "LayerScale",
    "q_norm.": "QK normalisation",
    "norm_pre.": "a pre-encoder norm",
    "attn_pool.": "attention pooling",
    "dist_token": "timm's distillation token (the Hugging Face DeiT file loads)",
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
            "vision_model.embeddings.patch_embedding.weight"} & keys or (
                "embeddings.patch_embedding.weight" in keys and "head.probe" in keys):
        return "hf"
    shown = ", ".join(sorted(keys)[:8])
    raise ValueError(
        "Unrecognised checkpoint: expected the keys of a vit_jax/big_vision .npz, a timm "
        f"or a Hugging Face ViT state dict; found {len(keys)} keys: {shown}, ..."
    )


def _hf_files(path):
    """The Hugging Face config.json and preprocessor_config.json beside `path`, if any."""
    folder = os.path.dirname(os.path.abspath(path))
    files = {}
    for key, name in (("config", "config.json"), ("preprocessor", "preprocessor_config.json")):
        if os.path.isfile(os.path.join(folder, name)):
            files[key] = read_json(os.path.join(folder, name), f"Hugging Face {name}")
    return files


def load_checkpoint(path):
    """Reads `path` and converts it; returns a `Checkpoint`.

    A `.safetensors` file in the Hugging Face format reads the `config.json` and
    `preprocessor_config.json` beside it when there are. Raises a ValueError naming the missing keys when the file lacks
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
                    f"{path!r} is a model with {feature} (key {key!r}), which the "
                    "original ViT architecture does not have."
                )
    reader = Reader(tensors, fmt)
    config = _CONVERTERS[fmt](reader, _hf_files(path) if fmt == "hf" else None)
    if reader.missing:
        listed = ", ".join(reader.missing[:10])
        raise ValueError(
            f"Checkpoint {path!r} ({fmt} format) lacks {len(reader.missing)} expected "
            f"key(s): {listed}{', ...' if len(reader.missing) > 10 else ''}."
        )
    unexpected = sorted(set(tensors) - reader.used - reader.ignorable)
    checkpoint = Checkpoint(path, fmt, reader.params, config, unexpected)
    check_against_tensors(checkpoint)
    return checkpoint
