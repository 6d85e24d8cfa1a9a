"""SigLIP 2 in the Hugging Face format, written by transformers from random weights: the
fixed-resolution towers (a whole `SiglipModel`, as google/siglip2-base-patch16-224 holds
it) at their size and another, and NaFlex (`Siglip2VisionModel`, a whole `Siglip2Model`)
on images of two aspect ratios, each built at `keras_vit.naflex.naflex_size` and compared
with transformers fed the same image as padded patches with its mask and spatial shape."""

import json

import keras
import numpy as np
import pytest

from keras_vit import ViT
from keras_vit.naflex import NaFlexFeatures, naflex_size
from reference_families import assert_close, fine_tunes_and_round_trips, randomise_parameters

TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             patch_size=8)
TEXT = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            vocab_size=64, max_position_embeddings=16)
NUM_PATCHES, MAX_NUM_PATCHES = 16, 24  # a 4x4 table (32x32 images); up to 24 patches
# Original image sizes (height, width): wide and tall, neither the table's 4x4 grid.
IMAGES = [(30, 50), (61, 17)]


def _saved(kind, folder):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    naflex = dict(TOWER, num_patches=NUM_PATCHES)
    config, tower = {
        "fixed": (transformers.SiglipConfig(text_config=TEXT,
                                            vision_config=dict(TOWER, image_size=32)), "vision_model"),
        "naflex": (transformers.Siglip2VisionConfig(**naflex), None),
        "naflex_whole": (transformers.Siglip2Config(text_config=TEXT, vision_config=naflex),
                         "vision_model"),
    }[kind]
    model_class = {"fixed": transformers.SiglipModel, "naflex": transformers.Siglip2VisionModel,
                   "naflex_whole": transformers.Siglip2Model}[kind]
    model = randomise_parameters(model_class(config))
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return getattr(model, tower) if tower else model, str(folder / "model.safetensors")


def _pixels(images):
    return (images / 127.5 - 1.0).transpose(0, 3, 1, 2).astype("float32")  # mean = std = 0.5


@pytest.mark.parametrize("size", [32, 48])
def test_fixed_resolution_siglip2_matches_transformers(size, tmp_path):
    """A whole SiglipModel (SigLIP 2's fixed-resolution checkpoints): its image tower at
    the file's 32x32 and at 48x48 (transformers' bicubic `interpolate_pos_encoding`)."""
    import torch

    tower, path = _saved("fixed", tmp_path)
    model = ViT.from_preset(path, image_size=size)
    assert model.pooling == "map" and model.mlp_activation == "gelu_tanh"
    images = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype("float32")
    with torch.no_grad():
        out = tower(pixel_values=torch.from_numpy(_pixels(images)),
                    interpolate_pos_encoding=size != 32)
    assert_close(model(images), out.pooler_output.numpy().astype("float64"))
    tokens = keras.Model(model.input, model.get_layer("encoder_norm").output)
    assert_close(tokens(images), out.last_hidden_state.numpy().astype("float64"))


@pytest.mark.parametrize("image_hw, patch_size, budget", [
    ((30, 50), 4, 24), ((61, 17), 4, 24), ((224, 224), 16, 256), ((480, 640), 16, 256),
    ((1000, 37), 16, 256), ((5, 5), 16, 256), ((300, 301), 14, 1024), ((17, 4000), 16, 64)])
def test_naflex_size_is_transformers_size(image_hw, patch_size, budget):
    # The PIL processor's copy of the function: the torchvision one needs torchvision.
    processor = pytest.importorskip("transformers.models.siglip2.image_processing_pil_siglip2")
    expected = processor.get_image_size_for_max_num_patches(*image_hw, patch_size, budget)
    assert naflex_size(image_hw, patch_size, budget) == tuple(expected)


@pytest.mark.parametrize("bad", [(0, 10), (10.5, 10), (True, 10)])
def test_naflex_size_refuses_sizes_that_are_not_positive_integers(bad):
    with pytest.raises(ValueError, match="must be a positive integer"):
        naflex_size(bad)


def _patches(image, patch):
    """transformers' processor's patches of one (H, W, 3) image: (h * w, p * p * 3)."""
    pixels = _pixels(image[None])[0]
    channels, height, width = pixels.shape
    h, w = height // patch, width // patch
    grid = pixels.reshape(channels, h, patch, w, patch).transpose(1, 3, 2, 4, 0)
    return grid.reshape(h * w, -1), (h, w)


@pytest.mark.parametrize("kind", ["naflex", "naflex_whole", "naflex_no_config"])
def test_naflex_matches_transformers_on_two_aspect_ratios(kind, tmp_path):
    """Both images in one padded transformers batch; keras_vit builds the model at each
    image's NaFlex size and gives transformers' pooled output and valid tokens."""
    import torch

    tower, path = _saved("naflex_whole" if kind == "naflex_whole" else "naflex", tmp_path)
    heads = {}
    if kind == "naflex_no_config":  # the family, patch size and table from the keys alone
        (tmp_path / "config.json").unlink()
        heads = dict(num_heads=4)  # not in the file, as for any nonstandard width
    rng = np.random.default_rng(2)
    sizes = [naflex_size(hw, 8, MAX_NUM_PATCHES) for hw in IMAGES]
    assert sizes == [(32, 48), (64, 24)]  # 4x6 and 8x3 patches: the 4x4 table up and down
    images = [rng.uniform(0, 255, (*size, 3)).astype("float32") for size in sizes]
    values = np.zeros((len(images), MAX_NUM_PATCHES, 8 * 8 * 3), "float32")
    mask = np.zeros((len(images), MAX_NUM_PATCHES), "int64")
    shapes = []
    for i, image in enumerate(images):
        patches, grid = _patches(image, 8)
        values[i, :len(patches)], mask[i, :len(patches)] = patches, 1
        shapes.append(grid)
    with torch.no_grad():
        out = tower(pixel_values=torch.from_numpy(values),
                    pixel_attention_mask=torch.from_numpy(mask),
                    spatial_shapes=torch.tensor(shapes))
    for i, (image, size) in enumerate(zip(images, sizes)):
        model = ViT.from_preset(path, image_size=size, **heads)
        assert model.grid_size == shapes[i] and model.pooling == "map"
        assert_close(model(image[None]), out.pooler_output[i:i + 1].numpy().astype("float64"))
        tokens = keras.Model(model.input, model.get_layer("encoder_norm").output)(image[None])
        valid = out.last_hidden_state[i:i + 1, :mask[i].sum()].numpy().astype("float64")
        assert_close(tokens, valid)


def test_naflex_features_takes_images_of_any_size(tmp_path):
    """One call per image of any size: resized to its NaFlex size (antialiased bilinear, as
    torch resizes in transformers' fast processor) and run at that size; models kept per
    size, the least recently used dropped."""
    import torch

    tower, path = _saved("naflex", tmp_path)
    encoder = NaFlexFeatures(path, max_num_patches=MAX_NUM_PATCHES, max_models=2)
    rng = np.random.default_rng(4)
    for hw in IMAGES:  # resized to 4x6 and 8x3 patches
        image = rng.uniform(0, 255, (*hw, 3)).astype("float32")
        size = encoder.size_of(hw)
        resized = torch.nn.functional.interpolate(
            torch.from_numpy(image).permute(2, 0, 1)[None], size=size, mode="bilinear",
            antialias=True, align_corners=False)[0].permute(1, 2, 0).numpy()
        patches, grid = _patches(resized, 8)
        with torch.no_grad():
            out = tower(pixel_values=torch.from_numpy(patches[None]),
                        pixel_attention_mask=torch.ones((1, len(patches)), dtype=torch.int64),
                        spatial_shapes=torch.tensor([grid]))
        assert_close(encoder(image)[None], out.pooler_output.numpy().astype("float64"))
        assert encoder.model_for(size).image_size == size
    assert encoder.sizes == [(32, 48), (64, 24)]
    for bad in (dict(max_num_patches=0), dict(max_models=True), dict(image_size=32)):
        with pytest.raises(ValueError):
            NaFlexFeatures(path, **bad)
    with pytest.raises(ValueError, match="one"):
        encoder(np.zeros((2, 32, 32, 3)))


def test_naflex_checkpoint_defaults_to_its_table_grid_and_fine_tunes(tmp_path):
    _, path = _saved("naflex", tmp_path)
    model = ViT.from_preset(path)
    assert model.image_size == (32, 32) and model.patch_size == (8, 8)
    assert not model.include_top and model.image_mean == [0.5] * 3
    fine_tunes_and_round_trips(path, tmp_path)
