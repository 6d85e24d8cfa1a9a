"""Checkpoint files of a tiny ViT written from random weights in each format's exact layout
(vit_jax, big_vision, timm, Hugging Face), for the loading, download and fuzz tests."""

import numpy as np
import pytest

from tiny import TINY

# The tiny ViT's architecture, as the writers below lay it out.
D, HEADS, MLP, LAYERS = TINY["hidden_dim"], TINY["num_heads"], TINY["mlp_dim"], TINY["num_layers"]
PATCH, CLASSES = TINY["patch_size"], TINY["num_classes"]
GRID = TINY["image_size"] // PATCH


def google_params(seed=0, cls=True, representation=None, classes=CLASSES):
    """Random parameters of a tiny ViT in vit_jax's key names and Flax layouts."""
    rng = np.random.default_rng(seed)
    n = lambda *shape, s=0.2: rng.normal(0, s, shape).astype("float32")  # noqa: E731
    hd = D // HEADS
    p = {
        "embedding/kernel": n(PATCH, PATCH, 3, D, s=0.05), "embedding/bias": n(D),
        "Transformer/posembed_input/pos_embedding": n(1, int(cls) + GRID * GRID, D),
        "Transformer/encoder_norm/scale": 1 + n(D), "Transformer/encoder_norm/bias": n(D),
    }
    if cls:
        p["cls"] = n(1, 1, D)
    for i in range(LAYERS):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            p[f"{b}{ln}/scale"], p[f"{b}{ln}/bias"] = 1 + n(D), n(D)
        a = f"{b}MultiHeadDotProductAttention_1/"
        for name in ("query", "key", "value"):
            p[f"{a}{name}/kernel"], p[f"{a}{name}/bias"] = n(D, HEADS, hd), n(HEADS, hd)
        p[f"{a}out/kernel"], p[f"{a}out/bias"] = n(HEADS, hd, D), n(D)
        p[f"{b}MlpBlock_3/Dense_0/kernel"], p[f"{b}MlpBlock_3/Dense_0/bias"] = n(D, MLP), n(MLP)
        p[f"{b}MlpBlock_3/Dense_1/kernel"], p[f"{b}MlpBlock_3/Dense_1/bias"] = n(MLP, D), n(D)
    width = D
    if representation:
        p["pre_logits/kernel"], p["pre_logits/bias"] = n(D, representation), n(representation)
        width = representation
    if classes:
        p["head/kernel"], p["head/bias"] = n(width, classes), n(classes)
    return p


def write_vit_jax(path, p):
    np.savez(path, **p)
    return str(path)


def write_big_vision(path, p, scanned=False):
    """big_vision: params/ prefix, patch-only pos_embedding, optional scanned blocks."""
    rename = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
              "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}
    out = {}
    for key, value in p.items():
        if key == "Transformer/posembed_input/pos_embedding":
            out["params/pos_embedding"] = value[:, -GRID * GRID:]
            continue
        for old, new in rename.items():
            key = key.replace(old, new)
        out["params/" + key] = value
    if scanned:
        stacked = {}
        for key in [k for k in out if "encoderblock_" in k]:
            parts = key.split("/")
            parts[2] = "encoderblock"
            stacked.setdefault("/".join(parts), []).append(out.pop(key))
        out.update({k: np.stack(v) for k, v in stacked.items()})
    np.savez(path, **out)
    return str(path)


def write_timm(path, p):
    """A timm state dict in safetensors: PyTorch layouts and a fused qkv."""
    from safetensors.numpy import save_file

    t = {"patch_embed.proj.weight": p["embedding/kernel"].transpose(3, 2, 0, 1),
         "patch_embed.proj.bias": p["embedding/bias"],
         "pos_embed": p["Transformer/posembed_input/pos_embedding"],
         "norm.weight": p["Transformer/encoder_norm/scale"],
         "norm.bias": p["Transformer/encoder_norm/bias"]}
    if "cls" in p:
        t["cls_token"] = p["cls"]
    if "head/kernel" in p:
        t["head.weight"], t["head.bias"] = p["head/kernel"].T, p["head/bias"]
    for i in range(LAYERS):
        b, a = f"Transformer/encoderblock_{i}/", f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/"
        qkv = [p[f"{a}{n}/kernel"].reshape(D, D).T for n in ("query", "key", "value")]
        t[f"blocks.{i}.attn.qkv.weight"] = np.concatenate(qkv)
        t[f"blocks.{i}.attn.qkv.bias"] = np.concatenate(
            [p[f"{a}{n}/bias"].reshape(-1) for n in ("query", "key", "value")])
        t[f"blocks.{i}.attn.proj.weight"] = p[f"{a}out/kernel"].reshape(D, D).T
        t[f"blocks.{i}.attn.proj.bias"] = p[f"{a}out/bias"]
        for ours, theirs in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            t[f"blocks.{i}.{theirs}.weight"] = p[f"{b}{ours}/scale"]
            t[f"blocks.{i}.{theirs}.bias"] = p[f"{b}{ours}/bias"]
        for j in (0, 1):
            t[f"blocks.{i}.mlp.fc{j + 1}.weight"] = p[f"{b}MlpBlock_3/Dense_{j}/kernel"].T
            t[f"blocks.{i}.mlp.fc{j + 1}.bias"] = p[f"{b}MlpBlock_3/Dense_{j}/bias"]
    save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, str(path))
    return str(path)


def randomised_hf(model_cls, tmp_path, seed=0):
    """A transformers ViT with every parameter random, saved with save_pretrained."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=MLP, image_size=32, patch_size=PATCH, num_labels=CLASSES,
    )
    torch.manual_seed(seed)
    hf = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            scale = 1.0 if "layernorm" in name and name.endswith("weight") else 0.0
            param.copy_(scale + 0.2 * torch.randn_like(param))
    hf.save_pretrained(tmp_path, safe_serialization=True)
    return hf, str(tmp_path / "model.safetensors")


def hf_output(hf, images, pooled=False):
    import torch

    pixels = torch.from_numpy((images / 127.5 - 1.0).transpose(0, 3, 1, 2).astype("float32"))
    with torch.no_grad():
        out = hf(pixel_values=pixels)
    return (out.pooler_output if pooled else out.logits).numpy().astype("float64")


def write_hf(folder, p, layer_norm_eps=1e-12):
    """A Hugging Face `ViTForImageClassification` `model.safetensors` + `config.json` in
    `folder`, written by hand (no transformers needed) from vit_jax-style params `p`."""
    import json
    import os

    from safetensors.numpy import save_file

    hd_all = lambda a: a.reshape(D, -1).T  # noqa: E731  (D, heads, hd) -> (out, in)
    t = {"embeddings.patch_embeddings.projection.weight": p["embedding/kernel"].transpose(3, 2, 0, 1),
         "embeddings.patch_embeddings.projection.bias": p["embedding/bias"],
         "embeddings.cls_token": p["cls"],
         "embeddings.position_embeddings": p["Transformer/posembed_input/pos_embedding"],
         "layernorm.weight": p["Transformer/encoder_norm/scale"],
         "layernorm.bias": p["Transformer/encoder_norm/bias"],
         "classifier.weight": p["head/kernel"].T, "classifier.bias": p["head/bias"]}
    for i in range(LAYERS):
        b, h = f"Transformer/encoderblock_{i}/", f"encoder.layer.{i}."
        a = f"{b}MultiHeadDotProductAttention_1/"
        for name in ("query", "key", "value"):
            t[f"{h}attention.attention.{name}.weight"] = hd_all(p[f"{a}{name}/kernel"])
            t[f"{h}attention.attention.{name}.bias"] = p[f"{a}{name}/bias"].reshape(-1)
        t[f"{h}attention.output.dense.weight"] = p[f"{a}out/kernel"].reshape(D, D).T
        t[f"{h}attention.output.dense.bias"] = p[f"{a}out/bias"]
        t[f"{h}intermediate.dense.weight"] = p[f"{b}MlpBlock_3/Dense_0/kernel"].T
        t[f"{h}intermediate.dense.bias"] = p[f"{b}MlpBlock_3/Dense_0/bias"]
        t[f"{h}output.dense.weight"] = p[f"{b}MlpBlock_3/Dense_1/kernel"].T
        t[f"{h}output.dense.bias"] = p[f"{b}MlpBlock_3/Dense_1/bias"]
        for ours, theirs in (("LayerNorm_0", "layernorm_before"), ("LayerNorm_2", "layernorm_after")):
            t[f"{h}{theirs}.weight"], t[f"{h}{theirs}.bias"] = p[f"{b}{ours}/scale"], p[f"{b}{ours}/bias"]
    path = os.path.join(folder, "model.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, path)
    config = {"model_type": "vit", "architectures": ["ViTForImageClassification"],
              "hidden_size": D, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "intermediate_size": MLP, "image_size": PATCH * GRID, "patch_size": PATCH,
              "num_channels": 3, "hidden_act": "gelu", "layer_norm_eps": layer_norm_eps,
              "id2label": {str(i): f"class_{i}" for i in range(CLASSES)}}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return path
