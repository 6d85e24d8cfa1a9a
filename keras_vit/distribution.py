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

import contextlib
import dataclasses
import inspect

import keras

from keras_vit import arguments

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
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(f"device_mesh must be a keras.distribution.DeviceMesh, got "
                         f"{type(device_mesh).__name__}.")
    return dict(zip(device_mesh.axis_names, device_mesh.shape))


def _optional_count(value, name):
    """None, or `value` checked to be a positive integer (not 8.0, not a bool)."""
    return None if value is None else arguments.check_integer(value, name)


def _require_axes(device_mesh, *names):
    missing = [name for name in names if name not in device_mesh.axis_names]
    if missing:
        raise ValueError(f"The device mesh has no axis named {', '.join(map(repr, missing))}: "
                         f"its axes are {tuple(device_mesh.axis_names)}.")


def _config_values(config, *keys):
    """The values of `keys` in a ViT config dict, the constructor's default where missing,
    each checked to be a positive integer."""
    from keras_vit.model import ViT

    if not isinstance(config, dict):
        raise TypeError(f"Expected a ViT config dict, got {type(config).__name__}.")
    defaults = inspect.signature(ViT.__init__).parameters
    return [arguments.check_integer(config.get(key, defaults[key].default), key) for key in keys]


def _architecture(model_or_config):
    """The ViT's `num_heads` and `mlp_dim`, from a model or a (possibly partial) config."""
    keys = ("num_heads", "mlp_dim")
    if not isinstance(model_or_config, dict) and all(hasattr(model_or_config, k) for k in keys):
        return {key: getattr(model_or_config, key) for key in keys}
    return dict(zip(keys, _config_values(model_or_config, *keys)))


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
    global_batch = _optional_count(global_batch, "global_batch")
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
            clashes.append(_batch_clash(global_batch, f"{data_devices} devices of the "
                                                      f"{data_parallel_dim_name!r} axis"))
    if clashes:
        raise ValueError(f"This ViT cannot be distributed over the device mesh of shape "
                         f"{tuple(device_mesh.shape)} and axes {tuple(device_mesh.axis_names)}: "
                         + "; ".join(clashes) + ".")


def _batch_clash(global_batch, replicas):
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
    global_batch = _optional_count(global_batch, "global_batch")
    distribution = keras.distribution.DataParallel(devices=devices)
    check_mesh(None, distribution.device_mesh, global_batch,
               data_parallel_dim_name=distribution.batch_dim_name)
    return distribution


# --------------------------------------------------------------------------- training runs

KINDS = ("none", "data", "model", "auto")
# "auto" shards a model whose training state (a float32 weight, its gradient and two AdamW
# moments: 16 bytes a parameter) would fill more than half of one device's memory.
_TRAINING_BYTES_PER_PARAMETER = 16
_MEMORY_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """How one training run is spread over the devices (see `for_training`).

    kind: "none", "data" or "model" (what "auto" chose); strategy: a
    `keras.distribution.Distribution` (JAX), a `tf.distribute.Strategy` (TensorFlow) or
    None; global_batch: examples per step over all devices; data_devices: how many ways
    each batch is split; model_devices: how many ways each block is split.
    """

    kind: str
    strategy: object
    global_batch: int
    data_devices: int = 1
    model_devices: int = 1

    def scope(self):
        """Build, compile and fit the model within this."""
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def describe(self):
        """A JSON-able summary, for logs and metrics."""
        return {"kind": self.kind, "global_batch": self.global_batch,
                "data_devices": self.data_devices, "model_devices": self.model_devices,
                "per_replica_batch": self.global_batch // self.data_devices}


def _one_device(batch_size, per_device_batch_size):
    """The setup of a run on one device: either batch is the global one."""
    return TrainingSetup("none", None, batch_size or per_device_batch_size)


def for_training(kind, model_config, batch_size=None, per_device_batch_size=None,
                 model_devices=None):
    """The `TrainingSetup` of a run on every device this process sees.

    Args:
        kind: "none" (one device); "data": the model copied on every device, each batch
            split between them (JAX `DataParallel`, TensorFlow `MirroredStrategy` over the
            GPUs, else the logical CPUs); "model" (JAX only): a (devices / model_devices,
            model_devices) ("batch", "model") mesh with the blocks split Megatron-style
            (`model_parallel`); "auto": "model" on JAX when the blocks' training state
            would take more than half of one device's memory (with the smallest model
            axis that brings it under half), else "data" when there are several devices,
            else "none" (always under PyTorch).
        model_config: the ViT's config dict (missing keys take the constructor's defaults).
        batch_size: the global batch; or else
        per_device_batch_size: the batch of each data-parallel replica, times the number
            of replicas is the global batch.
        model_devices: the model axis for "model" or "auto" (default for "model": the
            largest that divides the devices, the heads and the MLP width).

    Raises a ValueError that names the numbers when they do not divide.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown distribution {kind!r}; use one of {', '.join(KINDS)}.")
    if (batch_size is None) == (per_device_batch_size is None):
        raise ValueError("Give the global batch_size or the per_device_batch_size, not both.")
    batch_size = _optional_count(batch_size, "batch_size")
    per_device_batch_size = _optional_count(per_device_batch_size, "per_device_batch_size")
    model_devices = _optional_count(model_devices, "model_devices")
    if kind in ("model", "auto"):  # the kinds that read the architecture
        _architecture(model_config)
    if model_devices is not None and kind not in ("model", "auto"):
        raise ValueError(f"model_devices={model_devices} needs the 'model' or 'auto' "
                         f"distribution, not {kind!r}.")
    backend = keras.backend.backend()
    if kind == "none" or (kind == "auto" and backend not in ("jax", "tensorflow")):
        return _one_device(batch_size, per_device_batch_size)
    if backend == "jax":
        return _jax_setup(kind, model_config, batch_size, per_device_batch_size, model_devices)
    if backend == "tensorflow":
        return _tensorflow_setup(kind, batch_size, per_device_batch_size)
    raise ValueError(
        f"Keras's {backend} backend has no keras.distribution, so there is no {kind!r} "
        "distribution for it: under PyTorch use DistributedDataParallel (examples/torch_ddp.py), "
        "or KERAS_BACKEND=jax or tensorflow.")


def _jax_setup(kind, model_config, batch_size, per_device_batch_size, model_devices):
    import jax

    devices = keras.distribution.list_devices()
    if kind == "auto":
        memory = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
        model_devices = model_devices or model_devices_for_memory(
            model_config, len(devices), memory)
        if model_devices == 1 and len(devices) == 1:
            return _one_device(batch_size, per_device_batch_size)
        kind = "model" if model_devices > 1 else "data"
    if kind == "data":
        global_batch = batch_size or per_device_batch_size * len(devices)
        return TrainingSetup("data", data_parallel(global_batch, devices), global_batch,
                             data_devices=len(devices))
    if model_devices is None:
        model_devices = max(model_axes(model_config, len(devices)))
        if model_devices == 1 < len(devices):
            heads, mlp = _architecture(model_config).values()
            raise ValueError(f"No model axis above 1 divides the {len(devices)} devices, "
                             f"num_heads={heads} and mlp_dim={mlp}: use the 'data' "
                             "distribution, or give model_devices.")
    if len(devices) % model_devices:
        raise ValueError(f"{model_devices} model-parallel devices do not divide the "
                         f"{len(devices)} devices.")
    data_devices = len(devices) // model_devices
    global_batch = batch_size or per_device_batch_size * data_devices
    mesh = keras.distribution.DeviceMesh((data_devices, model_devices), ("batch", "model"),
                                         devices)
    return TrainingSetup("model", model_parallel(model_config, mesh, global_batch),
                         global_batch, data_devices, model_devices)


def model_axes(model_config, num_devices):
    """The model axes (ascending) that divide the devices, the heads and the MLP width."""
    num_devices = arguments.check_integer(num_devices, "num_devices")
    architecture = _architecture(model_config)
    return [m for m in range(1, num_devices + 1)
            if num_devices % m == 0 and all(v % m == 0 for v in architecture.values())]


def model_devices_for_memory(model_config, num_devices, device_memory):
    """The model axis "auto" picks: 1 when the blocks' training state (float32 weights,
    gradients and AdamW moments of their kernels) fits in half of `device_memory` bytes or
    that is unknown (None, as on CPUs), else the smallest axis that makes it fit, else the
    largest axis that divides the devices, heads and MLP width."""
    if device_memory is not None:
        arguments.check_integer(device_memory, "device_memory", minimum=0)
    if not device_memory:
        return 1
    width, mlp, layers = _config_values(model_config, "hidden_dim", "mlp_dim", "num_layers")
    state = layers * (4 * width * width + 2 * width * mlp) * _TRAINING_BYTES_PER_PARAMETER
    axes = model_axes(model_config, num_devices)
    return next((m for m in axes if state / m <= _MEMORY_FRACTION * device_memory), axes[-1])


def _tensorflow_setup(kind, batch_size, per_device_batch_size):
    if kind == "model":
        raise ValueError("Model parallelism needs the JAX backend (keras.distribution): "
                         "tf.distribute has no layout for Keras 3 models. Use 'data', or "
                         "KERAS_BACKEND=jax.")
    import tensorflow as tf

    devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
               or [d.name for d in tf.config.list_logical_devices("CPU")])
    if kind == "auto" and len(devices) == 1:
        return _one_device(batch_size, per_device_batch_size)
    global_batch = batch_size or per_device_batch_size * len(devices)
    if global_batch % len(devices):
        raise ValueError("tf.distribute.MirroredStrategy cannot split this run: "
                         + _batch_clash(global_batch, f"{len(devices)} replicas") + ".")
    return TrainingSetup("data", tf.distribute.MirroredStrategy(devices), global_batch,
                         data_devices=len(devices))


def multi_worker_mirrored_strategy(*args, **kwargs):
    """`tf.distribute.MultiWorkerMirroredStrategy(*args, **kwargs)` whose `reduce` takes
    what Keras 3's `fit` gives it (keras-team/keras#20585): Keras reduces a whole (x, y)
    batch before building the model and each scalar metric along axis 0, which TensorFlow's
    multi-worker `reduce` refuses (MirroredStrategy's takes both). Here each value of a
    structure is reduced on its own, a scalar along no axis. Make it before any other
    TensorFlow op, with `TF_CONFIG` set."""
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def one(v):
                scalar = self.experimental_local_results(v)[0].shape.rank == 0
                return super(MultiWorkerMirroredStrategy, self).reduce(
                    reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return MultiWorkerMirroredStrategy(*args, **kwargs)


def sharded_variables(model):
    """The paths of the model's variables split between devices (JAX)."""
    return [v.path for v in model.variables
            if not getattr(getattr(v.value, "sharding", None), "is_fully_replicated", True)]
