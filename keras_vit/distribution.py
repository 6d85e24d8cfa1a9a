"""Setting up a training run on many devices: `for_training` picks and checks the
`keras.distribution` (JAX) or `tf.distribute` (TensorFlow) strategy of a run, `model_parallel`
and `data_parallel` build the checked `keras.distribution` objects. How a ViT's variables
are split over a device mesh is `keras_vit.sharding`'s (its public names are here too).
"""

import contextlib
import dataclasses

import keras

from keras_vit import arguments
from keras_vit.sharding import REPLICATED_VARIABLES, layout_map, sharded_variables  # noqa: F401
from keras_vit.sharding import architecture_numbers, batch_clash, check_mesh


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
    global_batch = arguments.optional_count(global_batch, "global_batch")
    distribution = keras.distribution.DataParallel(devices=devices)
    check_mesh(None, distribution.device_mesh, global_batch,
               data_parallel_dim_name=distribution.batch_dim_name)
    return distribution


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
        model_config: the ViT's config dict (missing keys take `ViTConfig`'s defaults), or
            a `ViTConfig`.
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
    batch_size = arguments.optional_count(batch_size, "batch_size")
    per_device_batch_size = arguments.optional_count(per_device_batch_size, "per_device_batch_size")
    model_devices = arguments.optional_count(model_devices, "model_devices")
    if kind in ("model", "auto"):  # the kinds that read the architecture
        architecture_numbers(model_config)
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
            heads, mlp = architecture_numbers(model_config).values()
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
    architecture = architecture_numbers(model_config)
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
    width, mlp, layers = architecture_numbers(
        model_config, ("hidden_dim", "mlp_dim", "num_layers")).values()
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
                         + batch_clash(global_batch, f"{len(devices)} replicas") + ".")
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
