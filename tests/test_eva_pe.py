"""timm's EVA-02 (`eva02_*`) and Perception Encoder core (`vit_pe_core_*`) checkpoints,
written by timm (`save_for_hf`: model.safetensors + config.json) from random weights in
every parameter, loaded with `ViT.from_preset(folder)` and compared with timm's own
outputs at the checkpoint's size and at a 48x40 image (timm with `dynamic_img_size`:
its position table resampled and its RoPE recomputed for the image, as keras_vit does)."""

import json

import numpy as np
import pytest

from keras_vit import ViT
from reference_families import assert_close, fine_tunes_and_round_trips, randomise_parameters
from timm_reference import import_timm

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
CASES = {  # name: (model_args beyond TINY, the config keras_vit must read)
    "eva02_tiny_patch14_224": (dict(num_classes=0), dict(  # packed SwiGLU, fused qkv
        pooling="gap", class_token=True, pooled_norm=True, mlp_type="swiglu",
        mlp_inner_norm=False, key_bias=False, rope="axial", rope_reference_grid=(16, 16),
        layer_norm_epsilon=1e-6, include_top=False)),
    "eva02_base_patch14_224": (dict(num_classes=5), dict(  # SwiGLU with its norm, q/k/v
        pooling="gap", class_token=True, pooled_norm=True, mlp_type="swiglu",
        mlp_inner_norm=True, key_bias=False, rope_grid_offset=0.0, num_classes=5)),
    "vit_pe_core_base_patch16_224": (dict(num_classes=16), dict(  # projection as the head
        pooling="map", class_token=True, pooling_heads=8, pre_norm=True, patch_bias=False,
        rope_grid_offset=1.0, rope_grid_indexing="xy", rope_reference_grid=(14, 14),
        layer_norm_epsilon=1e-5, mlp_type="mlp", key_bias=True, num_classes=16)),
}


def _timm_saved(name, folder, **changes):
    timm = import_timm()
    args = {**TINY, **CASES[name][0], **changes}
    model = timm.create_model(name, pretrained=False, dynamic_img_size=True,
                              pretrained_cfg_overlay=dict(mean=tuple(MEAN), std=tuple(STD)),
                              **args).eval()
    randomise_parameters(model)
    timm.models.save_for_hf(model, folder, model_args=args, safe_serialization=True)
    return model


def _timm_output(model, height, width):
    import torch

    images = np.random.default_rng(1).uniform(0, 255, (2, height, width, 3)).astype("float32")
    pixels = ((images / 255.0 - np.array(MEAN)) / np.array(STD)).transpose(0, 3, 1, 2)
    with torch.no_grad():
        return images, model(torch.from_numpy(pixels.astype("float32"))).numpy().astype("float64")


def _check(model, reference, height, width):
    images, expected = _timm_output(reference, height, width)
    assert_close(model(images), expected)


@pytest.mark.parametrize("name", CASES)
def test_matches_timm(name, tmp_path):
    reference = _timm_saved(name, tmp_path)
    model = ViT.from_preset(str(tmp_path))
    expected = dict(CASES[name][1], num_heads=4, image_mean=MEAN, image_std=STD)
    assert {k: getattr(model, k) for k in expected} == expected
    _check(model, reference, 32, 32)
    _check(ViT.from_preset(str(tmp_path), image_size=(48, 40)), reference, 48, 40)


def test_hub_config_without_model_args(tmp_path):
    """The hub's config.json: no model_args (the family's values: EVA-02's 16x16 RoPE
    reference grid, average pooling), the size in pretrained_cfg."""
    reference = _timm_saved("eva02_base_patch14_224", tmp_path, num_classes=0)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("model_args")
    config["pretrained_cfg"]["input_size"] = [3, 32, 32]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="num_heads="):  # 32 wide is not timm's "base"
        ViT.from_preset(str(tmp_path))
    model = ViT.from_preset(str(tmp_path), num_heads=4)
    assert (model.rope_reference_grid, model.pooling) == ((16, 16), "gap")
    _check(model, reference, 32, 32)


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "vit_pe_core_base_patch16_224"])
def test_fine_tunes_and_round_trips(name, tmp_path):
    _timm_saved(name, tmp_path)
    fine_tunes_and_round_trips(str(tmp_path), tmp_path)


@pytest.mark.parametrize("name, changes, message", [
    ("eva02_base_patch16_clip_224", dict(num_classes=0), "scale_attn_inner"),
    ("eva02_base_patch14_224", dict(qk_norm=True), "QK normalisation"),
    ("vit_pe_spatial_tiny_patch16_512", dict(num_classes=0), "eva02_\\* and vit_pe_core_\\*"),
])
def test_unbuilt_variants_are_refused_by_name(name, changes, message, tmp_path):
    timm = import_timm()
    args = {**TINY, **changes}
    model = timm.create_model(name, pretrained=False, **args)
    timm.models.save_for_hf(model, tmp_path, model_args=args, safe_serialization=True)
    with pytest.raises(ValueError, match=message):
        ViT.from_preset(str(tmp_path))


@pytest.mark.parametrize("name, key", [("eva02_tiny_patch14_224", "blocks.1.attn.q_bias"),
                                       ("vit_pe_core_base_patch16_224", "blocks.1.attn.qkv.bias")])
def test_a_bias_missing_from_one_block_is_named(name, key, tmp_path):
    from safetensors.numpy import load_file, save_file

    _timm_saved(name, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors[key]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=f"has some of its .*_bias biases but not {key}"):
        ViT.from_preset(str(tmp_path))


FLAGSHIPS = {"eva02_tiny_patch14_224.mim_in22k": 5_502_144,
             "eva02_base_patch14_224.mim_in22k": 85_758_720,
             "vit_pe_core_base_patch16_224.fb": 93_673_984}


@pytest.mark.slow
@pytest.mark.parametrize("name", FLAGSHIPS)
def test_flagship_parameter_counts(name, tmp_path):
    """The real-size models, saved by timm with the hub's config.json (no model_args),
    load with timm's parameter count."""
    timm = import_timm()
    reference = timm.create_model(name, pretrained=False)
    count = sum(p.numel() for p in reference.parameters())
    assert count == FLAGSHIPS[name]
    timm.models.save_for_hf(reference, tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("model_args", None)  # as on the hub
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert ViT.from_preset(str(tmp_path)).count_params() == count
