"""DINOv3 checkpoints written by timm (`vit_small_patch16_dinov3`, `..._qkvb`, the SwiGLU
`vit_small_plus_/vit_huge_plus_patch16_dinov3`: `save_for_hf`) and by transformers
(`DINOv3ViTModel`, GELU and `use_gated_mlp`: `save_pretrained`) from random weights in every
parameter, loaded with `ViT.from_preset(folder)` and compared with the references' own
outputs (class-token features and the last token sequence) at the checkpoint's size and at
a 48x40 image, which both references take directly (their RoPE follows the image)."""

import json

import keras
import numpy as np
import pytest

from keras_vit import ViT
from reference_families import assert_close, fine_tunes_and_round_trips, randomise_parameters
from timm_reference import import_timm

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
TIMM_ARGS = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, global_pool="token")
HF_ARGS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               image_size=32, patch_size=8, num_register_tokens=2)


def _pixels(images, mean=MEAN, std=STD):
    import torch

    pixels = ((images / 255.0 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    return torch.from_numpy(pixels.astype("float32"))


def _images(height, width, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (2, height, width, 3)).astype("float32")


def _compare(model, images, pooled, sequence):
    assert_close(model(images), pooled)
    tokens = keras.Model(model.input, model.get_layer("encoder_norm").output)
    assert_close(tokens(images), sequence)


def _timm_saved(name, folder, args=TIMM_ARGS):
    timm = import_timm()
    model = timm.create_model(name, pretrained=False, num_classes=0,
                              pretrained_cfg_overlay=dict(mean=tuple(MEAN), std=tuple(STD)),
                              **args).eval()
    randomise_parameters(model)
    timm.models.save_for_hf(model, folder, model_args=args, safe_serialization=True)
    return model


def _timm_outputs(model, images):
    import torch

    with torch.no_grad():
        sequence = model.forward_features(_pixels(images))
        return model.forward_head(sequence).numpy().astype("float64"), sequence.numpy().astype("float64")


@pytest.mark.parametrize("name, mlp_type", [
    ("vit_small_patch16_dinov3", "mlp"), ("vit_small_patch16_dinov3_qkvb", "mlp"),
    ("vit_small_plus_patch16_dinov3", "swiglu"), ("vit_huge_plus_patch16_dinov3", "swiglu")])
def test_timm_dinov3_matches_timm(name, mlp_type, tmp_path):
    reference = _timm_saved(name, tmp_path)
    model = ViT.from_preset(str(tmp_path))
    expected = dict(rope="dinov3", rope_theta=100.0, position_embedding="none", pooling="token",
                    num_register_tokens=4, layer_scale_init=1.0, layer_norm_epsilon=1e-5,
                    include_top=False, num_heads=4, image_mean=MEAN, image_std=STD,
                    mlp_type=mlp_type, mlp_dim=128)
    assert {k: getattr(model, k) for k in expected} == expected
    _compare(model, _images(32, 32), *_timm_outputs(reference, _images(32, 32)))
    resized = ViT.from_preset(str(tmp_path), image_size=(48, 40))
    _compare(resized, _images(48, 40), *_timm_outputs(reference, _images(48, 40)))


def test_timm_dinov3_hub_config_without_model_args(tmp_path):
    """The hub's config.json: no model_args, global_pool "avg" (timm's default pooling,
    not built: the class token is the features), the size in pretrained_cfg."""
    reference = _timm_saved("vit_small_patch16_dinov3", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("model_args")
    config["global_pool"], config["pretrained_cfg"]["input_size"] = "avg", [3, 48, 40]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="num_heads="):  # 32 wide is not timm's "small"
        ViT.from_preset(str(tmp_path))
    model = ViT.from_preset(str(tmp_path), num_heads=4)
    assert model.image_size == (48, 40)
    _compare(model, _images(48, 40), *_timm_outputs(reference, _images(48, 40)))


def test_timm_dinov3_config_is_checked(tmp_path):
    _timm_saved("vit_small_patch16_dinov3", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_args"]["use_abs_pos_emb"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="use_abs_pos_emb=True is an architecture keras_vit does not build"):
        ViT.from_preset(str(tmp_path))
    config["model_args"].update(use_abs_pos_emb=False, swiglu_mlp=True)  # a GELU MLP in the file
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not the SwiGLU MLP config.json's swiglu_mlp says"):
        ViT.from_preset(str(tmp_path))


@pytest.mark.slow
def test_timm_dinov3_small_plus_has_timms_parameter_count(tmp_path):
    """The real-size S+/16 (SwiGLU, hidden 1536), random weights: timm's count, which is
    the reference's 28,683,264."""
    args = dict(img_size=224, global_pool="token")
    reference = _timm_saved("vit_small_plus_patch16_dinov3", tmp_path, args)
    model = ViT.from_preset(str(tmp_path))
    assert (model.mlp_type, model.mlp_dim, model.num_heads) == ("swiglu", 1536, 6)
    assert model.count_params() == sum(p.numel() for p in reference.parameters()) == 28_683_264


def _hf_saved(folder, **changes):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**{**HF_ARGS, **changes})).eval()
    randomise_parameters(hf)
    hf.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": MEAN, "image_std": STD}))
    return hf


def _hf_outputs(hf, images):
    import torch

    with torch.no_grad():
        out = hf(pixel_values=_pixels(images))
    return out.pooler_output.numpy().astype("float64"), out.last_hidden_state.numpy().astype("float64")


@pytest.mark.parametrize("changes", [{}, dict(query_bias=False, proj_bias=False, rope_theta=50.0),
                                     dict(use_gated_mlp=True, hidden_act="silu"),
                                     dict(use_gated_mlp=True, hidden_act="silu", mlp_bias=False)])
def test_hf_dinov3_matches_transformers(changes, tmp_path):
    hf = _hf_saved(tmp_path, **changes)
    model = ViT.from_preset(str(tmp_path))
    expected = dict(rope="dinov3", rope_theta=changes.get("rope_theta", 100.0),
                    position_embedding="none", num_register_tokens=2, include_top=False,
                    layer_norm_epsilon=1e-5, image_mean=MEAN, image_std=STD, mlp_dim=64,
                    mlp_type="swiglu" if "use_gated_mlp" in changes else "mlp",
                    mlp_bias=changes.get("mlp_bias", True))
    assert {k: getattr(model, k) for k in expected} == expected
    _compare(model, _images(32, 32), *_hf_outputs(hf, _images(32, 32)))
    resized = ViT.from_preset(str(tmp_path), image_size=(48, 40))
    _compare(resized, _images(48, 40), *_hf_outputs(hf, _images(48, 40)))


def test_hf_dinov3_reads_nested_rope_theta_and_encoder_prefixed_keys(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf = _hf_saved(tmp_path, rope_theta=30.0)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("rope_theta")
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": 30.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    tensors = load_file(tmp_path / "model.safetensors")
    save_file({("model." + k if k.startswith("layer.") else k): v for k, v in tensors.items()},
              tmp_path / "model.safetensors")
    model = ViT.from_preset(str(tmp_path))
    assert model.rope_theta == 30.0
    _compare(model, _images(32, 32), *_hf_outputs(hf, _images(32, 32)))


@pytest.mark.parametrize("changes", [dict(use_gated_mlp=True), dict(hidden_act="silu")])
def test_hf_dinov3_activation_other_than_its_mlps_is_refused(changes, tmp_path):
    """The gated MLP's gate is SiLU (keras_vit's SwiGLU), the plain one's activation GELU."""
    _hf_saved(tmp_path, **changes)
    with pytest.raises(ValueError, match="hidden_act .* is not DINOv3's"):
        ViT.from_preset(str(tmp_path))


def test_hf_dinov3_fine_tunes_with_a_new_head_and_round_trips(tmp_path):
    _hf_saved(tmp_path)
    fine_tunes_and_round_trips(str(tmp_path), tmp_path)
