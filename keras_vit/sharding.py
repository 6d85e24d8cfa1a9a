"""How a ViT's variables are laid out on a `keras.distribution` device mesh (JAX).

`layout_map` (also `ViT.get_layout_map`) shards a ViT Megatron-style over the mesh's model
axis: in every encoder block and in the attention-pooling head ("map", "probe"), the query,
key and value projections are split by heads, the attention output projection by heads on
its input side, the first MLP Dense by columns and the second by rows, so each block needs
one all-reduce after its attention and one after its MLP. Every other variable (patch and position
embeddings, tokens, norms, layer scales, output biases, pre_logits, heads) is replicated:
`REPLICATED_VARIABLES` lists them. `check_mesh` says, before any variable is made, whether
a mesh can run a given ViT. Setting up a training run is `keras_vit.distribution`'s.
"""

import keras

from keras_vit import arguments
from keras_vit.architecture import ViTConfig

# The layers whose kernels are split: each encoder block, and the attention-pooling head.
_SHARDED_LAYER = r"(?:.*/)?(?:encoder_block_\d+|pooling)/"

# Variables left whole on every device (the Keras default for a path the layout map lacks).
REPLICATED_VARIABLES = (
    r"(?:.*/)?patch_embedding/projection/(?:kernel|bias)",
    r"(?:.*/)?position_embedding/embedding",
    r"(?:.*/)?(?:class_token/token|distillation_token/tokens|register_tokens/tokens)",
    r"(?:.*/)?pooling/probe",
    r"(?:.*/)?[a-z_]*norm/(?:gamma|beta|scale)",
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
        # SwiGLU's gate like the first Dense (its "up").
        _SHARDED_LAYER + r"(?:mlp_dense_1|mlp_gate)/kernel": (None, model_axis),
        _SHARDED_LAYER + r"(?:mlp_dense_1|mlp_gate)/bias": (model_axis,),
        _SHARDED_LAYER + r"mlp_dense_2/kernel": (model_axis, None),
    }


def _axis_sizes(device_mesh):
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(f"device_mesh must be a keras.distribution.DeviceMesh, got "
                         f"{type(device_mesh).__name__}.")
    return dict(zip(device_mesh.axis_names, device_mesh.shape))


def _require_axes(device_mesh, *names):
    missing = [name for name in names if name not in device_mesh.axis_names]
    if missing:
        raise ValueError(f"The device mesh has no axis named {', '.join(map(repr, missing))}: "
                         f"its axes are {tuple(device_mesh.axis_names)}.")


def architecture_numbers(model_or_config, keys=("num_heads", "mlp_dim")):
    """{key: value} of a ViT's integer fields `keys`, from a `keras_vit.ViT`, a `ViTConfig`
    or a (possibly partial) config dict whose missing keys take `ViTConfig`'s defaults;
    each checked to be a positive integer."""
    if isinstance(model_or_config, dict):
        values = {**ViTConfig.defaults(), **model_or_config}
    elif isinstance(model_or_config, ViTConfig) or all(
            hasattr(model_or_config, key) for key in keys):
        values = {key: getattr(model_or_config, key) for key in keys}
    else:
        raise TypeError(f"Expected a ViT, a ViTConfig or a ViT config dict, got "
                        f"{type(model_or_config).__name__}.")
    return {key: arguments.check_integer(values[key], key) for key in keys}


def check_mesh(model_or_config, device_mesh, global_batch=None,
               model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """Raises a ValueError naming the clashing numbers unless `device_mesh` can run the ViT.

    The mesh's model axis (if it has one) must divide the number of heads and the MLP width
    (of the blocks and of the MAP pooling), and its data axis must divide `global_batch`
    (when given).

    Args:
        model_or_config: a `keras_vit.ViT`, a `keras_vit.ViTConfig` or a config dict
            (missing keys take `ViTConfig`'s defaults; a preset's "config" works); None
            checks the batch only.
        device_mesh: a `keras.distribution.DeviceMesh`.
        global_batch: the batch size over all devices and processes, or None.
    """
    sizes = _axis_sizes(device_mesh)
    global_batch = arguments.optional_count(global_batch, "global_batch")
    clashes = []
    model_devices = sizes.get(model_parallel_dim_name, 1)
    if model_or_config is not None:
        for key, value in architecture_numbers(model_or_config).items():
            if value % model_devices:
                clashes.append(f"{key}={value} is not divisible by the {model_devices} "
                               f"devices of the {model_parallel_dim_name!r} axis")
    if global_batch is not None:
        _require_axes(device_mesh, data_parallel_dim_name)
        data_devices = sizes[data_parallel_dim_name]
        if global_batch % data_devices:
            clashes.append(batch_clash(global_batch, f"{data_devices} devices of the "
                                                      f"{data_parallel_dim_name!r} axis"))
    if clashes:
        raise ValueError(f"This ViT cannot be distributed over the device mesh of shape "
                         f"{tuple(device_mesh.shape)} and axes {tuple(device_mesh.axis_names)}: "
                         + "; ".join(clashes) + ".")


def batch_clash(global_batch, replicas):
    """What is wrong with a global batch that `replicas` (a description) do not divide."""
    return f"the global batch {global_batch} is not divisible by the {replicas}"


def check_active_distribution(num_heads, mlp_dim):
    """Under a `keras.distribution.ModelParallel` whose layout splits the blocks' MLP (as
    `layout_map`'s does), `check_mesh` for a ViT of `num_heads` and `mlp_dim`: a ViT
    checks this before it makes a variable, so a clash is this ValueError, not JAX's."""
    active = keras.distribution.distribution()
    if not isinstance(active, keras.distribution.ModelParallel):
        return
    layout = active.get_tensor_layout("encoder_block_0/mlp_dense_1/kernel")
    if layout is not None and layout.axes[-1] is not None:
        check_mesh({"num_heads": num_heads, "mlp_dim": mlp_dim}, active.device_mesh,
                   model_parallel_dim_name=layout.axes[-1])


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
    _axis_sizes(device_mesh)  # checks that it is a DeviceMesh
    _require_axes(device_mesh, model_parallel_dim_name, data_parallel_dim_name)
    if config is not None:
        check_mesh(config, device_mesh, model_parallel_dim_name=model_parallel_dim_name,
                   data_parallel_dim_name=data_parallel_dim_name)
    layouts = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in _sharded_layouts(model_parallel_dim_name).items():
        layouts[pattern] = axes
    return layouts


def sharded_variables(model):
    """The paths of the model's variables split between devices (JAX)."""
    return [v.path for v in model.variables
            if not getattr(getattr(v.value, "sharding", None), "is_fully_replicated", True)]
