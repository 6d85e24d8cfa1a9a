"""Position-embedding resampling against the references: torch's bicubic interpolation
(Hugging Face transformers), with antialiasing (timm, DINOv2 with registers), torch's
antialiased bilinear one (SigLIP 2 NaFlex), and
scipy's order-1 zoom (vit_jax, big_vision)."""

import numpy as np
import pytest

from keras_vit.layers import resample_position_embedding

# (old grid, new grid, prefix tokens): up, down, mixed, one axis kept, 0 to 2 prefix tokens.
CASES = [((4, 4), (7, 7), 1), ((7, 5), (3, 2), 0), ((5, 8), (9, 3), 2), ((14, 14), (37, 23), 1),
         ((16, 12), (5, 11), 1), ((6, 4), (6, 9), 1)]


def _embedding(old_grid, prefix, dtype="float64"):
    rng = np.random.default_rng(sum(old_grid) + prefix)
    return rng.normal(size=(1, prefix + old_grid[0] * old_grid[1], 6)).astype(dtype)


def _torch_resample(embedding, old_grid, new_grid, prefix, method):
    import torch

    grid = embedding[0, prefix:].reshape(*old_grid, -1).transpose(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(grid)), size=new_grid, mode=method.split("_")[0],
        align_corners=False, antialias=method.endswith("_antialias"))
    return resized[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("method", ["bicubic", "bicubic_antialias", "bilinear_antialias"])
@pytest.mark.parametrize("old_grid, new_grid, prefix", CASES)
def test_matches_torch_interpolate(method, old_grid, new_grid, prefix):
    pytest.importorskip("torch")
    embedding = _embedding(old_grid, prefix)
    ours = resample_position_embedding(embedding, old_grid, new_grid, prefix, method=method)
    assert ours.shape == (1, prefix + new_grid[0] * new_grid[1], 6) and ours.dtype == np.float64
    np.testing.assert_array_equal(ours[:, :prefix], embedding[:, :prefix])
    theirs = _torch_resample(embedding, old_grid, new_grid, prefix, method)
    err = np.max(np.abs(ours[0, prefix:].reshape(theirs.shape) - theirs)) / np.max(np.abs(theirs))
    assert err < 1e-6, f"relative error {err:.2e}"


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "bicubic_antialias",
                                    "bilinear_antialias"])
def test_input_dtype_out_and_same_grid_is_identity(method):
    embedding = _embedding((4, 6), 1, "float32")
    resampled = resample_position_embedding(embedding, (4, 6), (6, 3), method=method)
    assert resampled.dtype == np.float32 and resampled.shape == (1, 1 + 18, 6)
    same = resample_position_embedding(embedding, (4, 6), (4, 6), method=method)
    np.testing.assert_array_equal(same, embedding)


def test_bilinear_is_scipy_zoom_order_1():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    embedding = _embedding((5, 8), 2)
    ours = resample_position_embedding(embedding, (5, 8), (9, 3), num_prefix_tokens=2)
    zoomed = scipy_ndimage.zoom(embedding[0, 2:].reshape(5, 8, 6), (9 / 5, 3 / 8, 1), order=1)
    np.testing.assert_allclose(ours[0, 2:].reshape(9, 3, 6), zoomed, atol=1e-12)


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(ValueError, match="'bilinear', 'bicubic', 'bicubic_antialias', 'bilinear_antialias'"):
        resample_position_embedding(_embedding((4, 4), 1), (4, 4), (4, 4), method="nearest")


def test_checkpoints_name_their_reference_resampling(tmp_path):
    from checkpoint_files import google_params, write_timm, write_vit_jax
    from keras_vit.weights import load_checkpoint

    vit_jax = write_vit_jax(tmp_path / "vit_jax.npz", google_params())
    timm = write_timm(tmp_path / "model.safetensors", google_params())
    assert load_checkpoint(vit_jax).resample_method == "bilinear"
    assert load_checkpoint(timm).resample_method == "bicubic_antialias"
