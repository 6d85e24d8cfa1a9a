"""The ViT paper's analysis (patch-embedding components, position-embedding similarity,
mean attention distance), checked against what hand-built weights and attention imply,
and the figures and `keras-vit explain` command that draw them."""

import matplotlib.image
import numpy as np
import pytest

from keras_vit import ViT, explain, insight
from keras_vit.__main__ import main
from tiny import TINY, TINY_FASHION_MNIST


def test_patch_embedding_components_find_the_filters_subspace():
    model = ViT(**TINY)
    kernel = model.get_layer("patch_embedding").projection.kernel
    p, _, c, d = kernel.shape
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(p * p * c, 2)))[0]  # two orthonormal directions
    filters = rng.normal(size=(d, 2)) * [3.0, 1.0] @ basis.T  # every filter in their span
    kernel.assign(filters.T.reshape(p, p, c, d).astype("float32"))
    components, variance = insight.patch_embedding_components(model, count=4)
    assert components.shape == (4, p, p, c)
    flat = components.reshape(4, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(4), atol=1e-6)  # orthonormal
    assert variance[:2].sum() > 1 - 1e-6 and variance[0] > variance[1]
    projection = basis @ basis.T
    np.testing.assert_allclose(projection @ flat[:2].T, flat[:2].T, atol=1e-5)  # in the span
    with pytest.raises(ValueError, match="count must be a positive integer"):
        insight.patch_embedding_components(model, count=0)


def test_position_embedding_similarity_is_cosine_over_patches_only():
    model = ViT(**TINY)  # a class-token slot first
    table = np.random.default_rng(1).normal(size=model.get_layer("position_embedding").embedding.shape)
    model.get_layer("position_embedding").embedding.assign(table.astype("float32"))
    similarity = insight.position_embedding_similarity(model)
    h, w = model.grid_size
    assert similarity.shape == (h, w, h, w)
    patches = table[0, 1:]
    a, b = patches[1 * w + 2], patches[3 * w + 0]
    assert similarity[1, 2, 3, 0] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    np.testing.assert_allclose(np.einsum("ijij->ij", similarity), 1.0, atol=1e-9)


def test_mean_attention_distance_weighs_patch_distances():
    model = ViT(**TINY)
    h, w = model.grid_size
    n, prefix = h * w, 1
    attention = np.zeros((2, model.num_layers, model.num_heads, n + prefix, n + prefix))
    attention[:, 0, :, :, 0] = 1.0  # block 0: only the class token (left out) and ...
    attention[:, 0, :, prefix:, prefix:] = np.eye(n)  # ... each patch itself: distance 0
    attention[:, 1, :, :, 0] = 0.5  # block 1: half on the class token, half uniform over
    attention[:, 1, :, prefix:, prefix:] = 0.5 / n  # patches (renormalised over the patches)
    distance = insight.mean_attention_distance(model, attention=attention)
    centres = [(i * 8, j * 8) for i in range(h) for j in range(w)]
    uniform = np.mean([np.hypot(a[0] - b[0], a[1] - b[1]) for a in centres for b in centres])
    np.testing.assert_allclose(distance[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(distance[1], uniform)


def test_mean_attention_distance_of_a_real_model_lies_in_the_image():
    model = ViT(**TINY)
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    distance = insight.mean_attention_distance(model, images)
    assert distance.shape == (TINY["num_layers"], TINY["num_heads"])
    assert np.all(distance > 0) and np.all(distance < np.hypot(24, 24))


def test_images_to_show_takes_the_first_image_of_each_label():
    labels = np.array([4, 4, 1, 0, 1, 7])
    assert explain.images_to_show(np.zeros(6), labels, 3) == [0, 2, 3]
    assert explain.images_to_show(np.zeros(6), labels, 9) == [0, 2, 3, 5]  # 4 labels
    assert explain.images_to_show(np.zeros(6), None, 4) == [0, 1, 2, 3]
    assert explain.images_to_show(np.zeros(2), None, 4) == [0, 1]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain")
    model = ViT(**TINY_FASHION_MNIST)
    model.save(folder / "model.keras")
    rng = np.random.default_rng(3)
    np.savez(folder / "data.npz", images=rng.integers(0, 256, (12, 28, 28)).astype("uint8"),
             labels=np.array([4, 4, 1, 0, 1, 7, 7, 2, 0, 9, 9, 3]))
    (folder / "names.txt").write_text("\n".join(f"name{i}" for i in range(10)))
    return folder


def test_explain_command_writes_the_figures(saved_model, tmp_path, capsys):
    out = tmp_path / "figures"
    status = main(["explain", str(saved_model / "model.keras"), "--images",
                   str(saved_model / "data.npz"), "--count", "3", "--class-names",
                   str(saved_model / "names.txt"), "--output-dir", str(out)])
    assert status == 0
    written = capsys.readouterr().out.split()
    assert sorted(written) == sorted(str(out / f"{name}.png") for name in (
        "overlays", "embedding_filters", "position_similarity", "attention_distance"))
    for path in written:
        assert matplotlib.image.imread(path).ndim == 3


@pytest.mark.parametrize("extra, message", [
    (["--count", "0"], "--count must be a positive integer"),
    (["--labels", "labels.npy"], "5 labels for 12 images"),
])
def test_explain_command_reports_bad_input(saved_model, tmp_path, capsys, extra, message):
    np.save(saved_model / "labels.npy", np.arange(5))
    extra = [str(saved_model / e) if e.endswith(".npy") else e for e in extra]
    status = main(["explain", str(saved_model / "model.keras"), "--images",
                   str(saved_model / "data.npz"), "--output-dir", str(tmp_path), *extra])
    assert status == 2 and message in capsys.readouterr().err
