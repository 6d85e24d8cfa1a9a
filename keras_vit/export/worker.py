"""Export jobs under the backend they need: TensorFlow for SavedModel and TFLite, PyTorch
for ONNX. Under that backend the jobs run in this process; under another one the model goes
through a `.keras` file to a `KERAS_BACKEND=...` subprocess.

The protocol: `run_under` writes the model, a `task.json` ({"model", "jobs", "results"}) and
each job's arrays as `.npy` files into a temporary folder, and runs

    python -c "import sys; from keras_vit.export import worker; worker.main(sys.argv[1])" task.json

whose `main` runs the jobs and writes each one's result arrays to `result_{i}.npz` there.
A job is a dict with a "kind" ("saved_model", "tflite", "onnx" or "saved_model_logits"),
a "path" and that kind's arguments.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np

from keras_vit import quantization
from keras_vit.export import checks
from keras_vit.precision import as_float32

_BACKEND_NAMES = {"tensorflow": "TensorFlow", "torch": "PyTorch"}
_WORKER_CODE = "import sys; from keras_vit.export import worker; worker.main(sys.argv[1])"


def run_under(backend, model, jobs):
    """Runs export jobs (dicts) under `backend` and returns their results (dicts of arrays).

    Under that backend they run here; under another one `model` (a `keras.Model`, a
    `.keras` path, or None for jobs that need no model) is saved as a `.keras` file and one
    `KERAS_BACKEND=backend` subprocess runs them all.
    """
    if keras.backend.backend() == backend:
        return run_jobs(model, jobs)
    with tempfile.TemporaryDirectory() as tmp:
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
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run(
            [sys.executable, "-c", _WORKER_CODE, spec], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"Export under {_BACKEND_NAMES[backend]} (in a subprocess) failed:\n"
                f"{proc.stderr[-4000:]}"
            )
        results = []
        for i in range(len(jobs)):
            with np.load(os.path.join(tmp, f"result_{i}.npz")) as result:
                results.append({k: result[k] for k in result.files})
        return results


def main(spec_path):
    """The subprocess side of `run_under`: runs the jobs of a `task.json` file."""
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
    it: `keras_vit.quantization.dequantized`); returns one dict of arrays per job."""
    # Imported here: these modules call `run_under`, so they import this one.
    from keras_vit.export import onnx, saved_model, tflite

    if model is not None:
        model = as_float32(quantization.dequantized(checks.load_model(model)))
    results = []
    for job in jobs:
        kind, path = job["kind"], job["path"]
        result = {}
        if kind == "saved_model":
            partial = path + ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            saved_model.write_saved_model(model, partial, job["input_dtype"])
            shutil.rmtree(path, ignore_errors=True)
            os.replace(partial, path)
        elif kind == "tflite":
            flatbuffer = tflite.convert(
                model, job["quantize"], job.get("representative"), job["input_dtype"]
            )
            with open(path, "wb") as f:
                f.write(flatbuffer)
        elif kind == "onnx":
            onnx.write_onnx(model, path, job["input_dtype"], job.get("opset"))
        elif kind == "saved_model_logits":
            logits, times, input_dtype = saved_model.saved_model_logits(path, job["images"])
            result = {"logits": logits, "times": np.asarray(times), "input_dtype": np.asarray(input_dtype)}
        else:
            raise ValueError(f"Unknown export job {kind!r}.")
        results.append(result)
    return results
