"""Training a ViT on many devices with `keras.distribution` (the JAX backend's).

`layout_map` (also `ViT.get_layout_map`) shards a ViT Megatron-style over the mesh's model
axis: in every encoder block and in the MAP pooling head, the query, key and value
projections are split by heads, the attention output projection by heads on its input side,
the first MLP Dense by columns and the second by rows, so each block needs one all-reduce
after its attention and one after its MLP. Every other variable (patch and position
embeddings, tokens, norms, layer scales, output biases, pre_logits, heads) is replicated:
`REPLICATED_VARIABLES` lists them. `check_mesh` says, before any variable is made, whether
a mesh can run a given ViT; `model_parallel` and `data_parallel` build the checked
`keras.distribution` objects.
"""

import inspect

import keras

# The layers whose kernels are split: each encoder block, and the MAP pooling head.
_SHARDED_LAYER = r"(?:.*/)?(?:encoder_block_\d+|pooling)/"

# Variables left whole on every device (the Keras default for a path the layout map lacks).
REPLICATED_VARIABLES = (
    r"(?:.*/)?patch_embedding/projection/(?:kernel|bias)",
    r"(?:.*/)?position_embedding/embedding",
    r"(?:.*/)?(?:class_token/token|distillation_token/tokens|register_tokens/tokens)",
    r"(?:.*/)?pooling/probe",
    r"(?:.*/)?[a-z_]*norm/(?:gamma|beta)",
    r"(?:.*/)?encoder_block_\d+/(?:attention|mlp)_scale",
    _SHARDED_LAYER + r"(?:attention/attention_output|mlp_dense_2)/bias",
    r"(?:.*/)?(?:pre_logits|head|head_dist)/(?:kernel|bias)",
    r"(?:.*/)?seed_generator(?:_\d+)?/seed_generator_state",
)


def _sharded_layouts(model_axis):
    """{variable path regex: axes} of the split variables."""
    return {
        # (D, heads, head_dim) kernels and (heads, head_dim) biases: by heads.
        _SHARDED_LAYER + r"attention/(?:query|key|value)/kernel": (None, model_axis, None),
        _SHARDED_LAYER + r"attention/(?:query|key|value)/bias": (model_axis, None),
        # (heads, head_dim, D): by heads, its input side.
        _SHARDED_LAYER + r"attention/attention_output/kernel": (model_axis, None, None),
        # (D, mlp) and (mlp,): by columns; (mlp, D): by rows.
        _SHARDED_LAYER + r"mlp_dense_1/kernel": (None, model_axis),
        _SHARDED_LAYER + r"mlp_dense_1/bias": (model_axis,),
        _SHARDED_LAYER + r"mlp_dense_2/kernel": (model_axis, None),
    }


def _axis_sizes(device_mesh):
    return dict(zip(device_mesh.axis_names, device_mesh.shape))


def _require_axes(device_mesh, *names):
    missing = [name for name in names if name not in device_mesh.axis_names]
    if missing:
        raise ValueError(f"The device mesh has no axis named {', '.join(map(repr, missing))}: "
                         f"its axes are {tuple(device_mesh.axis_names)}.")


def _architecture(model_or_config):
    """The ViT's `num_heads` and `mlp_dim`, from a model or a (possibly partial) config."""
    if isinstance(model_or_config, dict):
        from keras_vit.model import ViT

        defaults = inspect.signature(ViT.__init__).parameters
        return {key: model_or_config.get(key, defaults[key].default)
                for key in ("num_heads", "mlp_dim")}
    return {"num_heads": model_or_config.num_heads, "mlp_dim": model_or_config.mlp_dim}


def check_mesh(model_or_config, device_mesh, global_batch=None,
               model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """Raises a ValueError naming the clashing numbers unless `device_mesh` can run the ViT.

    The mesh's model axis (if it has one) must divide the number of heads and the MLP width
    (of the blocks and of the MAP pooling), and its data axis must divide `global_batch`
    (when given).

    Args:
        model_or_config: a `keras_vit.ViT`, or its config dict (missing keys take the
            constructor's defaults; a preset's "config" works); None checks the batch only.
        device_mesh: a `keras.distribution.DeviceMesh`.
        global_batch: the batch size over all devices and processes, or None.
    """
    sizes = _axis_sizes(device_mesh)
    clashes = []
    model_devices = sizes.get(model_parallel_dim_name, 1)
    if model_or_config is not None:
        for key, value in _architecture(model_or_config).items():
            if value % model_devices:
                clashes.append(f"{key}={value} is not divisible by the {model_devices} "
                               f"devices of the {model_parallel_dim_name!r} axis")
    if global_batch is not None:
        _require_axes(device_mesh, data_parallel_dim_name)
        data_devices = sizes[data_parallel_dim_name]
        if global_batch % data_devices:
            clashes.append(f"the global batch {global_batch} is not divisible by the "
                           f"{data_devices} devices of the {data_parallel_dim_name!r} axis")
    if clashes:
        raise ValueError(f"This ViT cannot be distributed over the device mesh of shape "
                         f"{tuple(device_mesh.shape)} and axes {tuple(device_mesh.axis_names)}: "
                         + "; ".join(clashes) + ".")


def layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch",
               config=None):
    """A `keras.distribution.LayoutMap` that shards a ViT over the model axis (see the
    module docstring); variables it does not name are replicated.

    Args:
        device_mesh: a `keras.distribution.DeviceMesh` with both axes, e.g. shape (2, 4)
            and axes ("batch", "model"): 2-way data and 4-way model parallelism.
        model_parallel_dim_name: the axis the variables are split over.
        data_parallel_dim_name: the axis the batch is split over (not used by variables).
        config: optionally the ViT (model or config dict) to `check_mesh` against.
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(f"device_mesh must be a keras.distribution.DeviceMesh, got "
                         f"{type(device_mesh).__name__}.")
    _require_axes(device_mesh, model_parallel_dim_name, data_parallel_dim_name)
    if config is not None:
        check_mesh(config, device_mesh, model_parallel_dim_name=model_parallel_dim_name,
                   data_parallel_dim_name=data_parallel_dim_name)
    layouts = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in _sharded_layouts(model_parallel_dim_name).items():
        layouts[pattern] = axes
    return layouts


def model_parallel(model_or_config, device_mesh, global_batch=None,
                   model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """A checked `keras.distribution.ModelParallel` for this ViT over `device_mesh`: build,
    compile and fit the model in its `scope()`."""
    check_mesh(model_or_config, device_mesh, global_batch,
               model_parallel_dim_name, data_parallel_dim_name)
    layouts = layout_map(device_mesh, model_parallel_dim_name, data_parallel_dim_name)
    return keras.distribution.ModelParallel(
        layout_map=layouts, batch_dim_name=data_parallel_dim_name)


def data_parallel(global_batch=None, devices=None):
    """A `keras.distribution.DataParallel` over `devices` (default: all of them), checked to
    split `global_batch` evenly."""
    distribution = keras.distribution.DataParallel(devices=devices)
    check_mesh(None, distribution.device_mesh, global_batch,
               data_parallel_dim_name=distribution.batch_dim_name)
    return distribution
