"""What the converters share: the `Checkpoint` they return, the reader that takes arrays
out of a file, and the check that the architecture read from a file agrees with every
tensor in it before any model is built (so the model is never larger than the file)."""

import dataclasses
import math
import re

import numpy as np

from keras_vit import arguments
from keras_vit.architecture import ViTConfig

# The ViT sizes: (width, heads), by timm's size names.
SIZES = {"tiny": (192, 3), "small": (384, 6), "medium": (512, 8), "base": (768, 12),
         "large": (1024, 16), "huge": (1280, 16), "so400m": (1152, 16)}
# Heads of the standard ViT widths (Ti, S, B, L, H); files without a head count (timm,
# HF without config.json) of another width need `num_heads=`.
HEADS_BY_WIDTH = dict(SIZES[name] for name in ("tiny", "small", "base", "large", "huge"))

# How each format's reference resamples the position embedding (vit_jax and big_vision:
# scipy zoom; timm: resample_abs_pos_embed; transformers: interpolate_pos_encoding).
FORMAT_RESAMPLE_METHODS = {"vit_jax": "bilinear", "big_vision": "bilinear",
                           "timm": "bicubic_antialias", "hf": "bicubic"}

# The families' known normalisations, (mean, std) in 0..1 units.
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

# Sane limits for numbers read from a file (the largest public ViTs are far below).
MAX_LAYERS = 512
MAX_IMAGE_SIDE = 16384


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint file converted to this package's layouts: the architecture it holds
    and its arrays by the model's variable paths.

    params: {variable path of the `ViT` (`v.path`, e.g. "encoder_block_0/mlp_dense_1/kernel"):
        (array, name in the file)}; layouts are the Keras ones (kernels (in, out);
        attention kernels (D, heads, head_dim) or a flat (D, D); the position embedding
        (1, P + h * w, D) with P the positioned prefix tokens).
    config: the `ViTConfig` the file holds (architecture, image size, pooling, epsilon,
        MLP activation, mean / std); `include_top=False` where the file has no head.
    unexpected: names in the file that were not used.
    resample_method: how the file's reference resamples the position embedding to another
        image size (a `keras_vit.layers.RESAMPLE_METHODS` name).
    undecided: the `ViTConfig` fields the file does not say ("num_heads" of a fused-qkv
        file of a nonstandard width without config.json): `config` holds a placeholder
        there and whoever builds the model must give them.
    """

    path: str
    format: str
    params: dict
    config: ViTConfig
    unexpected: list
    resample_method: str = "bilinear"
    undecided: tuple = ()

    @property
    def num_classes(self):
        """The classes of the file's head; None without one."""
        return self.config.num_classes if self.config.include_top else None


class Reader:
    """Takes arrays out of a checkpoint, recording what was used and what was missing.

    Every array that becomes a parameter must be a finite floating-point array without
    empty dimensions; `ndim` checks the rank where a converter relies on it.
    `resample_method` starts as the format's and a converter may change it.
    """

    def __init__(self, tensors, fmt):
        self.tensors, self.format = tensors, fmt
        self.params, self.used, self.missing, self.ignorable = {}, set(), [], set()
        self.resample_method = FORMAT_RESAMPLE_METHODS.get(fmt, "bilinear")

    def get(self, key, index=None, ndim=None):
        if key not in self.tensors:
            self.missing.append(key)
            return None
        self.used.add(key)
        array = self.tensors[key]
        if index is not None:
            if array.ndim == 0 or array.shape[0] <= index:
                raise ValueError(f"{key!r} of shape {array.shape} has no block {index}.")
            array = array[index]
        if ndim is not None and array.ndim != ndim:
            raise ValueError(f"{key!r} has shape {array.shape}, expected a {ndim}-D array.")
        return array

    def put(self, path, array, source):
        if array is None:
            return
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{source!r} has dtype {array.dtype}: weights must be floating point.")
        if 0 in array.shape:
            raise ValueError(f"{source!r} has an empty dimension (shape {array.shape}).")
        if not np.isfinite(array).all():
            raise ValueError(f"{source!r} holds NaN or infinite values.")
        self.params[path] = (array, source)

    def take(self, path, key, transform=None, index=None, ndim=None):
        array = self.get(key, index, ndim)
        if array is not None and transform is not None:
            array = transform(array)
        source = key if index is None else f"{key}[{index}]"
        self.put(path, array, source)
        return array


def count_blocks(keys, pattern):
    """The number of encoder blocks numbered 0..n-1 in `keys` (`pattern` captures the
    number); a ValueError if the numbers have gaps or exceed MAX_LAYERS."""
    found = {int(m.group(1)) for m in (re.match(pattern, k) for k in keys) if m}
    if not found:
        return 0
    if len(found) > MAX_LAYERS or max(found) >= MAX_LAYERS:
        raise ValueError(f"The checkpoint numbers its blocks up to {max(found)}: more than "
                         f"{MAX_LAYERS} blocks is not a ViT this package loads.")
    gaps = sorted(set(range(max(found) + 1)) - found)
    if gaps:
        raise ValueError(f"The checkpoint has encoder blocks up to {max(found)} but lacks "
                         f"block(s) {', '.join(map(str, gaps[:10]))}.")
    return max(found) + 1


def square_grid(tokens, has_class_token):
    """(prefix slots, (h, w)) for a position embedding of `tokens` rows (square grids)."""
    for prefix in (1, 0) if has_class_token else (0,):
        side = math.isqrt(max(tokens - prefix, 0))
        if side > 0 and side * side == tokens - prefix:
            return prefix, (side, side)
    raise ValueError(f"Cannot read a square patch grid from a {tokens}-token position embedding.")


def position_embedding(r, key, has_cls, grid=None, distilled=False):
    """Reads the position embedding into (1, P + h * w, D): P = 1 with a class token, 2
    with DeiT's distillation token too."""
    pos = r.get(key, ndim=3)
    if pos is None:
        return None
    if pos.shape[0] != 1:
        raise ValueError(f"{key!r} has shape {pos.shape}, expected (1, tokens, width).")
    expected = int(has_cls) + int(distilled)
    if grid is None and distilled:
        prefix, grid = expected, square_grid(pos.shape[1] - expected, False)[1]
    elif grid is None:
        prefix, grid = square_grid(pos.shape[1], has_cls)
    else:
        prefix = pos.shape[1] - grid[0] * grid[1]
    if prefix == 0 and has_cls and not distilled:
        # big_vision adds positions before prepending the class token, which is the
        # same as a zero position for it.
        pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    elif prefix != expected:
        raise ValueError(f"{key} of shape {pos.shape} does not fit a {grid} patch grid.")
    r.put("position_embedding/embedding", pos, key)
    return grid


def architecture(r, kernel, grid, num_layers, num_heads=None, mlp_dim=None, **rest):
    """The `ViTConfig` fields a converter read (the patch kernel in the Keras layout
    (ph, pw, C, D) fixes patch size, channels and width; `file_config` makes the config).
    `num_heads` is None when neither the file nor the standard widths say it."""
    if kernel is None:
        return {}
    query = r.params.get("encoder_block_0/attention/query/kernel", (np.zeros((0,)),))[0]
    num_heads = num_heads or (query.shape[1] if query.ndim == 3 else None)
    mlp_kernel = r.params.get("encoder_block_0/mlp_dense_1/kernel", (None,))[0]
    mlp_dim = mlp_dim or (None if mlp_kernel is None else mlp_kernel.shape[1])
    patch = tuple(int(s) for s in kernel.shape[:2])
    hidden = int(kernel.shape[3])
    grid = grid or (224 // patch[0], 224 // patch[1])
    return dict(
        image_size=(grid[0] * patch[0], grid[1] * patch[1]),
        patch_size=patch,
        hidden_dim=hidden,
        num_layers=int(num_layers),
        num_heads=int(num_heads) if num_heads else HEADS_BY_WIDTH.get(hidden),
        mlp_dim=int(mlp_dim or 4 * hidden),
        num_channels=int(kernel.shape[2]),
        **rest,
    )


def file_config(arch):
    """The `ViTConfig` of the architecture a converter read (`arch`: constructor arguments,
    None where the file does not say). A file without a head is `include_top=False`; one
    without a head count gets one head as a placeholder (its attention kernels are then
    checked by their flat sizes) and lists "num_heads" in `Checkpoint.undecided`."""
    d, heads = arch["hidden_dim"], arch["num_heads"] or 1
    if d % heads:
        raise ValueError(f"The checkpoint's width {d} is not divisible by its {heads} heads.")
    fields = {key: value for key, value in arch.items() if value is not None}
    fields["num_heads"] = heads
    if not arch.get("num_classes"):
        fields["include_top"] = False
    return ViTConfig(**fields)


def check_against_tensors(checkpoint):
    """Raises a ValueError unless every parameter the file's architecture needs is in the
    file with its shape (flat attention layouts allowed)."""
    config = checkpoint.config
    heads = "unknown" if "num_heads" in checkpoint.undecided else config.num_heads
    for key, shape in config.variable_shapes.items():
        if key not in checkpoint.params:
            continue  # reported as a missing key by the loader
        array, source = checkpoint.params[key]
        flat = array.ndim < len(shape) and array.size == math.prod(shape)
        if array.shape != shape and not flat:
            raise ValueError(
                f"Checkpoint {checkpoint.path!r} ({checkpoint.format} format) is inconsistent: "
                f"{source!r} has shape {array.shape} but the architecture read from the file "
                f"(width {config.hidden_dim}, {heads} heads, MLP {config.mlp_dim}) needs {shape}."
            )


def number_list(value, name):
    """`value` as a tuple of finite numbers; a ValueError naming `name` otherwise."""
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value):
        raise ValueError(f"{name} must be a list of numbers, got {value!r}.")
    return tuple(value)


def read_normalization(mean, std, names):
    """(mean, std) read from a config file, checked (a ValueError naming `names`, the
    two fields, where they are not plausible); None where it gives neither."""
    if mean is None and std is None:
        return None
    mean, std = number_list(mean, names[0]), number_list(std, names[1])
    arguments.check_normalization(mean, std, *names)
    return mean, std


def positive_int(value, name, limit=None, zero=False):
    """`value` from a config.json, checked to be an integer >= 1 (>= 0 with `zero`) and at
    most `limit`; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1) or (
            limit is not None and value > limit):
        raise ValueError(f"config.json: {name} must be a {'non-negative' if zero else 'positive'} "
                         f"integer{f' up to {limit}' if limit else ''}, got {value!r}.")
    return value


def image_size_pair(size, name):
    """A config.json image size (an int or a pair) as (height, width), each checked."""
    pair = list(size) if isinstance(size, (list, tuple)) else [size, size]
    if len(pair) != 2 or None in pair:
        raise ValueError(f"config.json: {name} must be an int or a pair, got {size!r}.")
    return tuple(positive_int(s, name, MAX_IMAGE_SIDE) for s in pair)
