"""benchmarks/deploy.py runs end to end on a tiny model (a check that it works and lists
every variant, not a timing: the numbers are not looked at)."""

import os
import sys
from importlib.util import find_spec

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import deploy  # noqa: E402

from keras_vit import export  # noqa: E402


def test_quick_settings_and_refusals():
    args = deploy.parse_args(["--quick", "--threads", "2", "1"])
    assert (args.rounds, args.threads, args.calibration_samples, args.test_images) == (3, [1], 8, 200)
    assert deploy.parse_args(["--threads", "2", "1", "2"]).threads == [1, 2]
    for bad in (["--threads", "0"], ["--rounds", "0"], ["--models", "vit_h14"]):
        with pytest.raises(SystemExit):
            deploy.parse_args(bad)


def test_quality_cells_against_numpy():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(6, 4))
    labels = reference.argmax(-1)
    outputs = reference.copy()
    outputs[0] = -outputs[0]  # image 0 now wrong, and its cosine -1
    assert deploy.quality(outputs, reference, labels) == (f"{100 * 5 / 6:.2f} %", f"{-100 / 6:+.2f} pp")
    assert deploy.quality(outputs, reference, None) == ("-1.0000", f"{4 / 6:.4f}")


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="converts in this process under TensorFlow (subprocesses elsewhere)")
@pytest.mark.skipif(find_spec("onnxruntime") is None or find_spec("torch") is None,
                    reason="the ONNX rows need onnxruntime and torch")
def test_quick_run_lists_every_variant(tmp_path):
    out = tmp_path / "deploy.md"
    assert deploy.main(["--quick", "--models", "tiny", "--backends", "tensorflow",
                        "--keras-modes", "float32", "int8", "--out", str(out)]) == 0
    text = out.read_text()
    assert "- Machine:" in text and "- Date:" in text and "ai-edge-litert" in text
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line.split("|")[3:-1]
            for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    expected = ([("LiteRT", q) for q in export.QUANTIZATIONS]
                + [("ONNX Runtime", v) for v in deploy.ORT_VARIANTS]
                + [("Keras (tensorflow)", "float32"), ("Keras (tensorflow)", "int8")])
    assert set(expected) <= set(rows), sorted(rows)
    # columns: 1 thread, 1 thread CPU time, size, min cosine, mean cosine, XNNPACK, GPU
    for key in expected[:-1]:  # every file and Keras float32 is timed and compared
        latency, cpu, cosine = rows[key][0], rows[key][1], rows[key][3]
        assert latency.strip().endswith(" ms") and float(cosine) > 0.9, (key, rows[key])
        assert cpu.strip().endswith(" ms") or key[0].startswith("Keras"), (key, rows[key])
    for variant in export.QUANTIZATIONS:
        xnnpack = rows[("LiteRT", variant)][5].strip()
        taken, total = map(int, xnnpack.split(" ops")[0].split("/"))
        assert 0 < taken <= total, xnnpack
