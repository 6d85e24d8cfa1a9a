"""timm checkpoints of every ViT family keras_vit loads, written by timm itself
(`save_for_hf`: `model.safetensors` + timm's `config.json`, as timm's hub repos hold them)
from random weights, loaded with `from_preset` and compared with timm's own outputs:
logits or pooled features, and the last token sequence, at the checkpoint's size and at
another one (timm resamples the position embedding when it loads the file); and Apple's own
AIMv2 files (timm's AIMv2 under Apple's names)."""

import json
import warnings

import pytest

from keras_vit import ViT
from reference_families import (
    EXTRA_ARGS, FAMILIES, MEAN, STD, TINY, compare_with_timm, fine_tunes_and_round_trips,
    timm_saved_model,
)
from timm_reference import import_timm

@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_timm(family, tmp_path):
    reference, path = timm_saved_model(family, tmp_path)
    classes = FAMILIES[family][1]
    model = ViT.from_preset(path, include_top=bool(classes))
    assert model.num_heads == 4 and model.image_mean == MEAN and model.image_std == STD
    compare_with_timm(model, reference, 32)
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
        "siglip2": dict(pooling="map"),
        "aimv2": dict(pooling="gap", norm_type="rms_norm", mlp_type="swiglu", patch_norm=True,
                      patch_bias=True, query_bias=False, output_bias=False, mlp_bias=False,
                      layer_norm_epsilon=1e-5, mlp_dim=88),
    }.get(family, dict(pooling="token", layer_scale_init=None))
    assert {k: getattr(model, k) for k in expected} == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_family_at_another_image_size_matches_timm(family, tmp_path):
    timm = import_timm()
    _, path = timm_saved_model(family, tmp_path)
    name, classes = FAMILIES[family]
    resized = dict(TINY, **EXTRA_ARGS.get(family, {}), img_size=48)
    reference = timm.create_model(name, pretrained=True, num_classes=classes,
                                  pretrained_cfg_overlay=dict(file=path, num_classes=classes),
                                  **resized).eval()
    model = ViT.from_preset(path, image_size=48, include_top=bool(classes))
    compare_with_timm(model, reference, 48)


@pytest.mark.parametrize("family", ["dinov2", "clip", "siglip", "mae"])
def test_family_normalization_without_pretrained_cfg_values(family, tmp_path):
    _, path = timm_saved_model(family, tmp_path, mean_std=False)
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
    timm_saved_model("vit", tmp_path)
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


def _apple_key(key):
    """timm's AIMv2 key -> Apple's (ml-aim's modules: preprocessor.patchifier, trunk, ...)."""
    if key == "norm.weight":
        return "trunk.post_trunk_norm.weight"
    if key.startswith("patch_embed."):
        return "preprocessor.patchifier." + key[len("patch_embed."):]
    if key == "pos_embed":
        return "preprocessor.pos_embed"
    for timm_name, apple_name in (("norm1", "norm_1"), ("norm2", "norm_2"),
                                  ("mlp.fc1_g", "mlp.fc1"), ("mlp.fc1_x", "mlp.fc3")):
        key = key.replace(timm_name, apple_name)
    return "trunk." + key


def test_apple_aimv2_files_read_as_timms(tmp_path):
    """Apple's own AIMv2 encoders (apple/aimv2-* on the hub): timm's AIMv2 under Apple's key
    names, with Apple's config.json (AIMv2Config) and preprocessor_config.json."""
    from safetensors.numpy import load_file, save_file

    reference, path = timm_saved_model("aimv2", tmp_path)
    folder = tmp_path / "apple"
    folder.mkdir()
    save_file({_apple_key(k): v for k, v in load_file(path).items()}, folder / "model.safetensors")
    config = dict(model_type="aimv2", architectures=["AIMv2Model"], hidden_size=32,
                  num_attention_heads=4, num_hidden_layers=2, intermediate_size=88,
                  image_size=32, patch_size=8, rms_norm_eps=1e-5, qkv_bias=False,
                  use_bias=False)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": MEAN, "image_std": STD}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every key read: none "not loaded"
        model = ViT.from_preset(str(folder))
    assert (model.pooling, model.norm_type, model.mlp_type, model.include_top) == (
        "gap", "rms_norm", "swiglu", False)
    compare_with_timm(model, reference, 32)
    (folder / "config.json").write_text(json.dumps(dict(config, rms_norm_eps=1e-6)))
    with pytest.raises(ValueError, match="rms_norm_eps 1e-06"):
        ViT.from_preset(str(folder))
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(folder / "model.safetensors")
    collision = dict(tensors)  # two keys that are one once renamed
    collision["trunk.blocks.0.norm1.weight"] = tensors["trunk.blocks.0.norm_1.weight"]
    save_file(collision, folder / "model.safetensors")
    with pytest.raises(ValueError, match="the same once renamed"):
        ViT.from_preset(str(folder))
    del tensors["preprocessor.pos_embed"]  # as the native-resolution encoders' files
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ValueError, match="native-resolution"):
        ViT.from_preset(str(folder))


@pytest.mark.parametrize("family", ["deit3", "vit_gap", "vit_fc_norm"])  # timm-only families
def test_family_fine_tunes_with_a_new_head_and_round_trips(family, tmp_path):
    _, path = timm_saved_model(family, tmp_path)
    fine_tunes_and_round_trips(path, tmp_path)


@pytest.mark.parametrize("form", ["mlp_inner_norm", "swiglu", "swiglu_inner_norm",
                                  "packed_swiglu", "swiglu_no_bias"])
def test_each_timm_mlp_form_maps_to_the_block_mlp(form):
    """timm's Mlp, SwiGLU (separate gate and up, EVA-02's inner norm) and packed SwiGLU
    (GluMlp, gate first) read by `take_mlp` into a block give timm's MLP output."""
    import keras
    import numpy as np
    import torch

    from keras_vit.layers import TransformerEncoderBlock
    from keras_vit.weights.checkpoint import Reader
    from keras_vit.weights.timm import take_mlp

    layers = import_timm().layers
    norm = torch.nn.LayerNorm if "inner_norm" in form else None
    bias = form != "swiglu_no_bias"
    mlp = {"mlp_inner_norm": lambda: layers.Mlp(32, 48, norm_layer=norm),
           "packed_swiglu": lambda: layers.GluMlp(32, 96, act_layer=torch.nn.SiLU, gate_last=False),
           }.get(form, lambda: layers.SwiGLU(32, 48, norm_layer=norm, bias=bias))().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for param in mlp.parameters():
            param.copy_(0.3 * torch.randn_like(param) + (1.0 if param.ndim == 1 else 0.0))
    r = Reader({f"blocks.0.mlp.{k}": v.numpy() for k, v in mlp.state_dict().items()}, "timm")
    mlp_type, inner_norm = take_mlp(r, "encoder_block_0/", "blocks.0.mlp.", bias)
    assert (mlp_type, inner_norm) == ("mlp" if form == "mlp_inner_norm" else "swiglu",
                                      "inner_norm" in form)
    assert r.used == set(r.tensors) and not r.missing
    block = TransformerEncoderBlock(32, 4, 48, layer_norm_epsilon=1e-5, mlp_activation="gelu",
                                    mlp_type=mlp_type, mlp_inner_norm=inner_norm, mlp_bias=bias,
                                    name="encoder_block_0")
    block.build((1, 5, 32))
    variables = {v.path: v for v in block.weights}
    for path, (array, _) in r.params.items():
        variables[path].assign(array)
    x = np.random.default_rng(0).normal(size=(1, 5, 32)).astype("float32")
    hidden = block.mlp_hidden(x)
    if inner_norm:
        hidden = block.mlp_inner_norm_layer(hidden)
    ours = keras.ops.convert_to_numpy(block.mlp_dense_2(hidden))
    with torch.no_grad():
        theirs = mlp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
