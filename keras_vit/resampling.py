"""Resampling a learned position embedding to another patch grid, in float64 NumPy, the
way each checkpoint family's reference does it."""

import numpy as np


def _linear_resize_axis(x, size, axis):
    """Linear interpolation of `x` along `axis` to `size` samples, end points aligned."""
    old = x.shape[axis]
    if old == size:
        return x
    coords = np.linspace(0.0, old - 1, size) if size > 1 else np.zeros(1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, old - 1)
    frac = (coords - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


def _cubic(x, a):
    """Keys' cubic convolution kernel with parameter `a`, at distances `x`."""
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _bicubic_weights(old, new):
    """(new, old) weights of torch's bicubic resize: a = -0.75, pixel centres aligned
    (align_corners=False), the 4 taps clamped to the border."""
    source = (np.arange(new) + 0.5) * (old / new) - 0.5
    base = np.floor(source)
    weights = np.zeros((new, old))
    for tap in (-1, 0, 1, 2):
        index = np.clip(base + tap, 0, old - 1).astype(int)
        np.add.at(weights, (np.arange(new), index), _cubic(source - base - tap, -0.75))
    return weights


def _antialias_bicubic_weights(old, new):
    """(new, old) weights of torch's antialiased bicubic resize (PIL's): a = -0.5, the
    kernel stretched by the downsampling factor (not for upsampling), cut at the border
    and renormalised."""
    scale = old / new
    stretch = max(scale, 1.0)
    centres = (np.arange(new) + 0.5) * scale
    weights = _cubic((np.arange(old) + 0.5 - centres[:, None]) / stretch, -0.5)
    return weights / weights.sum(axis=1, keepdims=True)


def _antialias_bilinear_weights(old, new):
    """(new, old) weights of torch's antialiased bilinear resize (align_corners=False): the
    triangle kernel stretched by the downsampling factor (not for upsampling), cut at the
    border and renormalised, as SigLIP 2's NaFlex resizes its position table."""
    scale = old / new
    stretch = max(scale, 1.0)
    centres = (np.arange(new) + 0.5) * scale
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(old) + 0.5 - centres[:, None]) / stretch)
    return weights / weights.sum(axis=1, keepdims=True)


_RESAMPLE_WEIGHTS = {"bicubic": _bicubic_weights, "bicubic_antialias": _antialias_bicubic_weights,
                     "bilinear_antialias": _antialias_bilinear_weights}
RESAMPLE_METHODS = ("bilinear", *_RESAMPLE_WEIGHTS)


def resample_position_embedding(embedding, old_grid, new_grid, num_prefix_tokens=1,
                                method="bilinear"):
    """Resamples a (1, P + h * w, D) position embedding to a new (h', w') patch grid.

    The P prefix (class token) positions are kept as they are; the (h, w, D) patch grid
    is resized per axis in float64, the way the checkpoint's reference does it:

    - "bilinear": corners aligned, as the original vit_jax and big_vision do
      (`scipy.ndimage.zoom(..., order=1)`);
    - "bicubic": `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`,
      as Hugging Face transformers does;
    - "bicubic_antialias": the same with `antialias=True`, as timm and Hugging Face's
      DINOv2 with registers do;
    - "bilinear_antialias": `interpolate(mode="bilinear", align_corners=False,
      antialias=True)`, as transformers' SigLIP 2 (NaFlex) does per image.

    Returns a (1, P + h' * w', D) array of the input's dtype.
    """
    if method not in RESAMPLE_METHODS:
        raise ValueError(f"Unknown resampling method {method!r}: expected one of "
                         f"{', '.join(map(repr, RESAMPLE_METHODS))}.")
    embedding = np.asarray(embedding)
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    expected = num_prefix_tokens + old_grid[0] * old_grid[1]
    if embedding.ndim != 3 or embedding.shape[1] != expected:
        raise ValueError(
            f"Position embedding of shape {embedding.shape} does not match a {old_grid} "
            f"grid with {num_prefix_tokens} prefix tokens (expected (1, {expected}, D))."
        )
    if old_grid == new_grid:
        return embedding
    prefix = embedding[:, :num_prefix_tokens]
    grid = embedding[0, num_prefix_tokens:].reshape(*old_grid, -1).astype(np.float64)
    if method == "bilinear":
        grid = _linear_resize_axis(grid, new_grid[0], axis=0)
        grid = _linear_resize_axis(grid, new_grid[1], axis=1)
    else:
        rows = _RESAMPLE_WEIGHTS[method](old_grid[0], new_grid[0])
        cols = _RESAMPLE_WEIGHTS[method](old_grid[1], new_grid[1])
        grid = np.einsum("ih,hwd->iwd", rows, grid, optimize=True)
        grid = np.einsum("jw,iwd->ijd", cols, grid, optimize=True)
    grid = grid.reshape(1, new_grid[0] * new_grid[1], -1).astype(embedding.dtype)
    return np.concatenate([prefix, grid], axis=1)
