"""timm checkpoints of every ViT family keras_vit loads, written by timm itself
(`save_for_hf`: `model.safetensors` + timm's `config.json`, as timm's hub repos hold them)
from random weights, loaded with `from_preset` and compared with timm's own outputs:
logits or pooled features, and the last token sequence, at the checkpoint's size and at
another one (timm resamples the position embedding when it loads the file)."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit import ViT
from timm_reference import import_timm

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]  # written to pretrained_cfg
# family: (timm name with its pretrained tag, classes); 0 classes: a features model.
FAMILIES = {
    # timm's average pooling with a norm after it instead of before (as in MAE's fine-tunes)
    "vit_fc_norm": ("vit_base_patch16_224.augreg2_in21k_ft_in1k", 5),
    "vit": ("vit_base_patch16_224.augreg2_in21k_ft_in1k", 5),
    "vit_gap": ("vit_medium_patch16_gap_256.sw_in12k_ft_in1k", 5),
    "deit": ("deit_small_patch16_224.fb_in1k", 5),
    "deit_distilled": ("deit_base_distilled_patch16_224.fb_in1k", 5),
    "deit3": ("deit3_base_patch16_224.fb_in22k_ft_in1k", 5),
    "dinov2": ("vit_small_patch14_dinov2.lvd142m", 0),
    "dinov2_registers": ("vit_small_patch14_reg4_dinov2.lvd142m", 0),
    "clip": ("vit_base_patch16_clip_224.openai", 16),
    "clip_quickgelu": ("vit_base_patch16_clip_quickgelu_224.openai", 16),
    "siglip": ("vit_base_patch16_siglip_224.webli", 0),
    "mae": ("vit_base_patch16_224.mae", 0),
}

EXTRA_ARGS = {"vit_fc_norm": dict(class_token=False, global_pool="avg", fc_norm=True)}


def _saved_model(family, folder, mean_std=True):
    import torch

    timm = import_timm()
    name, classes = FAMILIES[family]
    overlay = dict(mean=tuple(MEAN), std=tuple(STD)) if mean_std else {}
    args = {**TINY, **EXTRA_ARGS.get(family, {})}
    model = timm.create_model(name, pretrained=False, num_classes=classes,
                              pretrained_cfg_overlay=overlay, **args).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for key, param in model.named_parameters():  # every parameter random and relevant
            base = 1.0 if key.endswith("weight") and param.ndim == 1 else 0.0
            param.copy_(base + 0.2 * torch.randn_like(param))
    timm.models.save_for_hf(model, folder, model_args=args, safe_serialization=True)
    return model, str(folder / "model.safetensors")


def _timm_outputs(model, images, mean, std):
    import torch

    pixels = ((images / 255.0 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    with torch.no_grad():
        x = torch.from_numpy(pixels.astype("float32"))
        sequence = model.forward_features(x)
        return model.forward_head(sequence).numpy(), sequence.numpy()


def _close(ours, theirs):
    ours = ops.convert_to_numpy(ours).astype("float64")
    assert ours.shape == theirs.shape
    err = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    assert err < 1e-4, f"relative error {err:.2e}"


def _compare(model, reference, size, mean=MEAN, std=STD):
    images = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype("float32")
    pooled, sequence = _timm_outputs(reference, images, mean, std)
    _close(model(images), pooled)
    # timm's forward_features ends with the final norm, which is Identity with fc_norm.
    last = "encoder_norm" if not model.pooled_norm else f"encoder_block_{model.num_layers - 1}"
    _close(keras.Model(model.input, model.get_layer(last).output)(images), sequence)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_timm(family, tmp_path):
    reference, path = _saved_model(family, tmp_path)
    classes = FAMILIES[family][1]
    model = ViT.from_preset(path, include_top=bool(classes))
    assert model.num_heads == 4 and model.image_mean == MEAN and model.image_std == STD
    _compare(model, reference, 32)
    expected = {
        "vit_fc_norm": dict(pooling="gap", pooled_norm=True),
        "vit_gap": dict(pooling="gap", pooled_norm=False, layer_scale_init=1.0),
        "deit_distilled": dict(distillation_token=True),
        "deit3": dict(layer_scale_init=1.0, class_token_position=False),
        "dinov2": dict(layer_scale_init=1.0),
        "dinov2_registers": dict(num_register_tokens=4, layer_scale_init=1.0,
                                 class_token_position=False),
        "clip": dict(pre_norm=True, layer_norm_epsilon=1e-5, mlp_activation="gelu"),
        "clip_quickgelu": dict(pre_norm=True, mlp_activation="quick_gelu"),
        "siglip": dict(pooling="map"),
    }.get(family, dict(pooling="token", layer_scale_init=None))
    assert {k: getattr(model, k) for k in expected} == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_family_at_another_image_size_matches_timm(family, tmp_path):
    timm = import_timm()
    _, path = _saved_model(family, tmp_path)
    name, classes = FAMILIES[family]
    resized = dict(TINY, **EXTRA_ARGS.get(family, {}), img_size=48)
    reference = timm.create_model(name, pretrained=True, num_classes=classes,
                                  pretrained_cfg_overlay=dict(file=path, num_classes=classes),
                                  **resized).eval()
    model = ViT.from_preset(path, image_size=48, include_top=bool(classes))
    _compare(model, reference, 48)


@pytest.mark.parametrize("family", ["dinov2", "clip", "siglip", "mae"])
def test_family_normalization_without_pretrained_cfg_values(family, tmp_path):
    _, path = _saved_model(family, tmp_path, mean_std=False)
    config = json.loads((tmp_path / "config.json").read_text())
    config["pretrained_cfg"].pop("mean"), config["pretrained_cfg"].pop("std")
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = ViT.from_preset(path, include_top=False)
    imagenet, clip = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), (
        [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
    expected = {"dinov2": imagenet, "mae": imagenet, "clip": clip, "siglip": (None, None)}[family]
    assert (model.image_mean, model.image_std) == expected


def _edit_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    for path, value in edit.items():
        *parents, leaf = path.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(leaf)
        else:
            target[leaf] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("edit, message", [
    ({"model_args.qk_norm": True}, "qk_norm=True is an architecture"),
    ({"model_args.mlp_layer": "SwiGLU"}, "model_args has 'mlp_layer'"),
    ({"model_args.global_pool": ""}, "global_pool '' is not one"),
    ({"model_args.global_pool": "avg"}, "global_pool='avg'.*'token' pooling.*without a class token"),
    ({"model_args.act_layer": "relu"}, "act_layer 'relu'"),
    ({"model_args.act_layer": ["gelu"]}, r"act_layer \['gelu'\]"),
    ({"global_pool": {"avg": 1}, "model_args.global_pool": None}, "global_pool {'avg': 1}"),
    ({"model_args.num_classes": 7}, "num_classes=7 but the file's head has 5"),
    ({"model_args.img_size": [32, 32, 3]}, "img_size must be an int or a pair"),
    ({"model_args.num_heads": 0}, "num_heads must be a positive integer"),
    ({"pretrained_cfg.mean": "imagenet"}, "pretrained_cfg mean must be a list of numbers"),
    ({"architecture": 7}, "architecture must be a string"),
])
def test_config_json_is_checked(tmp_path, edit, message):
    _saved_model("vit", tmp_path)
    _edit_config(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        ViT.from_preset(str(tmp_path / "model.safetensors"))


def test_heads_come_from_the_architecture_name_or_must_be_given(tmp_path):
    timm = import_timm()
    args = dict(img_size=16, patch_size=8, depth=1)
    model = timm.create_model("vit_medium_patch16_gap_256", pretrained=False, num_classes=0,
                              **args)  # width 512 (not a standard ViT width), 8 heads
    timm.models.save_for_hf(model, tmp_path, model_args=args, safe_serialization=True)
    path = str(tmp_path / "model.safetensors")
    assert ViT.from_preset(path, include_top=False).num_heads == 8
    _edit_config(tmp_path, {"architecture": "vit_base_patch16_224"})  # base is 768 wide
    with pytest.raises(ValueError, match="does not say how many attention heads.*num_heads="):
        ViT.from_preset(path, include_top=False)
    assert ViT.from_preset(path, include_top=False, num_heads=4).num_heads == 4


@pytest.mark.parametrize("family", ["deit3", "vit_gap", "vit_fc_norm"])  # timm-only families
def test_family_fine_tunes_with_a_new_head_and_round_trips(family, tmp_path):
    from test_hf_families import fine_tunes_and_round_trips

    _, path = _saved_model(family, tmp_path)
    fine_tunes_and_round_trips(path, tmp_path)
