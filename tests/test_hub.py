"""`hf://owner/repo[@revision]` handles against a local stand-in for the Hugging Face Hub
on 127.0.0.1 (tests/hub_server.py): a transformers ViT loads like in transformers, a
revision is asked for, the huggingface_hub cache serves it again offline, and a missing or
gated repository, a missing revision or weights file and malformed handles fail clearly.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from hub_server import TOKEN, StandInHub, use_stand_in_hub
from keras_vit import ViT, hub, presets
from keras_vit.download import DownloadError

COMMIT = "0123456789abcdef" * 2 + "01234567"
WEIGHTS = hub.WEIGHTS
PREPROCESSOR = json.dumps({"image_processor_type": "ViTImageProcessor", "image_mean": [0.5] * 3,
                           "image_std": [0.5] * 3, "size": {"height": 32, "width": 32}}).encode()


def _hf_vit(folder, num_labels, seed):
    """A transformers ViTForImageClassification, every parameter random, saved in `folder`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, num_labels=num_labels,
    )
    torch.manual_seed(seed)
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = 1.0 if "layernorm" in name and name.endswith("weight") else 0.0
            param.copy_(scale + 0.2 * torch.randn_like(param))
    model.save_pretrained(folder)
    return model, {name: (folder / name).read_bytes() for name in ("config.json", WEIGHTS)}


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """Two transformers ViTs: `main` (5 classes) and `v1` (2 classes), with their files."""
    folder = tmp_path_factory.mktemp("hf")
    main, main_files = _hf_vit(folder / "main", num_labels=5, seed=0)
    v1, v1_files = _hf_vit(folder / "v1", num_labels=2, seed=1)
    return {"main": (main, {**main_files, "preprocessor_config.json": PREPROCESSOR}),
            "v1": (v1, v1_files)}


@pytest.fixture
def test_hub(monkeypatch, tmp_path, hf_models):
    """The stand-in Hub with test/vit (main: the 5-class model with a preprocessor config;
    v1.0: the 2-class model, without), test/gated, test/pytorch-only (no model.safetensors)
    and test/config-403 (its config.json answers 403)."""
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    server = StandInHub()
    use_stand_in_hub(monkeypatch, server.url, tmp_path / "hf_home")
    main, v1 = hf_models["main"][1], hf_models["v1"][1]
    server.commits = server.add("test/vit", {"main": main, "v1.0": v1})
    server.add("test/gated", {"main": main}, gated=True)
    server.add("test/pytorch-only", {"main": {"config.json": main["config.json"],
                                              "pytorch_model.bin": b"\0" * 8}})
    server.add("test/config-403", {"main": {**main, "config.json": 403}})
    yield server
    server.stop()


def _logits_match(model, hf_model, images):
    torch = pytest.importorskip("torch")
    pixels = torch.from_numpy((images / 127.5 - 1.0).transpose(0, 3, 1, 2))
    with torch.no_grad():
        expected = hf_model(pixel_values=pixels).logits.numpy()
    actual = ops.convert_to_numpy(model(images))
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


def _files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_loads_like_transformers_then_from_the_cache_offline(
        test_hub, hf_models, images, monkeypatch, tmp_path):
    model = ViT.from_preset("hf://test/vit")
    assert (model.num_heads, model.num_classes) == (4, 5)  # the width alone would give 1 head
    _logits_match(model, hf_models["main"][0], images)
    v1 = ViT.from_preset("hf://test/vit@v1.0")
    assert v1.num_classes == 2
    _logits_match(v1, hf_models["v1"][0], images)

    main_commit, v1_commit = test_hub.commits["main"], test_hub.commits["v1.0"]
    requested = {(method, path) for method, origin, path in test_hub.requests if origin == "hub"}
    assert ("HEAD", f"/test/vit/resolve/main/{WEIGHTS}") in requested
    assert ("HEAD", f"/test/vit/resolve/v1.0/{WEIGHTS}") in requested
    # The config files come from the commit the weights were resolved to.
    for commit in (main_commit, v1_commit):
        assert ("GET", f"/test/vit/resolve/{commit}/config.json") in requested
    assert sum(origin == "cdn" and method == "GET"
               for method, origin, _ in test_hub.requests) == 2  # each weights file once

    cache = tmp_path / "hf_home" / "hub"
    path = hub.fetch("hf://test/vit")
    assert path == str(cache / "models--test--vit" / "snapshots" / main_commit / WEIGHTS)
    snapshots = _files_under(cache / "models--test--vit" / "snapshots")
    assert snapshots == sorted(
        [f"{main_commit}/{name}" for name in ("config.json", WEIGHTS, "preprocessor_config.json")]
        + [f"{v1_commit}/{name}" for name in ("config.json", WEIGHTS)])
    assert not (tmp_path / "keras_home").exists()  # only the huggingface_hub cache is used

    test_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub was imported
    again = ViT.from_preset("hf://test/vit")
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # set before import
    assert hub.fetch("hf://test/vit@v1.0").endswith(f"{v1_commit}/{WEIGHTS}")
    with pytest.raises(DownloadError, match="test/elsewhere.*not in the Hugging Face cache"
                                            ".*HF_HUB_OFFLINE is set"):
        hub.fetch("hf://test/elsewhere")


def test_a_fresh_process_reads_the_environment_variables(test_hub, tmp_path):
    """As users run it: huggingface_hub imported (lazily, by keras) after HF_ENDPOINT and
    HF_HUB_CACHE are set, and nothing patched. The numpy backend keeps the start-up short."""
    script = "from keras_vit import hub; print(hub.fetch('hf://test/vit@v1.0'))"
    env = dict(os.environ, KERAS_BACKEND="numpy", HF_HUB_DISABLE_TELEMETRY="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    commit = test_hub.commits["v1.0"]
    snapshot = tmp_path / "hf_home" / "hub" / "models--test--vit" / "snapshots" / commit
    assert result.stdout.strip().splitlines()[-1] == str(snapshot / WEIGHTS)
    assert (snapshot / "config.json").is_file()
    assert ("HEAD", "hub", f"/test/vit/resolve/v1.0/{WEIGHTS}") in test_hub.requests


def test_handles_take_overrides_and_serve_as_weights(test_hub, monkeypatch):
    model = ViT.from_preset("hf://test/vit", num_classes=10, image_size=64)
    assert (model.num_classes, model.image_size) == (10, (64, 64))
    assert ViT.from_preset("hf://test/vit", weights=None).num_heads == 4
    with pytest.raises(ValueError, match="must be 'default' .* or None"):
        ViT.from_preset("hf://test/vit", weights="augreg_in21k")
    monkeypatch.setitem(presets.PRESETS, "tiny", {
        "description": "tiny", "weights": {}, "default_weights": None,
        "config": dict(patch_size=8, hidden_dim=32, mlp_dim=64, num_heads=4, num_layers=1),
    })
    tiny = ViT.from_preset("tiny", weights="hf://test/vit@v1.0")
    assert (tiny.num_classes, tiny.image_size) == (2, (32, 32))


def test_gated_repository_says_to_accept_the_licence_and_log_in(test_hub, monkeypatch):
    for token, status in ((None, 401), ("hf_other", 403)):
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        with pytest.raises(DownloadError) as err:
            ViT.from_preset("hf://test/gated")
        message = str(err.value)
        assert f"test/gated is a gated repository (HTTP {status})" in message
        assert "Accept its licence" in message and f"{test_hub.url}/test/gated" in message
        assert "hf auth login" in message and "HF_TOKEN" in message
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # huggingface_hub sends it as it always does
    assert hub.fetch("hf://test/gated").endswith(WEIGHTS)


@pytest.mark.parametrize("handle, message", [
    ("hf://test/missing", "there is no repository test/missing on http://127.0.0.1"),
    ("hf://test/vit@v9", "test/vit has no revision 'v9'"),
    ("hf://test/pytorch-only", "model.safetensors of test/pytorch-only does not exist"),
])
def test_missing_repository_revision_or_weights(handle, message, test_hub):
    with pytest.raises(DownloadError, match=re.escape(message)) as err:
        ViT.from_preset(handle)
    assert err.value.not_found


def test_a_config_error_other_than_not_found_raises(test_hub):
    with pytest.raises(DownloadError, match=r"config.json of test/config-403 .*HTTP 403"):
        ViT.from_preset("hf://test/config-403")


@pytest.mark.parametrize("handle", [
    "hf://onlyowner", "hf://a/b/c", "hf://../x", "hf://owner/repo@", "hf://", "hf://owner/",
    "hf:///repo", "hf://owner/repo/", "hf://own er/repo", "hf://ownér/repo", "hf://-owner/repo",
    "hf://owner/re--po", "hf://owner/re..po", "hf://owner/repo.git", "hf://owner/" + "r" * 97,
    "hf://owner/repo\n", "hf://owner/repo@../../../x", "hf://owner/repo@main/../../x",
    "hf://owner/repo@a//b", "hf://owner/repo@/abs", "hf://owner/repo@.hidden",
    "hf://owner/repo@a b", "hf://owner/repo@v1@v2",
])
def test_malformed_handles_are_refused_before_any_request(handle, test_hub, tmp_path):
    with pytest.raises(ValueError) as err:
        ViT.from_preset(handle)
    message = str(err.value)
    assert repr(handle) in message
    assert "expected hf://owner/repo or hf://owner/repo@revision" in message
    assert test_hub.requests == []
    assert _files_under(tmp_path) == []


@pytest.mark.parametrize("handle, parsed", [
    ("hf://google/vit-base-patch16-224", ("google/vit-base-patch16-224", None)),
    ("hf://timm/vit_base_patch16_224.augreg2_in21k_ft_in1k@main",
     ("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "main")),
    ("hf://o/r@refs/pr/1", ("o/r", "refs/pr/1")),
    ("hf://O_1/r.2@v1.0-rc_1", ("O_1/r.2", "v1.0-rc_1")),
    ("hf://a/b@" + COMMIT, ("a/b", COMMIT)),
])
def test_well_formed_handles_parse(handle, parsed):
    assert hub.parse(handle) == parsed


def test_without_huggingface_hub_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import` raises ImportError
    with pytest.raises(ImportError, match="pip install huggingface_hub"):
        ViT.from_preset("hf://google/vit-base-patch16-224")


def test_a_timm_repository_loads_with_its_config(test_hub, tmp_path):
    """timm's hub repos hold model.safetensors and timm's config.json: the heads, the
    mean / std and the family come from that config, as timm reads it."""
    from reference_families import compare_with_timm, timm_saved_model

    reference, path = timm_saved_model("dinov2_registers", tmp_path / "timm")
    folder = tmp_path / "timm"
    test_hub.add("timm/tiny_reg4_dinov2", {"main": {
        name: (folder / name).read_bytes() for name in ("config.json", WEIGHTS)}})
    model = ViT.from_preset("hf://timm/tiny_reg4_dinov2", include_top=False)
    assert (model.num_heads, model.num_register_tokens) == (4, 4)
    compare_with_timm(model, reference, 32)
