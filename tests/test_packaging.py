"""The package as users install it: a wheel built from this checkout, installed outside it."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "torch",
                    reason="the wheel is the same on every backend; once is enough")
def test_installed_wheel_loads_the_shipped_model_outside_the_repository(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("keras_vit-*.whl"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    script = (
        "import numpy as np, keras_vit\n"
        f"assert keras_vit.__file__.startswith({str(site)!r}), keras_vit.__file__\n"
        "model = keras_vit.ViT.from_preset('fashion_mnist')\n"
        "print(model.predict(np.zeros((2, 28, 28, 1), 'uint8'), verbose=0).shape)\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "KERAS_VIT_SAVED_MODELS"}
    result = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, capture_output=True,
                            text=True, timeout=300, env=dict(env, PYTHONPATH=str(site)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "(2, 10)"
