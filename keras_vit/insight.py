"""Looking inside a ViT: intermediate features, attention maps and attention rollout.

Everything here reads an existing `keras_vit.ViT` and shares its weights; the model's own
forward pass is left as it is (its fast attention paths included). Shapes use B = batch,
L = encoder blocks, T = tokens (the prefix tokens, then the h * w patch tokens in row-major
order), D = hidden size, (h, w) = the patch grid and (H, W) = the image size. The prefix
tokens are the class token, DeiT's distillation token and the register tokens, in that
order; the maps over the patch grid leave them out.

    features = insight.intermediate_model(vit, blocks=range(-4, 0), reshape=True)
    maps = insight.attention_rollout(vit, images)               # (B, h, w)
    overlay = insight.upsample_map(maps, vit.image_size)        # (B, H, W) in [0, 1]
"""

import collections.abc
import contextlib
import math
import numbers
import warnings

import keras
import numpy as np
from keras import ops

from keras_vit import arguments
from keras_vit import inputs as vit_inputs
from keras_vit.model import ViT


def _num_prefix_tokens(model):
    """How many tokens come before the patch tokens: class, distillation, registers."""
    _check_vit(model)
    return model.architecture.num_tokens_before_patches


def intermediate_model(model, blocks=(-1,), norm=False, reshape=False):
    """A functional `keras.Model` from the ViT's images to the tokens after `blocks`.

    Args:
        model: a `keras_vit.ViT`; the new model shares its layers and weights.
        blocks: an encoder block index or a sequence of them; negative indices count from
            the last block, e.g. `range(-4, 0)` for the last four.
        norm: True applies the model's final LayerNorm (the `encoder_norm` layer) to each
            output, as the model does after its last block. A model with
            `pooled_norm=True` normalises the pooled vector, not the tokens, so it has no
            token norm and refuses this.
        reshape: True drops the prefix tokens and returns the patch tokens as a grid.

    Returns:
        A model images (B, H, W, C) -> tokens (B, T, D), or (B, h, w, D) with `reshape`:
        one output for one block index, a list for a sequence.
    """
    _check_vit(model)
    if not _is_index(blocks) and (isinstance(blocks, (str, bytes)) or not isinstance(
            blocks, collections.abc.Iterable)):
        raise TypeError("blocks must be an encoder block index (an int) or a sequence of them, "
                        f"got {blocks!r} ({type(blocks).__name__}).")
    arguments.check_bool(norm=norm, reshape=reshape)
    indices = [blocks] if _is_index(blocks) else list(blocks)
    if not indices:
        raise ValueError("blocks must name at least one encoder block, got none.")
    if norm and model.pooled_norm:
        raise ValueError(
            f"{model.name} has pooled_norm=True: its final LayerNorm normalises the pooled "
            "vector, not the tokens, so there is no token norm to apply; use norm=False.")
    outputs = []
    for index in indices:
        x = _block(model, index).output
        if norm:
            x = model.get_layer("encoder_norm")(x)
        if reshape:
            grid_h, grid_w = model.grid_size
            x = ops.reshape(x[:, _num_prefix_tokens(model):], (-1, grid_h, grid_w, x.shape[-1]))
        outputs.append(x)
    return _side_model(model, outputs if len(outputs) > 1 else outputs[0], "intermediate")


def attention_model(model):
    """A functional `keras.Model` images (B, H, W, C) -> attention (B, L, heads, T, T).

    Each block's attention probabilities softmax(q k^T / sqrt(head_dim)) are recomputed
    from the block's input with its own `attention_norm` and query and key projections
    (rotated by the block's RoPE, if any), in float32. They do not depend on `keras_vit.config`'s attention implementation,
    which keeps choosing how the blocks themselves compute. `attention_maps` calls it
    eagerly on an array; its `predict` also takes a dataset.
    """
    _check_vit(model)
    maps = []
    for index in range(model.num_layers):
        block = _block(model, index)
        maps.append(_BlockAttention(block, name=f"{block.name}_attention_map")(block.input))
    return _side_model(model, ops.stack(maps, axis=1), "attention")


def _side_model(model, outputs, kind):
    """A model from `model`'s images to `outputs` that checks its images as `model` does:
    sharing the ViT's layers, a failed call must not leave their variables broken."""
    side = vit_inputs.CheckedModel(model.input, outputs, name=f"{model.name}_{kind}")
    side.include_preprocessing = model.include_preprocessing
    return side


class _BlockAttention(keras.layers.Layer):
    """An encoder block's attention probabilities from the block's input, with its own
    weights: (B, T, D) -> float32 (B, heads, T, T)."""

    def __init__(self, block, **kwargs):
        super().__init__(dtype=block.dtype_policy, **kwargs)
        self.block = block

    def call(self, x):
        attention = self.block.attention
        y = self.block.attention_norm(x)
        q = ops.cast(attention.query_dense(y), "float32")  # (B, T, heads, head_dim)
        k = ops.cast(attention.key_dense(y), "float32")
        q, k = attention.rotate_query_key(q, k, heads_axis=True)  # RoPE, as in the block
        scores = ops.einsum("bqnh,bknh->bnqk", q, k) / math.sqrt(attention.key_dim)
        return ops.softmax(scores, axis=-1)

    def compute_output_shape(self, input_shape):
        batch, tokens, _ = input_shape
        return (batch, self.block.num_heads, tokens, tokens)


def attention_maps(model, images, batch_size=32):
    """The attention probabilities of every block: an array of images (B, H, W, C), with
    the pixel values the model takes -> NumPy float32 (B, L, heads, T, T), rows summing
    to 1. Computed eagerly (nothing to compile), `batch_size` images at a time."""
    _check_vit(model)
    arguments.check_integer(batch_size, "batch_size")
    vit_inputs.check_batch_input(model, images)
    if not hasattr(images, "shape"):
        raise ValueError(f"attention_maps takes an array of images, got {type(images).__name__}.")
    side = attention_model(model)
    with _no_grad():
        maps = [ops.convert_to_numpy(side(images[start:start + batch_size]))
                for start in range(0, images.shape[0], batch_size)]
    return np.concatenate(maps)


def attention_rollout(model, images=None, discard_ratio=0.0, batch_size=32, attention=None):
    """Attention rollout (Abnar & Zuidema, 2020) of the class token: images -> (B, h, w).

    See `rollout_from_attention`; the model needs a class token (pooling="token", or
    class_token=True: EVA-02, PE).
    `attention`: the images' `attention_maps`, if computed already, instead of `images`.
    """
    _check_class_token(model)
    arguments.check_rate(discard_ratio=discard_ratio)
    return rollout_from_attention(_attention(model, images, attention, batch_size),
                                  _num_prefix_tokens(model), model.grid_size, discard_ratio)


def class_token_attention(model, images, batch_size=32):
    """The last block's attention of the class token over the patches, heads averaged:
    images -> (B, h, w), renormalised to sum to 1 over the patches (the prefix tokens
    are left out). The model needs a class token (pooling="token" or class_token=True)."""
    _check_class_token(model)
    attention = attention_maps(model, images, batch_size)[:, -1].mean(axis=1)  # (B, T, T)
    return _patch_map(attention[:, 0], _num_prefix_tokens(model), model.grid_size)


def rollout_from_attention(attention, num_prefix_tokens, grid_size, discard_ratio=0.0):
    """Attention rollout of token 0 (the class token), as in the ViT paper's Figure 6.

    Per block: the heads are averaged, the identity is added for the residual connection
    and the rows are renormalised to sum to 1; the blocks' matrices are multiplied from
    the first to the last (A_L ... A_1), and the class token's row is read over the patch
    tokens. The prefix tokens (class, distillation, registers) are left out of the map,
    which is renormalised to sum to 1 over the patches.

    Args:
        attention: (B, L, heads, T, T) attention probabilities (`attention_maps`).
        num_prefix_tokens: the tokens before the h * w patch tokens.
        grid_size: the patch grid (h, w).
        discard_ratio: the fraction of each head-averaged (T, T) matrix's entries, the
            smallest ones, set to 0 before the identity is added (vit-explain's filter
            for noisy maps); 0 keeps them all.

    Returns:
        (B, h, w) float64 rollout maps. Where the discarding leaves the class token no path
        to any patch (its rollout row only on the prefix tokens), the map is uniform, with a
        warning.
    """
    attention = np.asarray(attention, np.float64)
    if attention.ndim != 5 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError("attention must be (batch, layers, heads, tokens, tokens), got "
                         f"shape {attention.shape}.")
    arguments.check_rate(discard_ratio=discard_ratio)
    num_prefix_tokens = arguments.check_integer(num_prefix_tokens, "num_prefix_tokens")
    grid_size = arguments.pair(grid_size, "grid_size")
    fused = attention.mean(axis=2)  # (B, L, T, T)
    batch, layers, tokens, _ = fused.shape
    discard = int(discard_ratio * tokens * tokens)
    if discard:
        flat = fused.reshape(batch, layers, -1).copy()
        smallest = np.argsort(flat, axis=-1, kind="stable")[..., :discard]
        np.put_along_axis(flat, smallest, 0.0, axis=-1)
        fused = flat.reshape(fused.shape)
    fused = fused + np.eye(tokens)
    fused = fused / fused.sum(axis=-1, keepdims=True)
    rollout = np.broadcast_to(np.eye(tokens), (batch, tokens, tokens))
    for layer in range(layers):
        rollout = fused[:, layer] @ rollout
    return _patch_map(rollout[:, 0], num_prefix_tokens, grid_size)


def upsample_map(maps, image_size):
    """Bilinear upsampling of patch maps for overlays: (B, h, w) -> (B, H, W) in [0, 1].

    Pixel centres are aligned (half-pixel, as `jax.image.resize` and `tf.image.resize` do), edges
    clamped; each map is then rescaled to [0, 1] (a constant map becomes 0).
    """
    maps = np.asarray(maps, np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (batch, h, w), got shape {maps.shape}: "
                         "for a single map, pass `map[None]`.")
    height, width = arguments.pair(image_size, "image_size")
    maps = np.einsum("Hh,bhw,Ww->bHW", _bilinear_weights(maps.shape[1], height), maps,
                     _bilinear_weights(maps.shape[2], width))
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def _attention(model, images, attention, batch_size=32):
    """The attention maps of `images` (`attention_maps`), or `attention`, given instead,
    checked to be the model's (B, L, heads, T, T)."""
    if (images is None) == (attention is None):
        raise ValueError("Give the images or their attention maps (attention=), one of them.")
    arguments.check_integer(batch_size, "batch_size")
    if attention is None:
        return attention_maps(model, images, batch_size)
    attention = np.asarray(attention)
    tokens = _num_prefix_tokens(model) + model.grid_size[0] * model.grid_size[1]
    expected = (model.num_layers, model.num_heads, tokens, tokens)
    if attention.ndim != 5 or attention.shape[1:] != expected:
        raise ValueError(f"attention must be {model.name}'s attention maps, of shape (batch, "
                         f"{', '.join(map(str, expected))}), got {attention.shape}.")
    return attention


def _no_grad():
    """`torch.no_grad()` on PyTorch, where an eager call would record the backward graph."""
    if keras.backend.backend() != "torch":
        return contextlib.nullcontext()
    import torch

    return torch.no_grad()


def _bilinear_weights(old, new):
    """(new, old) linear interpolation weights with pixel centres aligned."""
    source = np.clip((np.arange(new) + 0.5) * (old / new) - 0.5, 0, old - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, old - 1)
    weights = np.zeros((new, old))
    np.add.at(weights, (np.arange(new), low), 1 - (source - low))
    np.add.at(weights, (np.arange(new), high), source - low)
    return weights


def _patch_map(row, num_prefix_tokens, grid_size):
    """(B, T) attention of one token -> (B, h, w) over the patches, summing to 1; uniform,
    with a warning, for a row with no weight on any patch."""
    patches = row[:, num_prefix_tokens:]
    if patches.shape[1] != grid_size[0] * grid_size[1]:
        raise ValueError(
            f"{row.shape[1]} tokens do not hold {num_prefix_tokens} prefix tokens and a "
            f"{tuple(grid_size)} patch grid.")
    total = patches.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    if empty.any():
        warnings.warn(f"The class token's map of image(s) {np.flatnonzero(empty).tolist()} has "
                      "no weight on any patch (in a rollout, a large discard_ratio can discard "
                      "all of it): their maps are uniform.", stacklevel=3)
    patches = np.divide(patches, total, out=np.full_like(patches, 1.0 / patches.shape[1]),
                        where=~empty[:, None])
    return patches.reshape(-1, *grid_size)


def _block(model, index):
    """The encoder block at `index` (negative counts from the last)."""
    depth = model.num_layers
    if not _is_index(index) or not -depth <= index < depth:
        raise ValueError(f"Block index {index!r} does not exist: {model.name} has {depth} "
                         f"encoder blocks (indices {-depth} to {depth - 1}).")
    return model.get_layer(f"encoder_block_{int(index) % depth}")


def _is_index(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_vit(model):
    if not isinstance(model, ViT):
        raise ValueError(f"Expected a keras_vit.ViT, got {type(model).__name__}.")


def _check_class_token(model):
    _check_vit(model)
    if not model.architecture.has_class_token:
        raise ValueError(
            f"{model.name} has no class token (pooling={model.pooling!r}): class-token "
            "attention and rollout need pooling='token' or class_token=True; "
            "`attention_maps` gives the attention of every token.")


# ----------------------------------------------------------------- the ViT paper's analysis


def patch_embedding_components(model, count=28):
    """The principal components of the patch-embedding filters (the ViT paper's Figure 7,
    left): the D filters of the (p, p, C, D) kernel, centred, decomposed by SVD.

    Returns (components (count, p, p, C), explained variance ratio (count,)); count is
    capped at min(D, p * p * C)."""
    _check_vit(model)
    if not arguments.is_int(count) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}.")
    kernel = ops.convert_to_numpy(model.get_layer("patch_embedding").projection.kernel)
    kernel = kernel.astype("float64")
    filters = kernel.reshape(-1, kernel.shape[-1]).T  # (D, p * p * C)
    filters = filters - filters.mean(axis=0)
    _, singular, components = np.linalg.svd(filters, full_matrices=False)
    count = min(count, len(singular))
    variance = singular**2 / np.sum(singular**2)
    return components[:count].reshape(count, *kernel.shape[:3]), variance[:count]


def position_embedding_similarity(model):
    """Cosine similarity between the position embeddings of every pair of patches (the ViT
    paper's Figure 7, centre): (h, w, h, w), entry [i, j] the similarity map of patch (i, j).
    Prefix-token positions (class, distillation) are left out. Any kind of table
    (`position_embedding` "learned", "learned_2d", "sincos_2d")."""
    _check_vit(model)
    if model.architecture.position_embedding == "none":
        raise ValueError("This model has no absolute position embedding (position_embedding="
                         "'none'), so there is no similarity to show.")
    table = ops.convert_to_numpy(model.get_layer("position_embedding").patch_table())
    table = table.astype("float64")
    table = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
    h, w = model.grid_size
    return (table @ table.T).reshape(h, w, h, w)


def mean_attention_distance(model, images=None, attention=None):
    """Mean attention distance in pixels per block and head (the ViT paper's Figure 7,
    right): for each patch query, the distance to every patch key weighted by its attention
    (renormalised over the patch keys), averaged over queries and images. `attention`: the
    images' `attention_maps`, if computed already, instead of `images`.

    Returns (layers, heads)."""
    _check_vit(model)
    maps = _attention(model, images, attention)
    prefix = _num_prefix_tokens(model)
    attention = maps[..., prefix:, prefix:].astype("float64")  # (B, L, H, N, N)
    attention = attention / np.maximum(attention.sum(-1, keepdims=True), 1e-12)
    h, w = model.grid_size
    ph, pw = model.patch_size
    rows, cols = np.meshgrid(np.arange(h) * ph, np.arange(w) * pw, indexing="ij")
    centres = np.stack([rows.ravel(), cols.ravel()], axis=-1).astype("float64")
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1)  # (N, N)
    return (attention * distance).sum(-1).mean(axis=(0, 3))
