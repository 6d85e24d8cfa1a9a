"""Trains the tiny ViT on simulated devices and on one device; run by tests/test_distribution.py.

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python tests/distribution_worker.py jax OUT
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
        python tests/distribution_worker.py jax_process OUT PORT PROCESS_ID    (x 2 processes)
    KERAS_BACKEND=tensorflow python tests/distribution_worker.py tensorflow OUT

Every run starts from the same weights and takes `STEPS` steps of SGD with momentum on
the same batches (no dropout, no shuffling). "jax": for each attention implementation, one
device, `DataParallel` over 8 and `ModelParallel` over a (2, 4) ("batch", "model") mesh,
with each variable's sharding; "jax_process": `ModelParallel` over two processes of 4
devices each, started with `keras.distribution.initialize`; "tensorflow":
`tf.distribute.MirroredStrategy` over 2 logical CPUs. The final weights go to OUT/*.npz and
one JSON line of results to stdout. Keras is imported inside the functions: the
TensorFlow run sets up its devices first, and tests/test_distribution.py imports this file.
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny import TINY  # noqa: E402

MODEL = dict(TINY, pooling="map")  # the MAP head has a sharded attention and MLP too
BATCH = 8
STEPS = 3
IMPLEMENTATIONS = ("plain", "head_major", "fast")
PROCESS_IMPLEMENTATION = "head_major"
RTOL, ATOL = 1e-5, 1e-7  # float32 rounding


def data():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (BATCH * STEPS, 32, 32, 3)).astype("float32")
    return images, np.arange(BATCH * STEPS) % MODEL["num_classes"]


def initial_weights():
    """The seeded ViT's weights: as a list for `set_weights`, and {path: value}."""
    import keras

    from keras_vit import ViT

    keras.utils.set_random_seed(0)
    model = ViT(**MODEL)
    return model.get_weights(), weights(model)


def trained(initial, x, implementation=None, **compile_args):
    """A ViT from `initial`, fitted for STEPS steps on `x` (arrays or a dataset)."""
    import keras

    from keras_vit import ViT, attention

    model = ViT(**MODEL)
    model.set_weights(initial)
    if implementation:
        attention.set_model_implementation(model, implementation)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  **compile_args)
    if isinstance(x, tuple):
        model.fit(*x, batch_size=BATCH, shuffle=False, verbose=0)
    else:
        model.fit(x, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == STEPS
    return model


def weights(model, gather=np.asarray):
    return {v.path: gather(v.value) for v in model.trainable_variables}


def agreement(got, want, initial):
    """How far the weights `got` are from `want` ({path: array}, both trained from
    `initial`): the largest difference, the largest of |difference| / (RTOL * |want| + ATOL)
    (at most 1 where `np.allclose(got, want, RTOL, ATOL)`), and the norm of the difference
    relative to the norm of the training update `want - initial`."""
    diffs = {p: np.abs(got[p] - w) for p, w in want.items()}
    diff = np.sqrt(sum(np.sum(d ** 2) for d in diffs.values()))
    update = np.sqrt(sum(np.sum((w - initial[p]) ** 2) for p, w in want.items()))
    return {
        "max_abs": max(float(d.max()) for d in diffs.values()),
        "allclose": max(float(np.max(d / (RTOL * np.abs(want[p]) + ATOL)))
                        for p, d in diffs.items()),
        "of_update": float(diff / update),
        "update_norm": float(update),
    }


def specs(model):
    """The sharding spec of every variable and of its momentum, one entry (an axis name or
    None) per dimension: {"variables": {path: spec}, "momentums": {path: spec}}."""
    def spec(variable):
        spec = list(variable.value.sharding.spec)
        return spec + [None] * (len(variable.shape) - len(spec))

    momentums = zip(model.trainable_variables, model.optimizer.momentums)
    return {"variables": {v.path: spec(v) for v in model.variables},
            "momentums": {v.path: spec(m) for v, m in momentums}}


def run_jax(out):
    import keras

    from keras_vit import distribution

    devices = keras.distribution.list_devices()
    initial, initial_by_path = initial_weights()
    x = data()
    distributions = {
        "data_parallel": distribution.data_parallel(BATCH),
        "model_parallel": distribution.model_parallel(
            MODEL, keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices), BATCH),
    }
    np.savez(os.path.join(out, "initial.npz"), **initial_by_path)
    results = {"devices": len(devices), "agreement": {}, "specs": {}, "seconds": {}}
    for implementation in IMPLEMENTATIONS:
        start = time.time()
        reference = weights(trained(initial, x, implementation))
        if implementation == PROCESS_IMPLEMENTATION:
            np.savez(os.path.join(out, "one_device.npz"), **reference)
        results["seconds"][f"{implementation}/one_device"] = time.time() - start
        for name, strategy in distributions.items():
            start = time.time()
            with strategy.scope():
                model = trained(initial, x, implementation)
            run = f"{implementation}/{name}"
            results["agreement"][run] = agreement(weights(model), reference, initial_by_path)
            results["specs"][run] = specs(model)
            results["seconds"][run] = time.time() - start
    return results


def run_jax_process(out, port, process_id):
    import keras

    keras.distribution.initialize(job_addresses=f"127.0.0.1:{port}", num_processes=2,
                                  process_id=process_id)
    import jax
    import tensorflow as tf
    from jax.experimental import multihost_utils

    from keras_vit import distribution

    devices = keras.distribution.list_devices()
    strategy = distribution.model_parallel(
        MODEL, keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices), BATCH)
    # Keras splits the global batches of a tf.data pipeline between the processes.
    dataset = tf.data.Dataset.from_tensor_slices(data()).batch(BATCH)
    initial, _ = initial_weights()
    with strategy.scope():
        model = trained(initial, dataset, PROCESS_IMPLEMENTATION)
    gathered = weights(model, lambda v: multihost_utils.process_allgather(v, tiled=True))
    np.savez(os.path.join(out, f"process_{process_id}.npz"), **gathered)
    return {"devices": len(devices), "local_devices": len(jax.local_devices()),
            "specs": specs(model)}


def run_tensorflow(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from keras_vit import ViT

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    initial, initial_by_path = initial_weights()
    dataset = tf.data.Dataset.from_tensor_slices(data()).batch(BATCH)
    one_device = trained(initial, dataset)
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        mirrored = trained(initial, dataset)
    results = {
        "replicas": strategy.num_replicas_in_sync,
        "jit_compile": {"one_device": one_device.jit_compile, "mirrored": mirrored.jit_compile},
        "agreement": agreement(weights(mirrored), weights(one_device), initial_by_path),
    }
    # Keras lets a model built in the strategy's scope be compiled outside it.
    with strategy.scope():
        model = ViT(**MODEL)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    try:
        model.fit(dataset, verbose=0)
        error = None
    except tf.errors.InvalidArgumentError as e:
        error = e.message[:3000]
    results["compiled_outside_scope"] = {"jit_compile": model.jit_compile, "error": error}
    return results


def assert_agrees(agreement):
    """Within float32 rounding of the one-device run, after a real training update."""
    assert agreement["allclose"] <= 1.0, agreement  # np.allclose(rtol=1e-5, atol=1e-7)
    assert agreement["of_update"] < 1e-4, agreement
    assert agreement["update_norm"] > 0.05, agreement


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    start = time.time()
    if mode == "jax":
        results = run_jax(out)
    elif mode == "jax_process":
        results = run_jax_process(out, sys.argv[3], int(sys.argv[4]))
    else:
        results = run_tensorflow(out)
    results["total_seconds"] = time.time() - start
    print(json.dumps(results))
