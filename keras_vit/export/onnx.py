"""ONNX files: `export_onnx` and its PyTorch-side writer (`torch.onnx.export(dynamo=True)`,
a free batch size), and running a file with ONNX Runtime."""

import os
import time

import numpy as np

from keras_vit import atomic
from keras_vit.export import arrays, checks, worker


def write_onnx(model, path, input_dtype="float32", opset=None):
    """Writes `model` (PyTorch backend) as ONNX with a free batch size."""
    import torch

    class Serve(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images):
            return self.model(images.to(torch.float32), training=False)

    example = torch.zeros((2,) + checks.image_shape(model, fixed=True), dtype=getattr(torch, input_dtype))
    program = torch.onnx.export(
        Serve(model).eval(),
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        opset_version=opset,
        verbose=False,
    )
    program.optimize()
    program.save(path)


def run_job(model, job):
    """The worker's "onnx" job, under PyTorch (`keras_vit.export.worker`): writes `model`
    at job["path"]; no result."""
    write_onnx(model, job["path"], job["input_dtype"], job.get("opset"))
    return {}


def export_onnx(model, path, input_dtype="float32", opset=None, overwrite=False):
    """Writes an ONNX file: input `images` (batch, H, W, C), any batch size; output `logits`.

    Args:
        model: a `keras.Model` (any backend) or the path of a `.keras` file; it is exported
            through PyTorch (a subprocess under TensorFlow or JAX), in float32.
        path: the output file, ending in `.onnx`; its folder must exist.
        input_dtype: "float32" or "uint8" pixels (0..255 for a ViT, which rescales inside).
        opset: the ONNX opset; None for the exporter's default.
        overwrite: replace an existing file.

    The file is written under a temporary name beside `path`, then renamed: a kill
    leaves the old file or the new one. Returns the path. `run_onnx` runs it with ONNX
    Runtime; `parity_report` compares it.
    """
    checks.check_input_dtype(input_dtype)
    path = os.path.abspath(checks.check_output_path(path, overwrite, suffix=".onnx"))
    checks.image_shape(checks.load_model(model), fixed=True)
    checks.check_onnx_packages()
    with atomic.replacing(path) as staged:
        worker.run_under("torch", model, [{"kind": "onnx", "path": staged,
                                           "input_dtype": input_dtype, "opset": opset}])
    return path


def _session(path, num_threads=None):
    """An ONNX Runtime session of a file on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def _session_input_dtype(session):
    return {"tensor(float)": "float32", "tensor(uint8)": "uint8"}[session.get_inputs()[0].type]


def file_input_dtype(path):
    """The name of an ONNX file's input dtype ("float32" or "uint8")."""
    return _session_input_dtype(_session(path))


def run_onnx(path, images, num_threads=1):
    """Runs an ONNX file on each image (batch 1) with ONNX Runtime on the CPU.

    Float images (0..255) are cast to the file's input type (uint8 rounds them).
    Returns (logits as float32 (N, classes), per-image latencies in seconds).
    """
    session = _session(path, num_threads)
    name = session.get_inputs()[0].name
    images = arrays.as_input(images, _session_input_dtype(session))
    logits, times = [], []
    for image in images:
        start = time.perf_counter()
        logits.append(session.run(None, {name: image[None]})[0].astype("float32"))
        times.append(time.perf_counter() - start)
    return np.concatenate(logits), times
