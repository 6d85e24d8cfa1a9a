"""Reads the public ViT checkpoint formats and loads them into a `keras_vit.ViT`.

The format is told from the keys, not the file name:

- "vit_jax": google-research/vision_transformer `.npz` (the original and the AugReg
  checkpoints): Flax parameters joined with "/", e.g. `Transformer/encoderblock_0/...`.
- "big_vision": `.npz` with keys under `params/`; the position embedding `pos_embedding`
  covers the patches only (the class token gets no position), and a scanned model stacks
  its blocks under one `Transformer/encoderblock` with a leading layer axis.
- "timm": a timm state dict in `.safetensors` (PyTorch layouts, fused qkv).
- "hf": Hugging Face `ViTModel` / `ViTForImageClassification` `.safetensors`, with the
  `config.json` beside it when there is one.
- "keras": a `.keras` file of a `keras_vit.ViT` (e.g. the shipped Fashion-MNIST model).

Google's checkpoints were trained with the tanh-approximate GELU and LayerNorm epsilon
1e-6, timm's with exact GELU and 1e-6, Hugging Face's with exact GELU and the config's
`layer_norm_eps` (1e-12); `Checkpoint.config` carries these along with the architecture.
"""

import dataclasses
import json
import math
import os
import re
import warnings
import zipfile

import numpy as np

from keras_vit import layers as vit_layers

# Heads of the standard widths; files without a head count (timm, HF without config.json)
# fall back on this table, then on 64-wide heads.
_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}

# Keys that mean an architecture this ViT does not implement.
_UNSUPPORTED = {
    "MAPHead": "attention-pooling (MAP) heads",
    "fc_norm.": "timm's norm after pooling (fc_norm)",
    "reg_token": "register tokens",
    ".ls1.": "LayerScale",
    "q_norm.": "QK normalisation",
    "norm_pre.": "a pre-encoder norm",
    "attn_pool.": "attention pooling",
}


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint file converted to this package's layouts.

    params: {canonical key: (array, name in the file)}; layouts are the Keras ones
        (kernels (in, out); attention kernels (D, heads, head_dim) or a flat (D, D);
        position embedding (1, P + h * w, D) with P = 1 class-token slot when pooling
        is "token").
    config: ViT constructor arguments read from the file (architecture, image_size,
        pooling, num_classes or None without a head, epsilon, GELU flavour).
    unexpected: names in the file that were not used.
    """

    path: str
    format: str
    params: dict
    config: dict
    unexpected: list


# ----------------------------------------------------------------------------- reading


def read_tensors(path):
    """Returns {key: array} of a `.npz` or `.safetensors` file (told apart by its bytes)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04":
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        return _read_safetensors(path)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise ValueError(
            f"Could not read the checkpoint {path!r} ({e}): the file is truncated, corrupt "
            "or not a .npz/.safetensors checkpoint. Delete it and download it again."
        ) from e


_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}


def _read_safetensors(path):
    """A NumPy-only safetensors reader: u64 header size, JSON header, raw tensor bytes."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("too short for a safetensors header")
        header_size = int.from_bytes(head, "little")
        if header_size > size - 8:
            raise ValueError(f"header of {header_size} bytes in a {size}-byte file")
        header = json.loads(f.read(header_size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    tensors = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        count = math.prod(info["shape"])
        if end > data.size or end - begin != count * dtype.itemsize:
            raise ValueError(f"tensor {key!r} lies outside the file's data")
        array = np.array(data[begin:end]).view(dtype).reshape(info["shape"])
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[key] = array
    del data
    return tensors


def detect_format(tensors):
    """Returns "vit_jax", "big_vision", "timm" or "hf" from the keys of a checkpoint."""
    keys = set(tensors)
    prefix = _google_prefix(keys)
    if prefix is not None:
        big_vision = (
            prefix.startswith("params/")
            or f"{prefix}pos_embedding" in keys
            or f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in keys
        )
        return "big_vision" if big_vision else "vit_jax"
    if "patch_embed.proj.weight" in keys:
        return "timm"
    if {"embeddings.patch_embeddings.projection.weight",
            "vit.embeddings.patch_embeddings.projection.weight"} & keys:
        return "hf"
    shown = ", ".join(sorted(keys)[:8])
    raise ValueError(
        "Unrecognised checkpoint: expected the keys of a vit_jax/big_vision .npz, a timm "
        f"or a Hugging Face ViT state dict; found {len(keys)} keys: {shown}, ..."
    )


def _google_prefix(keys):
    """The prefix ("", "params/", "opt/target/") in front of `embedding/kernel`, or None."""
    found = [k[: -len("embedding/kernel")] for k in keys if k.endswith("embedding/kernel")]
    found = [p for p in found if p == "" or p.endswith("/")]
    return min(found, key=len) if found else None


def load_checkpoint(path):
    """Reads `path` and converts it; returns a `Checkpoint`.

    A `.safetensors` file in the Hugging Face format reads the `config.json` beside it
    when there is one. Raises a ValueError naming the missing keys when the file lacks
    some, or the unsupported feature when it is another kind of model.
    """
    if os.fspath(path).endswith(".keras"):
        return _load_keras_file(path)
    tensors = read_tensors(path)
    fmt = detect_format(tensors)
    for key in tensors:
        for marker, feature in _UNSUPPORTED.items():
            if marker in key:
                raise ValueError(
                    f"{path!r} is a model with {feature} (key {key!r}), which the "
                    "original ViT architecture does not have."
                )
    hf_config = None
    config_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if fmt == "hf" and os.path.isfile(config_path):
        with open(config_path) as f:
            hf_config = json.load(f)
    reader = _Reader(tensors, fmt)
    convert = {"vit_jax": _convert_google, "big_vision": _convert_google,
               "timm": _convert_timm, "hf": _convert_hf}[fmt]
    config = convert(reader, hf_config)
    if reader.missing:
        listed = ", ".join(reader.missing[:10])
        raise ValueError(
            f"Checkpoint {path!r} ({fmt} format) lacks {len(reader.missing)} expected "
            f"key(s): {listed}{', ...' if len(reader.missing) > 10 else ''}."
        )
    unexpected = sorted(set(tensors) - reader.used - reader.ignorable)
    return Checkpoint(path, fmt, reader.params, config, unexpected)


def _load_keras_file(path):
    """A `.keras` file of a keras_vit ViT as a `Checkpoint` (its own config and weights)."""
    import keras

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # a corrupt zip, a missing custom object, ...
        raise ValueError(f"Could not load the Keras model file {path!r}: {e}") from e
    if not hasattr(model, "grid_size") or not hasattr(model, "pooling"):
        raise ValueError(f"{path!r} holds a {type(model).__name__}, not a keras_vit ViT.")
    config = model.get_config()
    for key in ("name", "trainable", "dtype", "include_top"):
        config.pop(key, None)
    if not model.include_top:
        config["num_classes"] = None
    params = {
        key: (keras.ops.convert_to_numpy(variable), variable.path)
        for key, variable in _targets(model).items()
    }
    return Checkpoint(os.fspath(path), "keras", params, config, [])


class _Reader:
    """Takes arrays out of a checkpoint, recording what was used and what was missing."""

    def __init__(self, tensors, fmt):
        self.tensors, self.format = tensors, fmt
        self.params, self.used, self.missing, self.ignorable = {}, set(), [], set()

    def get(self, key, index=None):
        if key not in self.tensors:
            self.missing.append(key)
            return None
        self.used.add(key)
        array = self.tensors[key]
        return array if index is None else array[index]

    def put(self, canonical, array, source):
        if array is not None:
            self.params[canonical] = (np.asarray(array), source)

    def take(self, canonical, key, transform=None, index=None):
        array = self.get(key, index)
        if array is not None and transform is not None:
            array = transform(array)
        source = key if index is None else f"{key}[{index}]"
        self.put(canonical, array, source)
        return array


def _square_grid(tokens, has_class_token):
    """(prefix slots, (h, w)) for a position embedding of `tokens` rows (square grids)."""
    for prefix in (1, 0) if has_class_token else (0,):
        side = math.isqrt(tokens - prefix)
        if side * side == tokens - prefix:
            return prefix, (side, side)
    raise ValueError(f"Cannot read a square patch grid from a {tokens}-token position embedding.")


def _position_embedding(r, key, has_cls, transform=None, grid=None):
    """Reads the position embedding into (1, P + h * w, D), P = 1 with a class token."""
    pos = r.get(key)
    if pos is None:
        return None
    pos = pos.reshape(1, -1, pos.shape[-1])
    if grid is None:
        prefix, grid = _square_grid(pos.shape[1], has_cls)
    else:
        prefix = pos.shape[1] - grid[0] * grid[1]
    if prefix == 0 and has_cls:
        # big_vision adds positions before prepending the class token, which is the
        # same as a zero position for it.
        pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    elif prefix != int(has_cls):
        raise ValueError(f"{key} of shape {pos.shape} does not fit a {grid} patch grid.")
    r.put("pos", pos, key)
    return grid


def _convert_google(r, _):
    keys = set(r.tensors)
    prefix = _google_prefix(keys)
    encoder = f"{prefix}Transformer/"
    scanned = f"{encoder}encoderblock/LayerNorm_0/scale" in keys
    if scanned:
        num_layers = r.tensors[f"{encoder}encoderblock/LayerNorm_0/scale"].shape[0]
    else:
        found = [re.match(rf"{re.escape(encoder)}encoderblock_(\d+)/", k) for k in keys]
        num_layers = 1 + max((int(m.group(1)) for m in found if m), default=-1)
    block_keys = [k for k in keys if k.startswith(f"{encoder}encoderblock")]
    names = {n for k in block_keys for n in k.split("/") if re.fullmatch(r"[A-Za-z]+_\d+", n)}
    norms = sorted(n for n in names if n.startswith("LayerNorm_"))
    attention = min((n for n in names if n.startswith("MultiHeadDotProductAttention_")),
                    default="MultiHeadDotProductAttention_1")
    mlp = min((n for n in names if n.startswith("MlpBlock_")), default="MlpBlock_3")
    norm_1, norm_2 = (norms + ["LayerNorm_0", "LayerNorm_2"][len(norms):])[:2]

    kernel = r.take("patch/kernel", f"{prefix}embedding/kernel")
    r.take("patch/bias", f"{prefix}embedding/bias")
    has_cls = f"{prefix}cls" in keys
    if has_cls:
        r.take("cls", f"{prefix}cls")
    pos_key = f"{prefix}pos_embedding"
    if pos_key not in keys:
        pos_key = f"{encoder}posembed_input/pos_embedding"
    grid = _position_embedding(r, pos_key, has_cls)
    for i in range(num_layers):
        block = f"{encoder}encoderblock/" if scanned else f"{encoder}encoderblock_{i}/"
        index = i if scanned else None
        parts = {
            "norm1": norm_1, "norm2": norm_2, "query": f"{attention}/query",
            "key": f"{attention}/key", "value": f"{attention}/value", "out": f"{attention}/out",
            "mlp1": f"{mlp}/Dense_0", "mlp2": f"{mlp}/Dense_1",
        }
        for part, name in parts.items():
            for leaf in ("scale", "bias") if part.startswith("norm") else ("kernel", "bias"):
                r.take(f"block{i}/{part}/{leaf}", f"{block}{name}/{leaf}", index=index)
    r.take("norm/scale", f"{encoder}encoder_norm/scale")
    r.take("norm/bias", f"{encoder}encoder_norm/bias")
    representation = _optional_dense(r, "pre_logits", f"{prefix}pre_logits/", "kernel")
    classes = _optional_dense(r, "head", f"{prefix}head/", "kernel")
    return _config(
        r, kernel, grid, num_layers, pooling="token" if has_cls else "gap", representation_size=representation,
        num_classes=classes, layer_norm_epsilon=1e-6, gelu_approximate=True,
    )


def _optional_dense(r, canonical, prefix, kernel_name, transform=None):
    """Reads an optional Dense (pre_logits, head); returns its width or None if absent."""
    if f"{prefix}{kernel_name}" not in r.tensors:
        return None
    kernel = r.take(f"{canonical}/kernel", f"{prefix}{kernel_name}", transform)
    r.take(f"{canonical}/bias", f"{prefix}bias")
    return int(kernel.shape[1])


def _config(r, kernel, grid, num_layers, num_heads=None, mlp_dim=None, **rest):
    """ViT constructor arguments from what a converter read."""
    if kernel is None:
        return {}
    query = r.params.get("block0/query/kernel", (np.zeros((0,)),))[0]
    num_heads = num_heads or (query.shape[1] if query.ndim == 3 else None)
    mlp_kernel = r.params.get("block0/mlp1/kernel", (None,))[0]
    mlp_dim = mlp_dim or (None if mlp_kernel is None else mlp_kernel.shape[1])
    patch = tuple(int(s) for s in kernel.shape[:2])
    hidden = int(kernel.shape[3])
    grid = grid or (224 // patch[0], 224 // patch[1])
    return dict(
        image_size=(grid[0] * patch[0], grid[1] * patch[1]),
        patch_size=patch,
        hidden_dim=hidden,
        num_layers=int(num_layers),
        num_heads=int(num_heads or _HEADS_BY_WIDTH.get(hidden, max(hidden // 64, 1))),
        mlp_dim=int(mlp_dim or 4 * hidden),
        num_channels=int(kernel.shape[2]),
        **rest,
    )


def _conv_kernel(weight):
    """PyTorch conv weight (D, C, ph, pw) -> Keras kernel (ph, pw, C, D)."""
    return weight.transpose(2, 3, 1, 0)


def _linear(weight):
    """PyTorch Linear weight (out, in) -> Keras kernel (in, out)."""
    return weight.T


def _count_layers(keys, pattern):
    found = [re.match(pattern, k) for k in keys]
    return 1 + max((int(m.group(1)) for m in found if m), default=-1)


def _convert_timm(r, _):
    keys = set(r.tensors)
    kernel = r.take("patch/kernel", "patch_embed.proj.weight", _conv_kernel)
    r.take("patch/bias", "patch_embed.proj.bias")
    has_cls = "cls_token" in keys
    if has_cls:
        r.take("cls", "cls_token")
    grid = _position_embedding(r, "pos_embed", has_cls)
    num_layers = _count_layers(keys, r"blocks\.(\d+)\.")
    for i in range(num_layers):
        b = f"blocks.{i}."
        qkv_weight, qkv_bias = r.get(f"{b}attn.qkv.weight"), r.get(f"{b}attn.qkv.bias")
        if qkv_weight is not None and qkv_bias is not None:
            for j, part in enumerate(("query", "key", "value")):
                rows = np.split(qkv_weight, 3)[j]
                r.put(f"block{i}/{part}/kernel", rows.T, f"{b}attn.qkv.weight ({part} rows)")
                r.put(f"block{i}/{part}/bias", np.split(qkv_bias, 3)[j], f"{b}attn.qkv.bias ({part})")
        for part, name in (("out", "attn.proj"), ("mlp1", "mlp.fc1"), ("mlp2", "mlp.fc2")):
            r.take(f"block{i}/{part}/kernel", f"{b}{name}.weight", _linear)
            r.take(f"block{i}/{part}/bias", f"{b}{name}.bias")
        for part, name in (("norm1", "norm1"), ("norm2", "norm2")):
            r.take(f"block{i}/{part}/scale", f"{b}{name}.weight")
            r.take(f"block{i}/{part}/bias", f"{b}{name}.bias")
    r.take("norm/scale", "norm.weight")
    r.take("norm/bias", "norm.bias")
    representation = _optional_dense(r, "pre_logits", "pre_logits.fc.", "weight", _linear)
    classes = _optional_dense(r, "head", "head.", "weight", _linear)
    return _config(
        r, kernel, grid, num_layers, pooling="token" if has_cls else "gap", representation_size=representation,
        num_classes=classes, layer_norm_epsilon=1e-6, gelu_approximate=False,
    )


def _convert_hf(r, hf_config):
    hf = hf_config or {}
    keys = set(r.tensors)
    p = "vit." if "vit.embeddings.patch_embeddings.projection.weight" in keys else ""
    emb = f"{p}embeddings."
    r.ignorable = {f"{emb}mask_token"}
    kernel = r.take("patch/kernel", f"{emb}patch_embeddings.projection.weight", _conv_kernel)
    r.take("patch/bias", f"{emb}patch_embeddings.projection.bias")
    r.take("cls", f"{emb}cls_token")
    grid = None
    if kernel is not None and "image_size" in hf:
        size = hf["image_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        grid = (size[0] // kernel.shape[0], size[1] // kernel.shape[1])
    grid = _position_embedding(r, f"{emb}position_embeddings", True, grid=grid)
    num_layers = _count_layers(keys, rf"{re.escape(p)}encoder\.layer\.(\d+)\.")
    for i in range(num_layers):
        b = f"{p}encoder.layer.{i}."
        dense = {
            "query": "attention.attention.query", "key": "attention.attention.key",
            "value": "attention.attention.value", "out": "attention.output.dense",
            "mlp1": "intermediate.dense", "mlp2": "output.dense",
        }
        for part, name in dense.items():
            r.take(f"block{i}/{part}/kernel", f"{b}{name}.weight", _linear)
            r.take(f"block{i}/{part}/bias", f"{b}{name}.bias")
        for part, name in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
            r.take(f"block{i}/{part}/scale", f"{b}{name}.weight")
            r.take(f"block{i}/{part}/bias", f"{b}{name}.bias")
    r.take("norm/scale", f"{p}layernorm.weight")
    r.take("norm/bias", f"{p}layernorm.bias")
    # ViTModel's pooler (Dense + tanh on the class token) is the original pre_logits layer.
    representation = _optional_dense(r, "pre_logits", f"{p}pooler.dense.", "weight", _linear)
    classes = _optional_dense(r, "head", "classifier.", "weight", _linear)
    act = hf.get("hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        raise ValueError(f"Unsupported hidden_act {act!r} in the Hugging Face config.")
    return _config(
        r, kernel, grid, num_layers,
        num_heads=hf.get("num_attention_heads"), mlp_dim=hf.get("intermediate_size"),
        pooling="token", representation_size=representation, num_classes=classes,
        layer_norm_epsilon=float(hf.get("layer_norm_eps", 1e-12)),
        gelu_approximate=act != "gelu",
    )


# ----------------------------------------------------------------------------- loading


def _targets(model):
    """{canonical key: variable} of a built ViT, in a fixed order (embedding first)."""
    targets = {}
    projection = model.get_layer("patch_embedding").projection
    targets["patch/kernel"], targets["patch/bias"] = projection.kernel, projection.bias
    if model.pooling == "token":
        targets["cls"] = model.get_layer("class_token").token
    targets["pos"] = model.get_layer("position_embedding").embedding
    for i in range(model.num_layers):
        block = model.get_layer(f"encoder_block_{i}")
        attention = block.attention
        norms = {"norm1": block.attention_norm, "norm2": block.mlp_norm}
        dense = {
            "query": attention._query_dense, "key": attention._key_dense,
            "value": attention._value_dense, "out": attention._output_dense,
            "mlp1": block.mlp_dense_1, "mlp2": block.mlp_dense_2,
        }
        for part, layer in norms.items():
            targets[f"block{i}/{part}/scale"] = layer.gamma
            targets[f"block{i}/{part}/bias"] = layer.beta
        for part, layer in dense.items():
            targets[f"block{i}/{part}/kernel"] = layer.kernel
            targets[f"block{i}/{part}/bias"] = layer.bias
    norm = model.get_layer("encoder_norm")
    targets["norm/scale"], targets["norm/bias"] = norm.gamma, norm.beta
    for name in ("pre_logits", "head"):
        if name == "pre_logits" and model.representation_size is None:
            continue
        if name == "head" and not model.include_top:
            continue
        layer = model.get_layer(name)
        targets[f"{name}/kernel"], targets[f"{name}/bias"] = layer.kernel, layer.bias
    return targets


def apply_checkpoint(model, checkpoint, load_head=True):
    """Assigns `checkpoint`'s arrays to `model`'s variables.

    The position embedding is resampled to the model's patch grid (see
    `keras_vit.layers.resample_position_embedding`). With `load_head=False` the head
    keeps its fresh (zero) initialisation. Raises a ValueError at the first array whose
    shape does not fit, naming the key in the file and both shapes.
    """
    ckpt_layers = checkpoint.config.get("num_layers")
    if ckpt_layers != model.num_layers:
        raise ValueError(
            f"Checkpoint {checkpoint.path!r} has {ckpt_layers} encoder blocks but the model "
            f"has num_layers={model.num_layers}: it is another architecture."
        )
    targets = _targets(model)
    if not load_head:
        targets = {k: v for k, v in targets.items() if not k.startswith("head/")}
    missing = [k for k in targets if k not in checkpoint.params]
    if missing:
        raise ValueError(
            f"Checkpoint {checkpoint.path!r} has no weights for {', '.join(missing)} "
            "(e.g. the model has a pre_logits layer the file lacks)."
        )
    values = {}
    for key, variable in targets.items():
        array, source = checkpoint.params[key]
        if key == "pos":
            old_grid = tuple(
                s // p for s, p in zip(checkpoint.config["image_size"], model.patch_size)
            )
            if array.shape[-1] == variable.shape[-1]:
                array = vit_layers.resample_position_embedding(
                    array, old_grid, model.grid_size, int(model.pooling == "token")
                )
        expected = tuple(variable.shape)
        if array.shape != expected:
            if array.ndim < len(expected) and array.size == math.prod(expected):
                array = array.reshape(expected)  # flat (D, D) attention kernels, (D,) biases
            else:
                raise ValueError(
                    f"Checkpoint {checkpoint.path!r} does not match the model: {source!r} "
                    f"has shape {array.shape} in the file but the model's {variable.path} "
                    f"expects {expected}."
                )
        values[key] = array
    for key, variable in targets.items():
        variable.assign(values[key].astype("float32"))


def build_model(cls, checkpoint, base_config=None, overrides=None):
    """Builds `cls(**config)` for `checkpoint` and loads it.

    The config is the file's (architecture, image size, pooling, head, epsilon, GELU),
    then `base_config` (a preset's architecture), then `overrides`. An `image_size`
    other than the file's resamples the position embedding; a `num_classes` other than
    the file's gets a fresh zero-initialised head; `include_top=False` drops the head.
    """
    overrides = dict(overrides or {})
    file_config = dict(checkpoint.config)
    file_classes = file_config.pop("num_classes", None)
    config = {**file_config, **(base_config or {}), **overrides}
    if config.get("pooling") != file_config.get("pooling"):
        raise ValueError(
            f"The checkpoint uses pooling={file_config.get('pooling')!r}; "
            f"pooling={config.get('pooling')!r} would not use its weights as trained."
        )
    include_top = config.get("include_top", True)
    load_head = False
    if include_top:
        if "num_classes" not in overrides:
            if file_classes is None:
                raise ValueError(
                    f"Checkpoint {checkpoint.path!r} has no classification head: pass "
                    "num_classes=... for a new zero-initialised head, or include_top=False."
                )
            config["num_classes"] = file_classes
        load_head = config["num_classes"] == file_classes
    model = cls(**config)
    apply_checkpoint(model, checkpoint, load_head=load_head)
    skipped = [
        source for key, (_, source) in checkpoint.params.items()
        if key.startswith("pre_logits/") and model.representation_size is None
    ]
    unexpected = checkpoint.unexpected + skipped
    if unexpected:
        shown = ", ".join(unexpected[:20])
        warnings.warn(
            f"{len(unexpected)} key(s) of {checkpoint.path!r} were not loaded: {shown}"
            f"{', ...' if len(unexpected) > 20 else ''}.",
            stacklevel=3,
        )
    return model
