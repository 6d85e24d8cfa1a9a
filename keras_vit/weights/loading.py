"""Loading a converted `Checkpoint` into a `keras_vit.ViT`: the variables it fills (by
path), the shape checks, position-embedding resampling and the new-head logic."""

import math
import warnings

import numpy as np

from keras_vit import layers as vit_layers


def targets(model):
    """{variable path: variable} of a built ViT's architecture (`ViTConfig.variable_shapes`),
    in the model's order."""
    variables = {variable.path: variable for variable in model.weights}
    return {path: variables[path] for path in model.architecture.variable_shapes}


# The per-axis tables of a "learned_2d" position embedding (`keras_vit.positions`).
AXIS_TABLES = ("position_embedding/row_embedding", "position_embedding/column_embedding")


def apply_checkpoint(model, checkpoint, load_head=True):
    """Assigns `checkpoint`'s arrays to `model`'s variables.

    The position embedding is resampled to the model's patch grid the way the
    checkpoint's reference does (see `keras_vit.layers.resample_position_embedding`); a
    "learned_2d" one has its row and column tables resampled along their axis.
    With `load_head=False` the head keeps its fresh (zero) initialisation. Raises a ValueError at the first array whose
    shape does not fit, naming the key in the file and both shapes.
    """
    ckpt_layers = checkpoint.config.num_layers
    if ckpt_layers != model.num_layers:
        raise ValueError(
            f"Checkpoint {checkpoint.path!r} has {ckpt_layers} encoder blocks but the model "
            f"has num_layers={model.num_layers}: it is another architecture."
        )
    variables = targets(model)
    if not load_head:
        variables = {k: v for k, v in variables.items() if not k.startswith(("head/", "head_dist/"))}
    missing = [k for k in variables if k not in checkpoint.params]
    if missing:
        raise ValueError(
            f"Checkpoint {checkpoint.path!r} has no weights for {', '.join(missing)} "
            "(e.g. the model has a pre_logits layer the file lacks)."
        )
    values = {}
    for key, variable in variables.items():
        array, source = checkpoint.params[key]
        if key == "position_embedding/embedding":
            old_grid = tuple(
                s // p for s, p in zip(checkpoint.config.image_size, model.patch_size)
            )
            if array.shape[-1] == variable.shape[-1]:
                array = vit_layers.resample_position_embedding(
                    array, old_grid, model.grid_size,
                    len(model.architecture.positioned_prefix_tokens),
                    method=checkpoint.resample_method,
                )
        elif key in AXIS_TABLES and array.ndim == 2 and array.shape[0] != variable.shape[0]:
            old, new = (array.shape[0], 1), (variable.shape[0], 1)  # one axis of the grid
            array = vit_layers.resample_position_embedding(
                array[None], old, new, 0, method=checkpoint.resample_method)[0]
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
        values[key] = _cast(checkpoint, array, source, variable)
    for key, variable in variables.items():
        variable.assign(values[key])


def _cast(checkpoint, array, source, variable):
    """`array` in the variable's dtype, or a ValueError where a finite value of the file
    (float64, say 1e300) becomes infinite in that dtype (float32, float16, bfloat16)."""
    dtype = np.dtype(variable.dtype)
    with np.errstate(over="ignore"):
        cast = np.asarray(array).astype(dtype)
    if not np.isfinite(cast).all():
        largest = float(np.max(np.abs(array)))
        raise ValueError(
            f"Checkpoint {checkpoint.path!r}: {source!r} holds values too large for the "
            f"model's {dtype.name} {variable.path} (up to {largest:.3g}, the largest finite "
            f"{dtype.name} is {float(np.finfo(dtype).max):.3g}): they would load as infinity."
        )
    return cast


def build_model(cls, checkpoint, base_config=None, overrides=None):
    """Builds `cls(config=checkpoint.config, ...)` and loads it.

    The file's `ViTConfig` (architecture, image size, pooling, head, epsilon, MLP
    activation, mean / std) is changed by `base_config` (a preset's architecture), then
    `overrides`. An `image_size` other than the file's resamples the position embedding; a
    `num_classes` other than the file's gets a fresh zero-initialised head;
    `include_top=False` drops the head; a file without a head gives the features model
    unless `num_classes` asks for a new head (`default_include_top`).
    """
    overrides = dict(overrides or {})
    changes = {**(base_config or {}), **overrides}
    require_num_heads(checkpoint, changes)
    if changes.get("pooling", checkpoint.config.pooling) != checkpoint.config.pooling:
        raise ValueError(
            f"The checkpoint uses pooling={checkpoint.config.pooling!r}; "
            f"pooling={changes['pooling']!r} would not use its weights as trained."
        )
    changes.setdefault("include_top", default_include_top(checkpoint, overrides))
    load_head = False
    if changes["include_top"]:
        if "num_classes" not in overrides:
            if checkpoint.num_classes is None:
                raise ValueError(
                    f"Checkpoint {checkpoint.path!r} has no classification head: pass "
                    "num_classes=... for a new zero-initialised head, or leave include_top "
                    "out (or False) for the features model."
                )
            changes["num_classes"] = checkpoint.num_classes
        load_head = changes["num_classes"] == checkpoint.num_classes
    model = cls(config=checkpoint.config, **changes)
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


def default_include_top(checkpoint, arguments):
    """`include_top` for a model built from `checkpoint` when the caller's ViT `arguments`
    leave it out: True when the file has a head or `arguments` give `num_classes=` for a
    new one; False otherwise, so a file without a head (DINOv2, CLIP or SigLIP towers)
    builds the features model, as timm's `num_classes=0` and `AutoModel` do."""
    return checkpoint.num_classes is not None or "num_classes" in arguments


def require_num_heads(checkpoint, changes):
    """Raises a ValueError asking for `num_heads=` when neither the file, its config.json
    nor `changes` (the caller's ViT arguments) says how many attention heads the model has."""
    if "num_heads" in checkpoint.undecided and changes.get("num_heads") is None:
        width = changes.get("hidden_dim", checkpoint.config.hidden_dim)
        raise ValueError(
            f"Checkpoint {checkpoint.path!r} ({checkpoint.format} format) does not say how "
            f"many attention heads its width-{width} blocks have (no config.json beside it, "
            "and not a standard ViT width): pass num_heads=..."
        )
