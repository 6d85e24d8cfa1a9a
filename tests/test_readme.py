"""The README's commands are the ones CI and the Makefile run, and its examples (and the model
page's) run as written, with a small untrained model standing in for downloaded weights."""

import inspect
import pathlib
import re

import numpy as np
import pytest

import keras_vit
from keras_vit import export

EXPORT = export.export
ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SMALL = dict(hidden_dim=16, mlp_dim=32, num_heads=2, num_layers=1)


def section(path, title):
    text = path.read_text()
    start = text.index(f"\n## {title}\n") if f"\n## {title}\n" in text else text.index(f"# {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def blocks(text, language):
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def run(block, path):
    namespace = {}
    exec(compile(block, str(path), "exec"), namespace)
    return namespace


@pytest.fixture
def small_presets(monkeypatch):
    """`ViT.from_preset` builds the preset's small, untrained variant (no download)."""
    original = keras_vit.ViT.from_preset

    def from_preset(cls, preset, **kwargs):
        return original(preset, **{**kwargs, **SMALL, "weights": None})

    monkeypatch.setattr(keras_vit.ViT, "from_preset", classmethod(from_preset))


def test_install_comes_first_and_uses_the_projects_files():
    text = README.read_text()
    headings = re.findall(r"^## (.*)$", text, re.M)
    assert headings[:2] == ["Install", "Quick start"]
    install = section(README, "Install")
    assert "make venv" in install and 'pip install -e "' in install
    for name in ("requirements-test.txt", "requirements-bench.txt", "pyproject.toml"):
        assert (ROOT / name).exists() and name in install
    extras = re.search(r"\[project.optional-dependencies\]\n(.*?)\n\n",
                       (ROOT / "pyproject.toml").read_text(), re.S)[1]
    for extra in re.findall(r"^(\w+) =", extras, re.M):
        assert f"`{extra}`" in install, f"the README's install section misses the {extra} extra"


def test_quick_start_commands_are_what_ci_and_the_makefile_run():
    commands = [line.split("#")[0].strip()
                for line in blocks(section(README, "Quick start"), "bash")[0].splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M), ".ci/run no longer runs the README's make test"
    makefile = (ROOT / "Makefile").read_text()
    for target in ("venv", "demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"the Makefile has no {target} target"


def test_every_python_block_compiles():
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for block in blocks(path.read_text(), "python"):
            compile(block, str(path), "exec")


@pytest.mark.slow
def test_model_page_examples_run():
    path = ROOT / "docs" / "model.md"
    examples = blocks(section(path, "The model"), "python")
    assert examples, "the model page has no Python example"
    namespaces = [run(block, path) for block in examples]
    assert namespaces[0]["logits"].shape == (2, 1000)
    config = namespaces[1]["config"]
    assert namespaces[1]["model"].architecture == config.replace(drop_path_rate=0.1)


def test_classify_a_photo_runs(small_presets, capsys):
    (block,) = blocks(section(README, "Classify a photo"), "python")
    run(block, README)
    lines = re.findall(r"^ *\d+ .* \d\.\d{3}$", capsys.readouterr().out, re.M)
    assert len(lines) == 3
    class_ids = [int(line.split()[0]) for line in lines]
    assert all(0 <= class_id < 1000 for class_id in class_ids)
    assert lines[0].split()[1] == keras_vit.imagenet_classes()[class_ids[0]].split()[0]


def write_photos(folder, classes, count):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (40, 50, 3), dtype="uint8")
            (folder / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())


def test_fine_tune_and_export_examples_run(small_presets, tmp_path, monkeypatch):
    """The fine-tuning example trains and saves; the export example that continues it hands
    `export.export` the saved file, pixel arrays and class ids (the conversion itself is
    tested in test_export.py)."""
    import keras

    write_photos(tmp_path / "photos" / "train", ["cat", "dog"], 16)
    write_photos(tmp_path / "photos" / "val", ["cat", "dog"], 3)
    monkeypatch.chdir(tmp_path)
    (fine_tune,) = blocks(section(README, "Fine-tune on your images"), "python")
    namespace = run(fine_tune, README)
    assert len(namespace["model"].history.history["val_accuracy"]) == 3
    reloaded = keras.saving.load_model(tmp_path / "photos_vit.keras")
    assert reloaded.output_shape == (None, 2)

    calls = []
    monkeypatch.setattr(export, "export", lambda *args, **kwargs: calls.append(
        inspect.signature(EXPORT).bind(*args, **kwargs).arguments))
    (export_block,) = blocks(section(README, "Export for a phone"), "python")
    exec(compile(export_block, str(README), "exec"), namespace)
    (arguments,) = calls
    assert arguments["model"] == "photos_vit.keras" and arguments["output_dir"] == "phone/"
    assert arguments["quantize"] == ["float32", "matmul_int8", "int8"]
    assert arguments["representative_data"].shape == (32, 224, 224, 3)
    assert arguments["eval_images"].shape == (6, 224, 224, 3)
    np.testing.assert_array_equal(arguments["eval_labels"], [0, 0, 0, 1, 1, 1])
    prose = section(README, "Export for a phone")
    for mode in arguments["quantize"]:
        assert f"phone/photos_vit_{export.FILE_SUFFIXES[mode]}.tflite" in prose
