"""Files are replaced atomically (keras_vit.atomic): a kill in the middle of `ViT.save` or
an export leaves the old file, an export worker never outlives its parent, and a recipe's
model.keras opens after only `import keras_vit`."""

import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import atomic_worker
from tiny import TINY, recipe_model_args, write_fashion_mnist
from keras_vit import ViT, atomic, training

REPO = Path(__file__).resolve().parent.parent
one_backend = pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") != "jax",
    reason="a subprocess test, run under one backend (JAX); what it checks is the same on all")


def test_replacing_a_file_keeps_the_old_one_on_error(tmp_path):
    path = tmp_path / "a.bin"
    atomic.write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic.replacing(path) as tmp:
            Path(tmp).write_bytes(b"partial")
            raise RuntimeError("midway")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]
    atomic.write_text(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓" and os.listdir(tmp_path) == ["a.bin"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic.replacing(path, overwrite=False):
            pass
    with pytest.raises(FileNotFoundError, match="Nothing was written"):
        with atomic.replacing(tmp_path / "b.bin"):
            pass
    assert os.listdir(tmp_path) == ["a.bin"]


def test_replacing_a_folder_swaps_it_whole(tmp_path):
    (tmp_path / "out" / "old_only").mkdir(parents=True)
    (tmp_path / "out" / "x.txt").write_text("old")
    with atomic.replacing(tmp_path / "out") as tmp:
        os.makedirs(os.path.join(tmp, "sub"))
        Path(tmp, "x.txt").write_text("new")
    assert sorted(os.listdir(tmp_path / "out")) == ["sub", "x.txt"]
    assert (tmp_path / "out" / "x.txt").read_text() == "new"
    assert os.listdir(tmp_path) == ["out"]  # the old folder and the temporary one are gone


def test_vit_save_overwrite_false_refuses_an_existing_file(tmp_path):
    model = ViT(**TINY)
    model.save(tmp_path / "m.keras")
    with pytest.raises(FileExistsError, match="m.keras"):
        model.save(tmp_path / "m.keras", overwrite=False)


def test_csv_log_matches_keras_csv_logger(tmp_path):
    """The atomic logger writes the bytes Keras's CSVLogger writes, appending on resume."""
    epochs = [{"loss": 1.5, "accuracy": np.float32(0.25)}, {"loss": 0.5, "accuracy": 0.75}]
    for name, logger in (("keras.csv", keras.callbacks.CSVLogger),
                         ("atomic.csv", training.AtomicCSVLogger)):
        for run in range(2):  # a second run appends
            callback = logger(str(tmp_path / name), append=True)
            callback.on_train_begin()
            for epoch, logs in enumerate(epochs):
                callback.on_epoch_end(2 * run + epoch, dict(logs))
            callback.on_train_end()
    assert (tmp_path / "atomic.csv").read_bytes() == (tmp_path / "keras.csv").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["atomic.csv", "keras.csv"]


def test_clear_resume_dir_removes_what_a_killed_save_left(tmp_path):
    backup = tmp_path / "backup"
    training.check_resume_dir(backup, {"run": 1})
    leftover = backup / ".latest.weights.h5.k3j2_x.tmp"  # a kill inside atomic.replacing
    leftover.mkdir()
    (leftover / training.CHECKPOINT_WEIGHTS).write_bytes(b"partial")
    (backup / ".notes.tmp").write_text("a file: not a temporary folder of ours")
    with pytest.raises(ValueError, match=r"not write \.notes\.tmp"):
        training.clear_resume_dir(backup)
    (backup / ".notes.tmp").unlink()
    training.clear_resume_dir(backup)
    assert not backup.exists()


@pytest.mark.slow
@one_backend
def test_vit_save_killed_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.keras"
    model = ViT(**TINY)
    model.save(path)
    old = path.read_bytes()
    old_stat = os.stat(path)
    proc = atomic_worker.start("save", str(path), env={"KERAS_BACKEND": "jax"})

    def writing():  # the old file changed, or a new one passed 1 MB
        stat = os.stat(path) if path.exists() else None
        if stat is None or (stat.st_size, stat.st_mtime_ns) != (old_stat.st_size, old_stat.st_mtime_ns):
            return True
        return any(size > 2**20 for size in atomic_worker.files_under(tmp_path).values())

    atomic_worker.kill_when(proc, writing, signal.SIGKILL)
    assert path.read_bytes() == old
    loaded = keras.saving.load_model(path)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert atomic_worker.wait_for(lambda: os.listdir(tmp_path) == ["model.keras"]), (
        f"a killed save left {os.listdir(tmp_path)}")  # the reaper removed its folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A TFLite file, the old file a killed export must keep, and a tiny model.keras whose
    export would write other bytes (other weights)."""
    pytest.importorskip("tensorflow")
    from keras_vit import export

    folder = tmp_path_factory.mktemp("export")
    export.export_tflite(ViT(**TINY), folder / "model.tflite")
    keras.utils.set_random_seed(1)
    ViT(**TINY).save(folder / "model.keras")
    return folder


@pytest.mark.slow
@one_backend
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_export_killed_midway_stops_its_worker_and_keeps_the_old_file(exported, tmp_path, signum):
    from keras_vit import export

    out = tmp_path / "out"
    out.mkdir()
    for name in ("model.keras", "model.tflite"):
        (out / name).write_bytes((exported / name).read_bytes())
    old = (out / "model.tflite").read_bytes()
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = atomic_worker.start("export", str(out / "model.keras"), str(out / "model.tflite"),
                               env={"KERAS_BACKEND": "jax", "TMPDIR": str(temp),
                                    "PYTHONWARNINGS": "ignore"})

    def converting():  # the TensorFlow worker wrote the SavedModel it converts
        return any(name.endswith("saved_model.pb") for name in atomic_worker.files_under(temp))

    workers = atomic_worker.kill_when(proc, converting, signum)
    try:
        assert workers, "the export ran no worker process"
        assert atomic_worker.wait_gone(workers) == [], "the export worker outlived its parent"
    finally:
        atomic_worker.kill_all(workers)
    assert (out / "model.tflite").read_bytes() == old
    assert export.tflite_ops(out / "model.tflite")  # still a TFLite file that opens
    # Every temporary folder was removed, the worker's too: by the export's clean-up on
    # SIGTERM, by keras_vit.atomic's reaper on SIGKILL.
    assert atomic_worker.wait_for(
        lambda: sorted(os.listdir(out)) == ["model.keras", "model.tflite"]), os.listdir(out)
    assert atomic_worker.wait_for(lambda: os.listdir(temp) == []), os.listdir(temp)
    if signum == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM


@pytest.mark.slow
@one_backend
def test_recipe_model_opens_after_import_keras_vit(tmp_path):
    """A recipe's model.keras holds its optimizer's WarmupCosine schedule: a fresh
    process that imports only keras_vit loads it."""
    pytest.importorskip("tensorflow")
    from recipes import fashion_mnist

    data = write_fashion_mnist(tmp_path / "data", train=32, test=16)
    out = tmp_path / "run"
    assert fashion_mnist.main(["--data-dir", str(data), "--output-dir", str(out), "--epochs", "1",
                               "--batch-size", "16", "--verbose", "0", "--pipeline", "tf.data",
                               *recipe_model_args()]) == 0
    with zipfile.ZipFile(out / "model.keras") as archive:
        assert "WarmupCosine" in archive.read("config.json").decode()  # what failed to load
    code = ("import sys, keras, keras_vit, numpy as np; m = keras.saving.load_model(sys.argv[1]); "
            "print(type(m.optimizer).__name__, m.predict(np.zeros((1, 28, 28, 1)), verbose=0).shape)")
    result = subprocess.run([sys.executable, "-c", code, str(out / "model.keras")],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == ["AdamW", "(1,", "10)"]


def test_recipe_unknown_model_key_is_a_usage_error_before_anything_is_written(tmp_path, capsys):
    from recipes import fashion_mnist

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        fashion_mnist.main(["--output-dir", str(out), "--model", "num_clases=10"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --model: " in error and "'num_clases' (did you mean 'num_classes'?)" in error
    assert not out.exists()


def test_recipe_bad_model_value_stops_before_anything_is_written(tmp_path):
    from recipes import fashion_mnist

    data = write_fashion_mnist(tmp_path / "data", train=32, test=16)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="num_heads"):
        fashion_mnist.main(["--data-dir", str(data), "--output-dir", str(out), "--epochs", "1",
                            "--batch-size", "16", "--verbose", "0", "--pipeline", "numpy",
                            *recipe_model_args(num_heads=-2)])
    assert not out.exists()


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="exports in this process under TensorFlow; the worker subprocess "
                           "under JAX is tested by the kill tests")
def test_export_replaces_files_only_once_they_pass_their_checks(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    from keras_vit import export

    model = ViT(**TINY)
    (tmp_path / "m_saved_model").mkdir()
    (tmp_path / "m_saved_model" / "old.txt").write_text("old")
    (tmp_path / "m_fp32.tflite").write_bytes(b"old")
    (tmp_path / "report.md").write_text("old")
    before = atomic_worker.files_under(tmp_path)

    def not_builtin(path):
        raise RuntimeError(f"{path} holds ops outside TFLite's builtins: FlexErf")

    monkeypatch.setattr(export, "check_builtin_ops", not_builtin)
    with pytest.raises(RuntimeError, match="FlexErf"):
        export.export(model, tmp_path, name="m", saved_model=True, overwrite=True,
                      report_path=tmp_path / "report.md", verbose=False)
    assert atomic_worker.files_under(tmp_path) == before  # no file changed, none left behind
    monkeypatch.undo()
    reports = export.export(model, tmp_path, name="m", saved_model=True, overwrite=True,
                            report_path=tmp_path / "report.md", verbose=False)
    assert sorted(os.listdir(tmp_path)) == ["m_fp32.tflite", "m_saved_model", "report.md"]
    assert not (tmp_path / "m_saved_model" / "old.txt").exists()
    assert [r["path"] for r in reports] == [str(tmp_path / "m_saved_model"),
                                            str(tmp_path / "m_fp32.tflite")]
    assert export.tflite_ops(tmp_path / "m_fp32.tflite") and "| variant |" in (
        tmp_path / "report.md").read_text()


@one_backend
def test_sigkill_inside_replacing_leaves_nothing_behind(tmp_path):
    """No Python code runs on SIGKILL: the reaper process removes the temporary folder."""
    path = tmp_path / "a.bin"
    atomic.write_bytes(path, b"old")
    proc = atomic_worker.start("hold", str(path))
    atomic_worker.kill_when(proc, lambda: len(os.listdir(tmp_path)) == 2, signal.SIGKILL)
    assert atomic_worker.wait_for(lambda: os.listdir(tmp_path) == ["a.bin"]), os.listdir(tmp_path)
    assert path.read_bytes() == b"old"


def test_sigterm_inside_replacing_removes_the_temporary_folder(tmp_path):
    path = tmp_path / "a.bin"
    atomic.write_bytes(path, b"old")
    with pytest.raises(SystemExit) as exit_info:
        with atomic.replacing(path) as tmp:
            Path(tmp).write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
