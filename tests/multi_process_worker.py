"""Trains the tiny ViT in two processes; run by tests/test_multi_process.py.

    KERAS_BACKEND=tensorflow python tests/multi_process_worker.py tf_multi_worker OUT \\
        PORT0,PORT1 INDEX                                               (INDEX 0 and 1)
    KERAS_BACKEND=torch python -m torch.distributed.run --nproc_per_node=2 \\
        --master_addr=127.0.0.1 --master_port=PORT tests/multi_process_worker.py torch_ddp OUT
    KERAS_BACKEND=torch python tests/multi_process_worker.py torch_one_process OUT

As in tests/distribution_worker.py, whose model, data and helpers these use, every run
starts from the same weights and takes STEPS steps of SGD with momentum on the same global
batches. "tf_multi_worker": a worker of `tf.distribute.MultiWorkerMirroredStrategy` over
two on 127.0.0.1 (keras_vit.distribution's, with a `reduce` mended for Keras's fit), trained by `fit` on one tf.data
pipeline of global batches that tf.distribute splits between the workers; worker 0 then
trains on one device too. "torch_ddp": a process of examples/torch_ddp.py's
DistributedDataParallel loop (gloo), started by torchrun; "torch_one_process": the same
loop without DDP on the whole global batches, and Keras's own `fit`. Each run writes its
trained weights to OUT/NAME.npz and what it saw to OUT/NAME.json.
"""

import functools
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))

import distribution_worker as worker  # noqa: E402


def numpy_weights(model):
    """distribution_worker.weights, also of torch parameters (np.asarray takes none that
    requires grad)."""
    import keras

    return worker.weights(model, keras.ops.convert_to_numpy)


def save(out, name, model=None, **results):
    """OUT/name.npz: the model's trained weights; OUT/name.json: `results`."""
    if model is not None:
        np.savez(os.path.join(out, f"{name}.npz"), **numpy_weights(model))
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(results, f)


def multi_worker_strategy(ports, index):
    """keras_vit's MultiWorkerMirroredStrategy over workers on 127.0.0.1 at `ports`, this
    one `index`."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports.split(",")]}
    os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                          "task": {"type": "worker", "index": index}})
    from keras_vit import distribution

    return distribution.multi_worker_mirrored_strategy()


def run_tf_multi_worker(out, ports, index):
    strategy = multi_worker_strategy(ports, index)  # before any other TensorFlow op
    import tensorflow as tf

    initial, initial_by_path = worker.initial_weights()
    dataset = tf.data.Dataset.from_tensor_slices(worker.data()).batch(worker.BATCH)
    # Each worker gets its half of every global batch (as AUTO does: it falls back to DATA,
    # from_tensor_slices having no files).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    labels = [strategy.experimental_local_results(y)[0].numpy().tolist()
              for _, y in strategy.experimental_distribute_dataset(dataset)]
    # TensorFlow's own reduce, for a while.
    strategy.reduce = functools.partial(tf.distribute.MultiWorkerMirroredStrategy.reduce,
                                        strategy)
    try:
        with strategy.scope():
            worker.trained(initial, dataset)
        error = None
    except ValueError as e:  # both workers fail at the same place
        lines = str(e).splitlines()
        error = f"{lines[0]} ... {lines[-1]}"
    del strategy.reduce
    with strategy.scope():
        model = worker.trained(initial, dataset)
    save(out, f"worker_{index}", model, replicas=strategy.num_replicas_in_sync,
         jit_compile=model.jit_compile, labels=labels, unmended_error=error)
    if index == 0:
        np.savez(os.path.join(out, "initial.npz"), **initial_by_path)
        one_device = worker.trained(initial, dataset)
        save(out, "one_device", one_device, jit_compile=one_device.jit_compile)


def seeded_vit():
    """The ViT of distribution_worker.initial_weights, as it starts."""
    import keras

    from keras_vit import ViT

    keras.utils.set_random_seed(0)
    return ViT(**worker.MODEL)


def run_torch_ddp(out):
    import torch

    torch.set_num_threads(1)
    import torch.distributed as dist

    import torch_ddp

    device = torch_ddp.setup()
    model = seeded_vit()
    ddp = torch_ddp.distributed(model, device)
    batches = torch_ddp.loader(*worker.data(), worker.BATCH)
    losses = torch_ddp.train(ddp, batches, worker.STEPS, device)
    save(out, f"rank_{dist.get_rank()}", model, world_size=dist.get_world_size(),
         backend=dist.get_backend(), losses=losses,
         labels=[y.tolist() for _, y in batches],
         ddp_parameters=sum(p.numel() for p in ddp.parameters() if p.requires_grad),
         trainable=sum(int(np.prod(v.shape)) for v in model.trainable_variables))
    dist.destroy_process_group()


def run_torch_one_process(out):
    import torch

    torch.set_num_threads(1)
    import torch_ddp

    model = seeded_vit()
    initial = model.get_weights()
    np.savez(os.path.join(out, "initial.npz"), **numpy_weights(model))
    batches = torch_ddp.loader(*worker.data(), worker.BATCH)
    losses = torch_ddp.train(model, batches, worker.STEPS, torch.device("cpu"))
    save(out, "one_process", model, losses=losses)
    save(out, "keras_fit", worker.trained(initial, worker.data()))


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    start = time.time()
    if mode == "tf_multi_worker":
        run_tf_multi_worker(out, sys.argv[3], int(sys.argv[4]))
    elif mode == "torch_ddp":
        run_torch_ddp(out)
    else:
        run_torch_one_process(out)
    print(f"{mode}: {time.time() - start:.1f} s", file=sys.stderr)
