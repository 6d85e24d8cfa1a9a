"""Reference models of the families keras_vit loads, shared by the family and hub tests:
tiny timm models with random weights saved in timm's hub layout, their outputs, the
comparison with keras_vit, and a fine-tuning round trip of any loaded checkpoint."""

import keras
import numpy as np
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
    "siglip2": ("vit_base_patch16_siglip_224.v2_webli", 0),  # SigLIP 2, fixed resolution
    "mae": ("vit_base_patch16_224.mae", 0),
    # RMSNorm, SwiGLU, no attention or MLP biases, a norm in the patch embedding
    "aimv2": ("aimv2_large_patch14_224.apple_pt", 0),
}

EXTRA_ARGS = {"vit_fc_norm": dict(class_token=False, global_pool="avg", fc_norm=True)}


def randomise_parameters(module, seed=0):
    """Sets every parameter of a torch module random and relevant: norm scales near 1,
    the rest near 0, all 0.2 apart. Returns the module in eval mode."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for key, param in module.named_parameters():
            base = 1.0 if key.endswith("weight") and param.ndim == 1 else 0.0
            param.copy_(base + 0.2 * torch.randn_like(param))
    return module.eval()


def timm_saved_model(family, folder, mean_std=True):
    timm = import_timm()
    name, classes = FAMILIES[family]
    overlay = dict(mean=tuple(MEAN), std=tuple(STD)) if mean_std else {}
    args = {**TINY, **EXTRA_ARGS.get(family, {})}
    model = timm.create_model(name, pretrained=False, num_classes=classes,
                              pretrained_cfg_overlay=overlay, **args).eval()
    randomise_parameters(model)
    timm.models.save_for_hf(model, folder, model_args=args, safe_serialization=True)
    return model, str(folder / "model.safetensors")


def timm_outputs(model, images, mean, std):
    import torch

    pixels = ((images / 255.0 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    with torch.no_grad():
        x = torch.from_numpy(pixels.astype("float32"))
        sequence = model.forward_features(x)
        return model.forward_head(sequence).numpy(), sequence.numpy()


def assert_close(ours, theirs):
    ours = ops.convert_to_numpy(ours).astype("float64")
    assert ours.shape == theirs.shape
    err = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    assert err < 1e-4, f"relative error {err:.2e}"


def compare_with_timm(model, reference, size, mean=MEAN, std=STD):
    images = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype("float32")
    pooled, sequence = timm_outputs(reference, images, mean, std)
    assert_close(model(images), pooled)
    # timm's forward_features ends with the final norm, which is Identity with fc_norm.
    last = "encoder_norm" if not model.pooled_norm else f"encoder_block_{model.num_layers - 1}"
    assert_close(keras.Model(model.input, model.get_layer(last).output)(images), sequence)


def fine_tunes_and_round_trips(path, tmp_path):
    """Loads `path` with a new 3-class head, fits one step, and checks the head moved and
    the `.keras` round trip gives the same outputs."""
    model = ViT.from_preset(path, num_classes=3)
    images = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    head = ops.convert_to_numpy(model.get_layer("head").kernel).copy()
    history = model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(ops.convert_to_numpy(model.get_layer("head").kernel), head)
    model.save(tmp_path / "tuned.keras")
    loaded = keras.saving.load_model(tmp_path / "tuned.keras")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images)),
                               ops.convert_to_numpy(model(images)), rtol=1e-5, atol=1e-5)
