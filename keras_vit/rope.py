"""2-D rotary position embedding (RoPE) of the patch tokens, in the forms the reference
models use, as constant tables computed once from the model's static patch grid.

A head's query or key vector x (head_dim H) of a patch token at coordinates (y, x) is
rotated pairwise by angles coordinate * frequency: with H / 4 frequencies
f_k = theta ** (-4 k / H), the H / 2 angles are [y f_0, ..., y f_{H/4-1}, x f_0, ...]
(channel order ("ij"), or x first ("xy")), laid out over the H channels either as two
halves (`rotate_half`: angle j pairs channels j and j + H / 2) or interleaved (angle j
pairs channels 2j and 2j + 1). Forms:

- "dinov3" (DINOv3; timm `RotaryEmbeddingDinoV3`, transformers `DINOv3ViTModel`): patch
  centres normalised to [-1, 1] per axis, ((i + 0.5 + offset) / size) * 2 - 1, and
  frequencies 2 pi f_k (periods theta ** (4 k / H), theta 100); halves.
- "axial" (EVA-02, Perception Encoder; timm `RotaryEmbeddingCat`): patch indices
  i + offset, rescaled by reference / size where a reference grid is given (the
  pre-training grid, timm's `ref_feat_shape`); theta 10000; interleaved.

The prefix tokens (class, registers) are not rotated: their table rows are the identity.
rotated = x * cos + swap(x) * sin, with swap a permutation of the channels (the halves
exchanged, or each pair) and the rotation's signs folded into the sin table, so the
rotation is two multiplications and an addition of constants that compilers fuse.
"""

import math

import numpy as np
from keras import ops

FORMS = ("dinov3", "axial")
DEFAULT_THETA = {"dinov3": 100.0, "axial": 10000.0}
DEFAULT_ROTATE_HALF = {"dinov3": True, "axial": False}
GRID_INDEXINGS = ("ij", "xy")


def rope_options(config):
    """The options of a `ViTConfig`'s RoPE as a JSON-friendly dict (what `ViTAttention`
    and `TransformerEncoderBlock` take as `rope=`), or None without RoPE."""
    if config.rope is None:
        return None
    theta = DEFAULT_THETA[config.rope] if config.rope_theta is None else config.rope_theta
    rotate_half = (DEFAULT_ROTATE_HALF[config.rope] if config.rope_rotate_half is None
                   else config.rope_rotate_half)
    reference = config.rope_reference_grid
    return {"form": config.rope, "grid": list(config.grid_size),
            "prefix_tokens": config.num_tokens_before_patches, "theta": float(theta),
            "rotate_half": bool(rotate_half),
            "reference_grid": None if reference is None else list(reference),
            "grid_offset": float(config.rope_grid_offset),
            "grid_indexing": config.rope_grid_indexing}


def patch_coordinates(options):
    """(h * w, 2) float64: each patch's two coordinates in channel order, row-major."""
    grid = options["grid"]
    reference = options.get("reference_grid") or grid
    offset = options.get("grid_offset", 0.0)
    axes = []
    for size, ref in zip(grid, reference):
        steps = np.arange(size, dtype=np.float64) + offset
        if options["form"] == "dinov3":
            axes.append((steps + 0.5) / size * 2.0 - 1.0)
        else:
            axes.append(steps / size * ref)
    y, x = np.meshgrid(axes[0], axes[1], indexing="ij")
    channels = (y, x) if options.get("grid_indexing", "ij") == "ij" else (x, y)
    return np.stack(channels, axis=-1).reshape(-1, 2)


def rope_tables(options, head_dim):
    """(cos, sin) float32 arrays of shape (prefix + h * w, head_dim): the prefix rows
    are the identity (cos 1, sin 0), and sin carries the rotation's signs (see `rotate`)."""
    if head_dim % 4:
        raise ValueError(f"RoPE needs a head_dim divisible by 4, got {head_dim}.")
    quarter = head_dim // 4
    frequencies = float(options["theta"]) ** (-4.0 * np.arange(quarter) / head_dim)
    if options["form"] == "dinov3":
        frequencies = frequencies * 2.0 * math.pi
    angles = (patch_coordinates(options)[:, :, None] * frequencies).reshape(-1, 2 * quarter)
    if options["rotate_half"]:
        angles = np.concatenate([angles, angles], axis=-1)
        signs = np.repeat([-1.0, 1.0], 2 * quarter)
    else:
        angles = np.repeat(angles, 2, axis=-1)
        signs = np.tile([-1.0, 1.0], 2 * quarter)
    prefix = options["prefix_tokens"]
    cos = np.concatenate([np.ones((prefix, head_dim)), np.cos(angles)])
    sin = np.concatenate([np.zeros((prefix, head_dim)), np.sin(angles) * signs])
    return cos.astype("float32"), sin.astype("float32")


def swap_permutation(head_dim):
    """(head_dim, head_dim) 0/1 matrix exchanging each interleaved pair of channels."""
    order = np.arange(head_dim).reshape(-1, 2)[:, ::-1].reshape(-1)
    return np.eye(head_dim, dtype="float32")[order].T


def rotate(x, cos, sin, rotate_half):
    """x (..., T, head_dim) (or (..., T, heads, head_dim) with tables (T, 1, head_dim))
    rotated: x * cos + swap(x) * sin; `cos`, `sin` are `rope_tables` arrays."""
    head_dim = x.shape[-1]
    if rotate_half:
        half = head_dim // 2
        swapped = ops.concatenate([x[..., half:], x[..., :half]], axis=-1)
    else:
        swapped = ops.matmul(x, ops.cast(swap_permutation(head_dim), x.dtype))
    return x * ops.cast(cos, x.dtype) + swapped * ops.cast(sin, x.dtype)
