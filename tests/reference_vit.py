"""An independent float64 NumPy forward pass of the original ViT, read straight from a file.

Written from the description of the original model (vit_jax's models_vit.py) and of each
checkpoint format; it shares no code with keras_vit. `reference_logits(path, images)`
returns what the checkpoint's own framework would compute for 0..255 NHWC images.
"""

import json
import math
import os
import re

import numpy as np
import scipy.ndimage
import scipy.special


def _read(path):
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k].astype(np.float64) for k in f.files}
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in load_file(path).items()}


def _google(w):
    """vit_jax / big_vision .npz -> neutral params (Flax layouts: x @ kernel)."""
    pre = "params/" if "params/embedding/kernel" in w else ""
    bv = bool(pre) or "pos_embedding" in w
    scanned = f"{pre}Transformer/encoderblock/LayerNorm_0/scale" in w
    attn, ln2, mlp = ("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0") if bv else (
        "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
    depth = (w[f"{pre}Transformer/encoderblock/LayerNorm_0/scale"].shape[0] if scanned else
             len({m.group(1) for m in (re.search(r"encoderblock_(\d+)/", k) for k in w) if m}))

    def block_param(i, name):
        if scanned:
            return w[f"{pre}Transformer/encoderblock/{name}"][i]
        return w[f"{pre}Transformer/encoderblock_{i}/{name}"]

    blocks = []
    for i in range(depth):
        g = lambda name: block_param(i, name)  # noqa: E731
        d, heads, hd = g(f"{attn}/query/kernel").shape
        blocks.append(dict(
            ln1=(g("LayerNorm_0/scale"), g("LayerNorm_0/bias")),
            q=(g(f"{attn}/query/kernel").reshape(d, -1), g(f"{attn}/query/bias").reshape(-1)),
            k=(g(f"{attn}/key/kernel").reshape(d, -1), g(f"{attn}/key/bias").reshape(-1)),
            v=(g(f"{attn}/value/kernel").reshape(d, -1), g(f"{attn}/value/bias").reshape(-1)),
            o=(g(f"{attn}/out/kernel").reshape(-1, d), g(f"{attn}/out/bias")),
            ln2=(g(f"{ln2}/scale"), g(f"{ln2}/bias")),
            fc1=(g(f"{mlp}/Dense_0/kernel"), g(f"{mlp}/Dense_0/bias")),
            fc2=(g(f"{mlp}/Dense_1/kernel"), g(f"{mlp}/Dense_1/bias")),
            heads=heads,
        ))
    kernel = w[f"{pre}embedding/kernel"]  # (p, p, C, D)
    p = kernel.shape[0]

    def patch(x):
        """A VALID conv with stride p = each (row, col, channel) patch dotted with the kernel."""
        b, hh, ww, c = x.shape[0], x.shape[1] // p, x.shape[2] // p, x.shape[3]
        patches = x.reshape(b, hh, p, ww, p, c).transpose(0, 1, 3, 2, 4, 5)  # (b, h, w, p, p, C)
        return patches.reshape(b, hh * ww, -1) @ kernel.reshape(-1, kernel.shape[-1])

    pos = w[f"{pre}pos_embedding"] if bv else w[f"{pre}Transformer/posembed_input/pos_embedding"]
    dense = lambda name: (w[f"{pre}{name}/kernel"], w[f"{pre}{name}/bias"]) if f"{pre}{name}/kernel" in w else None  # noqa: E731,E501
    return dict(
        patch=p, embed=patch, bias=w[f"{pre}embedding/bias"], cls=w.get(f"{pre}cls"),
        pos=pos, pos_before_cls=bv, blocks=blocks,
        norm=(w[f"{pre}Transformer/encoder_norm/scale"], w[f"{pre}Transformer/encoder_norm/bias"]),
        pre_logits=dense("pre_logits"), head=dense("head"),
        eps=1e-6, gelu=lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    )


def _torch_style(w, names, heads, eps):
    """timm / Hugging Face state dicts (PyTorch layouts: y = x @ W.T + b)."""
    lin = lambda key: (w[key + ".weight"].T, w[key + ".bias"])  # noqa: E731
    conv = w[names["conv"] + ".weight"]  # (D, C, p, p)
    p = conv.shape[-1]

    def embed(x):
        b, hh, ww, c = x.shape[0], x.shape[1] // p, x.shape[2] // p, x.shape[3]
        patches = x.reshape(b, hh, p, ww, p, c).transpose(0, 1, 3, 5, 2, 4)  # (b, h, w, C, p, p)
        return patches.reshape(b, hh * ww, -1) @ conv.reshape(conv.shape[0], -1).T

    blocks = []
    for i in range(names["depth"]):
        get = lambda part: names["block"](i, part)  # noqa: E731
        if names.get("fused"):
            qkv_w, qkv_b = w[get("qkv") + ".weight"], w[get("qkv") + ".bias"]
            d = qkv_w.shape[1]
            q, k, v = ((qkv_w[j * d:(j + 1) * d].T, qkv_b[j * d:(j + 1) * d]) for j in range(3))
        else:
            q, k, v = lin(get("q")), lin(get("k")), lin(get("v"))
        blocks.append(dict(
            ln1=(w[get("ln1") + ".weight"], w[get("ln1") + ".bias"]), q=q, k=k, v=v,
            o=lin(get("o")), ln2=(w[get("ln2") + ".weight"], w[get("ln2") + ".bias"]),
            fc1=lin(get("fc1")), fc2=lin(get("fc2")), heads=heads,
        ))
    optional = lambda key: lin(key) if key + ".weight" in w else None  # noqa: E731
    return dict(
        patch=p, embed=embed, bias=w[names["conv"] + ".bias"], cls=w.get(names["cls"]),
        pos=w[names["pos"]], pos_before_cls=False, blocks=blocks,
        norm=(w[names["norm"] + ".weight"], w[names["norm"] + ".bias"]),
        pre_logits=optional(names["pre_logits"]), head=optional(names["head"]),
        eps=eps, gelu=lambda x: 0.5 * x * (1 + scipy.special.erf(x / math.sqrt(2))),
    )


def _timm(w, heads):
    depth = len({k.split(".")[1] for k in w if k.startswith("blocks.")})
    parts = dict(qkv="attn.qkv", o="attn.proj", ln1="norm1", ln2="norm2", fc1="mlp.fc1", fc2="mlp.fc2")
    names = dict(conv="patch_embed.proj", cls="cls_token", pos="pos_embed", norm="norm",
                 pre_logits="pre_logits.fc", head="head", depth=depth, fused=True,
                 block=lambda i, part: f"blocks.{i}.{parts[part]}")
    return _torch_style(w, names, heads, 1e-6)


def _hf(w, config):
    v = "vit." if "vit.embeddings.cls_token" in w else ""
    parts = dict(q="attention.attention.query", k="attention.attention.key",
                 v="attention.attention.value", o="attention.output.dense", ln1="layernorm_before",
                 ln2="layernorm_after", fc1="intermediate.dense", fc2="output.dense")
    names = dict(conv=f"{v}embeddings.patch_embeddings.projection", cls=f"{v}embeddings.cls_token",
                 pos=f"{v}embeddings.position_embeddings", norm=f"{v}layernorm",
                 pre_logits=f"{v}pooler.dense", head="classifier",
                 depth=config["num_hidden_layers"],
                 block=lambda i, part: f"{v}encoder.layer.{i}.{parts[part]}")
    return _torch_style(w, names, config["num_attention_heads"], config.get("layer_norm_eps", 1e-12))


def read_reference(path, num_heads=None):
    """Reads a checkpoint file into the neutral parameter dict used by `forward`."""
    w = _read(path)
    if any(k.endswith("embedding/kernel") for k in w):
        return _google(w)
    if "patch_embed.proj.weight" in w:
        return _timm(w, num_heads)
    with open(os.path.join(os.path.dirname(path), "config.json")) as f:
        return _hf(w, json.load(f))


def _layer_norm(x, scale_bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale_bias[0] + scale_bias[1]


def _resample_grid(pos_grid, new_grid):
    """vit_jax's way: scipy zoom, order 1, over the (h, w) grid."""
    h, w, _ = pos_grid.shape
    return scipy.ndimage.zoom(pos_grid, (new_grid[0] / h, new_grid[1] / w, 1), order=1)


def forward(params, images):
    """(B, H, W, C) pixels 0..255 -> logits (or pre-head features without a head)."""
    x = np.asarray(images, np.float64) / 127.5 - 1.0
    p = params["patch"]
    grid = (x.shape[1] // p, x.shape[2] // p)
    tokens = params["embed"](x) + params["bias"]
    pos = params["pos"][0]
    has_cls = params["cls"] is not None
    prefix = 0 if params["pos_before_cls"] or not has_cls else 1
    old = math.isqrt(pos.shape[0] - prefix)
    patch_pos = pos[prefix:].reshape(old, old, -1)
    if (old, old) != grid:
        patch_pos = _resample_grid(patch_pos, grid)
    patch_pos = patch_pos.reshape(grid[0] * grid[1], -1)
    if params["pos_before_cls"]:
        tokens = tokens + patch_pos
        if has_cls:
            cls = np.broadcast_to(params["cls"], (x.shape[0], 1, tokens.shape[-1]))
            tokens = np.concatenate([cls, tokens], axis=1)
    else:
        if has_cls:
            cls = np.broadcast_to(params["cls"], (x.shape[0], 1, tokens.shape[-1]))
            tokens = np.concatenate([cls, tokens], axis=1)
        tokens = tokens + np.concatenate([pos[:prefix], patch_pos])
    eps, gelu = params["eps"], params["gelu"]
    for blk in params["blocks"]:
        y = _layer_norm(tokens, blk["ln1"], eps)
        b, n, d = y.shape
        heads = blk["heads"]
        split = lambda t: t.reshape(b, n, heads, -1).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(y @ blk[name][0] + blk[name][1]) for name in ("q", "k", "v"))
        attn = scipy.special.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]), axis=-1)
        y = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, -1)
        tokens = tokens + y @ blk["o"][0] + blk["o"][1]
        y = _layer_norm(tokens, blk["ln2"], eps)
        y = gelu(y @ blk["fc1"][0] + blk["fc1"][1]) @ blk["fc2"][0] + blk["fc2"][1]
        tokens = tokens + y
    tokens = _layer_norm(tokens, params["norm"], eps)
    out = tokens[:, 0] if has_cls else tokens.mean(axis=1)
    if params["pre_logits"] is not None:
        out = np.tanh(out @ params["pre_logits"][0] + params["pre_logits"][1])
    if params["head"] is not None:
        out = out @ params["head"][0] + params["head"][1]
    return out


def reference_logits(path, images, num_heads=None):
    """Logits of the checkpoint at `path` for 0..255 NHWC `images`, in float64."""
    return forward(read_reference(path, num_heads), images)


def _gelu(kind):
    if kind == "quick_gelu":
        return lambda x: x * scipy.special.expit(1.702 * x)
    if kind == "gelu_tanh":
        return lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return lambda x: 0.5 * x * (1 + scipy.special.erf(x / math.sqrt(2)))


def _sincos_row(row, col, width, temperature=10_000.0):
    """big_vision's fixed 2-D embedding of one patch: sin and cos of its column, then of
    its row, at width / 4 geometrically spaced frequencies from 1 to 1 / temperature."""
    quarter = width // 4
    values = []
    for coordinate in (col, row):
        angles = [coordinate * temperature ** (-k / (quarter - 1)) for k in range(quarter)]
        values += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
    return values


def _position_table(w, c, grid, width, prefix):
    """(prefix + h * w, D) of the `position_embedding` kind: "learned" (the table),
    "learned_2d" (the paper's X and Y embeddings of D / 2 each, concatenated), "sincos_2d"
    (fixed; prefix positions zero) or "none" (zeros)."""
    kind = c.get("position_embedding", "learned")
    if kind == "learned":
        return w["position_embedding/embedding"][0]
    rows = []
    if kind == "learned_2d":
        rows += list(w["position_embedding/prefix_embedding"]) if prefix else []
        for i in range(grid[0]):
            for j in range(grid[1]):
                rows.append(np.concatenate([w["position_embedding/row_embedding"][i],
                                            w["position_embedding/column_embedding"][j]]))
        return np.array(rows)
    if kind == "sincos_2d":
        rows = [[0.0] * width] * prefix
        rows += [_sincos_row(i, j, width) for i in range(grid[0]) for j in range(grid[1])]
        return np.array(rows)
    return np.zeros((prefix + grid[0] * grid[1], width))


def options_forward(w, c, images):
    """A float64 forward pass of a ViT with the zoo's options, from its weights named by
    Keras variable path (`w`) and its config (`c`), written from the papers' descriptions:
    per-channel normalisation, the kinds of position embedding, class token with or
    without a position (and with average pooling: EVA-02), register tokens
    after the class token (no position, dropped by pooling), a norm before the encoder,
    layer scale on both branches, exact / tanh / quick GELU, a norm after average pooling."""
    x = np.asarray(images, np.float64) / 255.0
    channels = x.shape[-1]
    mean = np.broadcast_to(np.asarray(c.get("image_mean") or 0.5, np.float64), (channels,))
    std = np.broadcast_to(np.asarray(c.get("image_std") or 0.5, np.float64), (channels,))
    x = (x - mean) / std
    kernel = w["patch_embedding/projection/kernel"]
    p = kernel.shape[0]
    b, gh, gw = x.shape[0], x.shape[1] // p, x.shape[2] // p
    patches = x.reshape(b, gh, p, gw, p, channels).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
    tokens = patches @ kernel.reshape(-1, kernel.shape[-1]) + w["patch_embedding/projection/bias"]
    token_pooling = c.get("pooling", "token") == "token"
    has_cls = token_pooling if c.get("class_token") is None else c["class_token"]
    pos = _position_table(w, c, (gh, gw), tokens.shape[-1],
                          int(has_cls and c.get("class_token_position", True)))
    cls = np.broadcast_to(w.get("class_token/token", np.zeros((1, 1, 1))), (b, 1, tokens.shape[-1]))
    if has_cls and c.get("class_token_position", True):
        tokens = np.concatenate([cls, tokens], axis=1) + pos
    else:
        tokens = tokens + pos
        if has_cls:
            tokens = np.concatenate([cls, tokens], axis=1)
    registers = c.get("num_register_tokens", 0)
    if registers:
        reg = np.broadcast_to(w["register_tokens/tokens"], (b, registers, tokens.shape[-1]))
        first = int(has_cls)
        tokens = np.concatenate([tokens[:, :first], reg, tokens[:, first:]], axis=1)
    eps = c.get("layer_norm_epsilon", 1e-6)
    norm = lambda t, name: _layer_norm(t, (w[f"{name}/gamma"], w[f"{name}/beta"]), eps)  # noqa: E731
    if c.get("pre_norm"):
        tokens = norm(tokens, "pre_norm")
    act = _gelu(c.get("mlp_activation") or ("gelu_tanh" if c.get("gelu_approximate", True) else "gelu"))
    for i in range(c["num_layers"]):
        g = lambda name: w[f"encoder_block_{i}/{name}"]  # noqa: E731,B023
        y = norm(tokens, f"encoder_block_{i}/attention_norm")
        n, heads = y.shape[1], c["num_heads"]
        proj = lambda name: (y @ g(f"attention/{name}/kernel").reshape(y.shape[-1], -1)  # noqa: E731,B023
                             + g(f"attention/{name}/bias").reshape(-1))
        split = lambda t: t.reshape(b, n, heads, -1).transpose(0, 2, 1, 3)  # noqa: E731,B023
        q, k, v = (split(proj(name)) for name in ("query", "key", "value"))
        attn = scipy.special.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]), axis=-1)
        y = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, -1)
        y = y @ g("attention/attention_output/kernel").reshape(-1, y.shape[-1]) + g("attention/attention_output/bias")
        scaled = c.get("layer_scale_init") is not None
        tokens = tokens + (y * g("attention_scale") if scaled else y)
        y = norm(tokens, f"encoder_block_{i}/mlp_norm")
        y = act(y @ g("mlp_dense_1/kernel") + g("mlp_dense_1/bias")) @ g("mlp_dense_2/kernel") + g("mlp_dense_2/bias")
        tokens = tokens + (y * g("mlp_scale") if scaled else y)
    prefix = int(has_cls) + registers
    if c.get("pooled_norm"):
        return norm(tokens[:, prefix:].mean(axis=1), "pooled_norm") @ w["head/kernel"] + w["head/bias"]
    tokens = norm(tokens, "encoder_norm")
    pooled = tokens[:, 0] if token_pooling else tokens[:, prefix:].mean(axis=1)
    return pooled @ w["head/kernel"] + w["head/bias"]
