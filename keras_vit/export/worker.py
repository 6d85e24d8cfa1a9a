"""Export jobs under the backend they need: TensorFlow for SavedModel and TFLite, PyTorch
for ONNX. Under that backend the jobs run in this process; under another one the model goes
through a `.keras` file to a `KERAS_BACKEND=...` subprocess.

The protocol: `run_under` writes the model, a `task.json` ({"model", "jobs", "results"}) and
each job's arrays as `.npy` files into a temporary folder, and runs `_WORKER_CODE` with
`task.json` and its own process id, whose `main` runs the jobs and writes each one's result
arrays to `result_{i}.npz` there. A job is a dict with a "kind" ("saved_model", "tflite",
"onnx" or "saved_model_logits": a key of `JOB_MODULES`, which names the format module that
runs it), a "path" (written in place: the callers pass a temporary path,
`keras_vit.atomic.replacing`) and that kind's arguments.

The worker never outlives its parent: on Linux it asks the kernel for SIGKILL when the
parent dies (`PR_SET_PDEATHSIG`, before it imports anything heavy), and everywhere it
exits when its stdin, a pipe from the parent, closes. The parent kills it on every exit
path of `run_under` (an error, Ctrl-C, SIGTERM inside `keras_vit.atomic.replacing`)
and removes the temporary folder, which also holds the worker's own temporary files
(its TMPDIR); if the parent is killed, `keras_vit.atomic`'s reaper removes that folder.
"""

import importlib
import json
import os
import subprocess
import sys
import threading

import keras
import numpy as np

from keras_vit import atomic, quantization
from keras_vit.export import checks
from keras_vit.precision import as_float32

_BACKEND_NAMES = {"tensorflow": "TensorFlow", "torch": "PyTorch"}
# The module whose `run_job(model, job)` runs each kind of job. Those modules call
# `run_under`, so they import this one; it imports them by name, when a job runs.
JOB_MODULES = {
    "saved_model": "keras_vit.export.saved_model",
    "saved_model_logits": "keras_vit.export.saved_model",
    "tflite": "keras_vit.export.tflite",
    "onnx": "keras_vit.export.onnx",
}
_WORKER_CODE = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[2]):  # the parent died before that
    sys.exit(1)
from keras_vit.export import worker
worker.main(sys.argv[1])
"""


def run_under(backend, model, jobs):
    """Runs export jobs (dicts) under `backend` and returns their results (dicts of arrays).

    Under that backend they run here; under another one `model` (a `keras.Model`, a
    `.keras` path, or None for jobs that need no model) is saved as a `.keras` file and one
    `KERAS_BACKEND=backend` subprocess runs them all.
    """
    if keras.backend.backend() == backend:
        return run_jobs(model, jobs)
    with atomic.temporary_folder() as tmp:
        if isinstance(model, keras.Model):
            model_path = os.path.join(tmp, "model.keras")
            model.save(model_path)
            model = model_path
        elif model is not None:
            model = os.path.abspath(model)
        saved_jobs = []
        for i, job in enumerate(jobs):
            job = dict(job)
            for key, value in job.items():
                if isinstance(value, np.ndarray):
                    job[key] = {"npy": os.path.join(tmp, f"{i}_{key}.npy")}
                    np.save(job[key]["npy"], value)
            saved_jobs.append(job)
        spec = os.path.join(tmp, "task.json")
        with open(spec, "w") as f:
            json.dump({"model": model, "jobs": saved_jobs, "results": tmp}, f)
        os.mkdir(os.path.join(tmp, "tmp"))
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TMPDIR": os.path.join(tmp, "tmp")}
        with open(os.path.join(tmp, "stderr.txt"), "w+") as stderr:
            returncode = _run_worker([sys.executable, "-c", _WORKER_CODE, spec, str(os.getpid())],
                                     env, stderr)
            stderr.seek(0)
            if returncode != 0:
                raise RuntimeError(
                    f"Export under {_BACKEND_NAMES[backend]} (in a subprocess) failed:\n"
                    f"{stderr.read()[-4000:]}"
                )
        results = []
        for i in range(len(jobs)):
            with np.load(os.path.join(tmp, f"result_{i}.npz")) as result:
                results.append({k: result[k] for k in result.files})
        return results


def _run_worker(command, env, stderr):
    """Runs the worker with a pipe as its stdin, kept open while it runs; kills it if this
    process stops waiting (an exception, KeyboardInterrupt, SystemExit). Returns its exit
    status."""
    proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()


def _exit_when_parent_exits():
    """Ends this worker at once when its stdin (the parent's pipe) closes."""
    while os.read(sys.stdin.fileno(), 4096):  # the raw pipe: nothing to lock at exit
        pass
    os._exit(1)


def main(spec_path):
    """The subprocess side of `run_under`: runs the jobs of a `task.json` file."""
    threading.Thread(target=_exit_when_parent_exits, daemon=True).start()
    with open(spec_path) as f:
        task = json.load(f)
    jobs = [
        {k: np.load(v["npy"]) if isinstance(v, dict) else v for k, v in job.items()}
        for job in task["jobs"]
    ]
    for i, result in enumerate(run_jobs(task["model"], jobs)):
        np.savez(os.path.join(task["results"], f"result_{i}.npz"), **result)


def run_jobs(model, jobs):
    """Runs export jobs under the current backend ("onnx" under PyTorch, the others under
    TensorFlow) on the float32 copy of `model` (of its dequantized copy if Keras quantized
    it: `keras_vit.quantization.dequantized`); returns one dict of arrays per job, from the
    `run_job` of the job's module in `JOB_MODULES`."""
    modules = []
    for job in jobs:
        if job["kind"] not in JOB_MODULES:
            raise ValueError(f"Unknown export job {job['kind']!r}.")
        modules.append(importlib.import_module(JOB_MODULES[job["kind"]]))
    if model is not None:
        model = as_float32(quantization.dequantized(checks.load_model(model)))
    return [module.run_job(model, job) for module, job in zip(modules, jobs)]
