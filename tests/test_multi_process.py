"""Data-parallel training over two processes on 127.0.0.1 (tests/multi_process_worker.py, in
subprocesses): TensorFlow's `MultiWorkerMirroredStrategy` under KERAS_BACKEND=tensorflow
only, PyTorch's DistributedDataParallel with gloo (examples/torch_ddp.py's loop, started by
torchrun) under KERAS_BACKEND=torch only, each once per session. Each ends with the weights
of one process trained on the whole global batches, to float32 rounding.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import distribution_worker as worker
from distribution_worker import assert_agrees

WORKER = Path(__file__).with_name("multi_process_worker.py")


def skip_unless(backend):
    if keras.backend.backend() != backend:
        pytest.skip(f"runs its subprocesses under KERAS_BACKEND={backend} only, once")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_all(out, *commands, timeout=240):
    """Runs the commands side by side, command i's output in out/process_i.log; once one
    fails (or the time is up) ends the rest, which would wait for it (torchrun ends its
    ranks). Returns the failures' logs (none if none failed) and the seconds taken."""
    start = time.monotonic()
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    logs = [out / f"process_{i}.log" for i in range(len(commands))]
    processes = []
    for args, log in zip(commands, logs):
        with log.open("w") as f:
            processes.append(subprocess.Popen([*map(str, args)], env=env, stdout=f,
                                              stderr=subprocess.STDOUT))
    while (any(p.poll() is None for p in processes) and not any(p.returncode for p in processes)
           and time.monotonic() - start < timeout):
        time.sleep(0.2)
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    failed = [f"{p.args} exited {p.returncode}:\n{log.read_text()[-3000:]}"
              for p, log in zip(processes, logs) if p.returncode]
    return failed, time.monotonic() - start


def loaded(out, name):
    """What the worker saved as `name`: its results and (if any) trained weights."""
    results = json.loads((out / f"{name}.json").read_text())
    weights = out / f"{name}.npz"
    return results, dict(np.load(weights)) if weights.exists() else None


def assert_processes_agree(out, reference, names, halves):
    """The runs `names` each agree with the run `reference`, all bit for bit the same, and
    their labels at each step make up that global batch, in `halves` (process i's labels at
    step s are halves(labels of batch s)[i]). Returns the runs' results, `reference`'s
    first."""
    initial = dict(np.load(out / "initial.npz"))
    reference, want = loaded(out, reference)
    processes = [loaded(out, name) for name in names]
    for _, weights in processes:
        assert_agrees(worker.agreement(weights, want, initial))
    for path, value in processes[0][1].items():
        np.testing.assert_array_equal(processes[1][1][path], value, err_msg=path)
    labels = worker.data()[1].reshape(worker.STEPS, worker.BATCH)
    for step, batch in enumerate(labels):
        got = [results["labels"][step] for results, _ in processes]
        assert got == [half.tolist() for half in halves(batch)], step
    return reference, *[results for results, _ in processes]


@pytest.fixture(scope="session")
def tf_multi_worker(tmp_path_factory):
    """Two MultiWorkerMirroredStrategy workers on free ports; worker 0 also trains on one
    device."""
    skip_unless("tensorflow")
    out = tmp_path_factory.mktemp("multi_worker")
    ports = ",".join(map(str, free_ports(2)))
    failed, seconds = run_all(out, *[[sys.executable, WORKER, "tf_multi_worker", out, ports, i]
                                     for i in range(2)])
    assert not failed, "\n".join(failed)
    print(f"MultiWorkerMirroredStrategy workers: {seconds:.1f} s")
    return out


def test_multi_worker_mirrored_strategy_agrees_with_one_device(tf_multi_worker):
    # AutoShardPolicy.DATA: worker i takes the i-th half of every global batch.
    one_device, *workers = assert_processes_agree(
        tf_multi_worker, "one_device", ["worker_0", "worker_1"], lambda b: np.split(b, 2))
    # ViT.compile turns XLA on for one CPU and keeps it off under a strategy, as Keras does.
    assert one_device["jit_compile"] is True
    for results in workers:
        assert (results["replicas"], results["jit_compile"]) == (2, False)


def test_keras_fit_needs_the_mended_reduce(tf_multi_worker):
    """With TensorFlow's own `reduce`, Keras 3's fit fails before the first step (keras-team/
    keras#20585): this says when keras_vit.distribution.multi_worker_mirrored_strategy is
    no longer needed."""
    for i in range(2):
        error = loaded(tf_multi_worker, f"worker_{i}")[0]["unmended_error"]
        assert error is not None, "Keras now trains under MultiWorkerMirroredStrategy as is"
        assert error.startswith("Attempt to convert a value (PerReplica:"), error


@pytest.fixture(scope="session")
def torch_ddp(tmp_path_factory):
    """Two DDP processes (gloo) under torchrun, and one process without DDP."""
    skip_unless("torch")
    out = tmp_path_factory.mktemp("torch_ddp")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_addr=127.0.0.1", f"--master_port={free_ports(1)[0]}"]
    failed, seconds = run_all(out, [*torchrun, WORKER, "torch_ddp", out],
                              [sys.executable, WORKER, "torch_one_process", out])
    assert not failed, "\n".join(failed)
    print(f"DDP and one process: {seconds:.1f} s")
    return out


def test_ddp_agrees_with_one_process(torch_ddp):
    # DistributedSampler: rank r takes the samples r, r + 2, ... of every global batch.
    one_process, *ranks = assert_processes_agree(
        torch_ddp, "one_process", ["rank_0", "rank_1"], lambda b: [b[0::2], b[1::2]])
    for results in ranks:
        assert (results["world_size"], results["backend"]) == (2, "gloo")
        # DDP reduces the gradients of exactly the trainable weights.
        assert results["ddp_parameters"] == results["trainable"]
        # The mean of the two halves' mean losses is the global batch's mean loss.
        np.testing.assert_allclose(results["losses"], one_process["losses"], rtol=1e-6)


def test_example_torch_loop_agrees_with_keras_fit(torch_ddp):
    """examples/torch_ddp.py's loop (torch's SGD on `model.parameters()`) takes the steps
    of Keras's own `fit` with SGD(0.05, momentum=0.9)."""
    initial = dict(np.load(torch_ddp / "initial.npz"))
    assert_agrees(worker.agreement(loaded(torch_ddp, "one_process")[1],
                                   loaded(torch_ddp, "keras_fit")[1], initial))
