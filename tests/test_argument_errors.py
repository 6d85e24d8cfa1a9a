"""Arguments of the wrong type or form get a clear error, and those an experienced user
expects to work do: `from_preset`'s preset and weights (a list, an upper-case `HF://`
scheme, `trainable=False`) and an export report path that goes through a file."""

import numpy as np
import pytest
from keras import ops

from checkpoint_files import google_params, write_vit_jax
from export_helpers import tiny_vit
from keras_vit import ViT, hub
from keras_vit.__main__ import main
from keras_vit.export import checks
from tiny import TINY

ARCHITECTURE = {k: TINY[k] for k in ("patch_size", "hidden_dim", "mlp_dim", "num_heads", "num_layers")}


def assert_same_weights(model, other):
    ours, theirs = model.get_weights(), other.get_weights()
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("preset, weights, message", [
    (["b16"], "default", r"preset must be a str or os.PathLike: .* got \['b16'\] \(list\)"),
    (None, "default", r"preset must be a str or os.PathLike: .* got None \(NoneType\)"),
    ("b16", ["augreg_in1k"], r"weights must be None or a str or os.PathLike: .* got "
                             r"\['augreg_in1k'\] \(list\)"),
    ("b16", 3, r"weights must be None or a str or os.PathLike: .* got 3 \(int\)"),
], ids=["list_preset", "none_preset", "list_weights", "int_weights"])
def test_from_preset_refuses_a_preset_or_weights_that_is_not_a_name_or_path(preset, weights, message):
    with pytest.raises(TypeError, match=message):
        ViT.from_preset(preset, weights=weights)


def test_hub_handles_take_the_scheme_in_any_case(tmp_path, monkeypatch):
    path = write_vit_jax(tmp_path / "hub.npz", google_params())
    fetched = []
    monkeypatch.setattr(hub, "fetch", lambda handle: fetched.append(handle) or path)
    expected = ViT.from_preset(path)
    for handle in ("HF://Owner/Repo", "Hf://Owner/Repo@main"):
        assert_same_weights(ViT.from_preset(handle), expected)
    assert_same_weights(ViT.from_preset("ti16", weights="hF://Owner/Repo", **ARCHITECTURE),
                        expected)
    assert fetched == ["hf://Owner/Repo", "hf://Owner/Repo@main", "hf://Owner/Repo"]


def test_from_preset_takes_trainable_as_the_constructor_does(tmp_path):
    path = write_vit_jax(tmp_path / "vit.npz", google_params())
    frozen = ViT.from_preset(path, trainable=False)
    assert not frozen.trainable and frozen.trainable_weights == []
    trainable = ViT.from_preset(path)
    assert_same_weights(frozen, trainable)
    images = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(frozen(images)),
                                  ops.convert_to_numpy(trainable(images)))
    architecture_only = ViT.from_preset("ti16", weights=None, trainable=False, **ARCHITECTURE)
    assert not architecture_only.trainable and architecture_only.trainable_weights == []


def test_a_report_path_through_a_file_says_so(tmp_path, capsys):
    (tmp_path / "afile").write_text("keep me")
    for report in (tmp_path / "afile" / "r.md", tmp_path / "afile" / "sub" / "r.md"):
        with pytest.raises(NotADirectoryError, match=f"goes through '{tmp_path / 'afile'}', "
                                                     "which is a file, not a folder"):
            checks.check_output_path(report, overwrite=False)
    with pytest.raises(FileNotFoundError, match="does not exist: create"):
        checks.check_output_path(tmp_path / "missing" / "r.md", overwrite=False)
    model_path = tmp_path / "model.keras"
    tiny_vit().save(model_path)
    status = main(["export", str(model_path), "--report", str(tmp_path / "afile" / "r.md")])
    assert status == 2 and "which is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "keep me"
