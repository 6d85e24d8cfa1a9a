"""Hugging Face checkpoints of the later ViT families (DINOv2 with and without registers,
MAE, CLIP's and SigLIP's image towers, DeiT distilled, AIMv2 with and without its head;
whole CLIP, SigLIP, AIMv2 and MAE models too), written by transformers from random weights,
loaded with `from_preset` and compared with transformers' own outputs: pooled features or
projected embeddings, and the last token sequence."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit import ViT
from reference_families import fine_tunes_and_round_trips

COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              image_size=32, patch_size=8)
MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]  # written to preprocessor_config.json
FAMILIES = {
    "dinov2": ("Dinov2Config", "Dinov2Model", {}),
    "dinov2_registers": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel",
                         {"num_register_tokens": 3}),
    "mae": ("ViTMAEConfig", "ViTMAEModel", {"mask_ratio": 0.0}),
    "clip": ("CLIPVisionConfig", "CLIPVisionModelWithProjection", {"projection_dim": 16}),
    "deit_distilled": ("DeiTConfig", "DeiTForImageClassificationWithTeacher", {"num_labels": 5}),
    "deit": ("DeiTConfig", "DeiTForImageClassification", {"num_labels": 5}),
    "deit_model": ("DeiTConfig", "DeiTModel", {}),
    "siglip": ("SiglipVisionConfig", "SiglipVisionModel", {}),
    # Towers saved alone by transformers 5 (keys without "vision_model."); SigLIP's without
    # its MAP head loads as the average of its normed tokens.
    "clip_tower": ("CLIPVisionConfig", "CLIPVisionModel", {}),
    "siglip_headless": ("SiglipVisionConfig", "SiglipVisionModel", {"vision_use_head": False}),
    # RMSNorm, SwiGLU, a norm after the patch projection; without biases and without the
    # attention-pooling head, then with the head, without and with biases
    "aimv2": ("Aimv2VisionConfig", "Aimv2VisionModel", {"use_head": False}),
    "aimv2_head": ("Aimv2VisionConfig", "Aimv2VisionModel", {"use_head": True}),
    "aimv2_head_biases": ("Aimv2VisionConfig", "Aimv2VisionModel",
                          {"use_head": True, "qkv_bias": True, "mlp_bias": True}),
}
# Aimv2VisionModel has no interpolate_pos_encoding: tested at another size on its own.
RESIZABLE = [family for family in FAMILIES if not family.startswith("aimv2")]
HEADED = ("clip", "deit_distilled", "deit")  # loaded with their head (CLIP's: the projection)
TEXT = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            vocab_size=64, max_position_embeddings=16)
# Whole-model checkpoints, as the hub holds them: the image tower is read, the rest (text
# tower, MAE's decoder) is left alone without a warning.
WHOLE = {
    "clip_whole": ("CLIPConfig", "CLIPModel", "vision_model",
                   dict(text_config=TEXT, vision_config=COMMON, projection_dim=16)),
    "siglip_whole": ("SiglipConfig", "SiglipModel", "vision_model",
                     dict(text_config=TEXT, vision_config=COMMON)),
    "aimv2_whole": ("Aimv2Config", "Aimv2Model", "vision_model",
                    dict(text_config=TEXT, vision_config=COMMON, projection_dim=16)),
    "mae_pretraining": ("ViTMAEConfig", "ViTMAEForPreTraining", "vit",
                        dict(COMMON, mask_ratio=0.0, decoder_hidden_size=16,
                             decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                             decoder_intermediate_size=32)),
}


def _saved_model(family, folder):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if family in WHOLE:
        config_name, model_name, _, kwargs = WHOLE[family]
    else:
        config_name, model_name, extra = FAMILIES[family]
        kwargs = {**COMMON, **extra}
    config = getattr(transformers, config_name)(**kwargs)
    torch.manual_seed(0)
    hf = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():  # every parameter random and relevant
            base = 1.0 if name.endswith("weight") and param.ndim == 1 else 0.0
            param.copy_(base + 0.2 * torch.randn_like(param))
    hf.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    return hf, str(folder / "model.safetensors")


def _hf_outputs(family, hf, images, interpolate_pos_encoding=False):
    import torch

    pixels = ((images / 255.0 - np.array(MEAN)) / np.array(STD)).transpose(0, 3, 1, 2)
    # DINOv2 has no such argument: it interpolates whenever the image size differs.
    options = {"interpolate_pos_encoding": True} if (
        interpolate_pos_encoding and not family.startswith("dinov2")) else {}
    with torch.no_grad():
        out = hf(pixel_values=torch.from_numpy(pixels.astype("float32")), **options)
    if family in ("deit_distilled", "deit"):  # logits (distilled: both heads' average) only
        return out.logits.numpy().astype("float64"), None
    sequence = out.last_hidden_state.numpy()
    if family == "mae":  # MAE shuffles the patch tokens (all kept with mask_ratio 0)
        restore = out.ids_restore.numpy()[..., None]
        sequence = np.concatenate(
            [sequence[:, :1], np.take_along_axis(sequence[:, 1:], restore, axis=1)], axis=1)
    pooled = {"clip": lambda: out.image_embeds.numpy(), "siglip": lambda: out.pooler_output.numpy(),
              "clip_tower": lambda: out.pooler_output.numpy(),  # the normed class token
              "siglip_headless": lambda: sequence.mean(1),
              "deit_model": lambda: out.pooler_output.numpy(),  # tanh(Dense(class token))
              "aimv2": lambda: sequence.mean(1), "aimv2_head": lambda: out.pooler_output.numpy(),
              "aimv2_head_biases": lambda: out.pooler_output.numpy(),
              }.get(family, lambda: sequence[:, 0])()
    return pooled.astype("float64"), sequence.astype("float64")


def _close(ours, theirs):
    ours = ops.convert_to_numpy(ours).astype("float64")
    assert ours.shape == theirs.shape
    err = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    assert err < 1e-4, f"relative error {err:.2e}"


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_transformers(family, tmp_path):
    hf, path = _saved_model(family, tmp_path)
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    pooled, sequence = _hf_outputs(family, hf, images)
    model = ViT.from_preset(path, include_top=family in HEADED)
    assert model.num_heads == 4 and model.image_mean == MEAN and model.image_std == STD
    _close(model(images), pooled)
    if sequence is None:
        assert model.distillation_token and model.distillation_head == (family == "deit_distilled")
        if model.distillation_head:
            assert model.get_layer("head_dist").kernel.shape == (32, 5)
        return
    # CLIP's last_hidden_state comes before its final norm; the others' after it.
    last = f"encoder_block_{model.num_layers - 1}" if family.startswith("clip") else "encoder_norm"
    tokens = keras.Model(model.input, model.get_layer(last).output)
    _close(tokens(images), sequence)
    expected = {"dinov2": dict(layer_scale_init=1.0), "mae": {},
                "deit_model": dict(distillation_token=True, representation_size=32),
                "dinov2_registers": dict(num_register_tokens=3),
                "clip": dict(pre_norm=True, mlp_activation="quick_gelu", layer_norm_epsilon=1e-5),
                "siglip": dict(pooling="map", mlp_activation="gelu_tanh"),
                "clip_tower": dict(pre_norm=True, mlp_activation="quick_gelu"),
                "siglip_headless": dict(pooling="gap", mlp_activation="gelu_tanh"),
                "aimv2": dict(AIMV2, query_bias=False, mlp_bias=False),
                "aimv2_head": dict(AIMV2, pooling="probe", key_bias=False, mlp_bias=False),
                "aimv2_head_biases": dict(AIMV2, pooling="probe", key_bias=True, output_bias=True,
                                          mlp_bias=True)}
    assert all(getattr(model, k) == v for k, v in expected[family].items())


AIMV2 = dict(pooling="gap", norm_type="rms_norm", mlp_type="swiglu", patch_norm=True,
             layer_norm_epsilon=1e-5, mlp_dim=64)


@pytest.mark.parametrize("family", RESIZABLE)
def test_family_at_another_image_size_matches_interpolate_pos_encoding(family, tmp_path):
    """48x48 images: the file's 4x4 position grid is resampled to 6x6 as transformers'
    `interpolate_pos_encoding` does (bicubic; antialiased for DINOv2 with registers)."""
    hf, path = _saved_model(family, tmp_path)
    images = np.random.default_rng(3).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    pooled, sequence = _hf_outputs(family, hf, images, interpolate_pos_encoding=True)
    model = ViT.from_preset(path, image_size=48, include_top=family in HEADED)
    assert model.grid_size == (6, 6)
    _close(model(images), pooled)
    if sequence is not None:
        last = f"encoder_block_{model.num_layers - 1}" if family.startswith("clip") else "encoder_norm"
        _close(keras.Model(model.input, model.get_layer(last).output)(images), sequence)


@pytest.mark.parametrize("family", ["aimv2", "aimv2_head_biases"])
def test_aimv2_at_another_image_size_matches_transformers(family, tmp_path):
    """48x48 images: transformers' AIMv2 has a fixed table, so its 48x48 model is given
    the file's weights and keras_vit's resampled 6x6 table."""
    import torch
    import transformers

    hf, path = _saved_model(family, tmp_path)
    model = ViT.from_preset(path, image_size=48)
    config = transformers.Aimv2VisionConfig(**{**COMMON, **FAMILIES[family][2], "image_size": 48})
    resized = transformers.Aimv2VisionModel(config).eval()
    state = dict(hf.state_dict())
    table = ops.convert_to_numpy(model.get_layer("position_embedding").embedding)[0]
    state["embeddings.position_embedding.weight"] = torch.from_numpy(table)
    state.pop("embeddings.position_ids", None)
    resized.load_state_dict(state, strict=False)
    images = np.random.default_rng(3).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    pooled, sequence = _hf_outputs(family, resized, images)
    _close(model(images), pooled)
    _close(keras.Model(model.input, model.get_layer("encoder_norm").output)(images), sequence)


@pytest.mark.parametrize("family, edit, message", [
    ("aimv2", {"use_head": True}, "use_head=true, but the file has no attention-pooling head"),
    ("aimv2_head", {"use_head": False}, "use_head=false, but the file has attention-pooling"),
    ("aimv2", {"is_native": True}, "is_native"), ("aimv2", {"hidden_act": "gelu"}, "hidden_act"),
    ("aimv2", {"qkv_bias": "no"}, "qkv_bias")])
def test_aimv2_configs_keras_vit_does_not_build_or_the_file_contradicts_are_refused(
        tmp_path, family, edit, message):
    _, path = _saved_model(family, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(ValueError, match=message):
        ViT.from_preset(path)


def test_family_defaults_without_preprocessor_config(tmp_path):
    _, path = _saved_model("dinov2", tmp_path)
    (tmp_path / "preprocessor_config.json").unlink()
    model = ViT.from_preset(path, include_top=False)
    assert model.image_mean == [0.485, 0.456, 0.406] and model.image_std == [0.229, 0.224, 0.225]


@pytest.mark.parametrize("edit, message", [
    ({"model_type": "beit"}, "model_type 'beit' is not a family"),
    ({"use_swiglu_ffn": True}, "use_swiglu_ffn"),
    ({"image_size": [None, 32]}, "image_size must be an int or a pair"),
])
def test_unsupported_configs_are_refused(tmp_path, edit, message):
    _, path = _saved_model("dinov2", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(ValueError, match=message):
        ViT.from_preset(path, include_top=False)


@pytest.mark.parametrize("family", WHOLE)
def test_whole_model_checkpoints_load_their_image_tower(family, tmp_path):
    import warnings

    hf, path = _saved_model(family, tmp_path)
    tower = getattr(hf, WHOLE[family][2])
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    kind = {"clip_whole": "clip", "siglip_whole": "siglip", "mae_pretraining": "mae",
            "aimv2_whole": "aimv2_head"}[family]
    pooled, sequence = _hf_outputs(kind, _Tower(tower, kind), images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "keys not loaded" for the text tower
        model = ViT.from_preset(path, include_top=False)
    _close(model(images), pooled)
    last = f"encoder_block_{model.num_layers - 1}" if kind == "clip" else "encoder_norm"
    _close(keras.Model(model.input, model.get_layer(last).output)(images), sequence)
    if family == "aimv2_whole":  # the projection is the head, as CLIP's
        import torch

        pixels = ((images / 255.0 - np.array(MEAN)) / np.array(STD)).transpose(0, 3, 1, 2)
        with torch.no_grad():
            projected = hf.get_image_features(pixel_values=torch.from_numpy(
                pixels.astype("float32"))).pooler_output.numpy().astype("float64")
        _close(ViT.from_preset(path)(images), projected)
        (tmp_path / "config.json").unlink()  # the family from the keys; heads from the caller
        _close(ViT.from_preset(path, num_heads=4)(images), projected)


class _Tower:
    """An image tower called like the stand-alone image models (CLIP: its pooled output)."""

    def __init__(self, tower, kind):
        self.tower, self.kind = tower, kind

    def __call__(self, pixel_values):
        out = self.tower(pixel_values=pixel_values)
        if self.kind == "clip":
            out.image_embeds = out.pooler_output
        return out


@pytest.mark.parametrize("family", FAMILIES)
def test_family_fine_tunes_with_a_new_head_and_round_trips(family, tmp_path):
    _, path = _saved_model(family, tmp_path)
    fine_tunes_and_round_trips(path, tmp_path)
