"""2-D rotary position embedding (`rope=`): one encoder block of a tiny ViT against a NumPy
forward pass written here from the references (transformers' DINOv3 for "dinov3", timm's
`build_rotary_pos_embed` for "axial"), on every attention path, at two image sizes; the
attention maps; the config and `.keras` round trips; the checks of the new fields."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_vit import ViT, ViTConfig, config, insight
from keras_vit.attention import set_model_implementation
from timm_reference import import_timm
from tiny import TINY_ONE_BLOCK

FORMS = {
    "dinov3": dict(rope="dinov3", position_embedding="none", num_register_tokens=2,
                   layer_scale_init=0.5),
    "dinov3_interleaved": dict(rope="dinov3", rope_rotate_half=False, rope_theta=1000.0),
    "eva02": dict(rope="axial", rope_reference_grid=(3, 3), pooling="gap"),
    "eva02_token": dict(rope="axial", rope_reference_grid=(2, 5)),
    "pe": dict(rope="axial", rope_reference_grid=(3, 3), rope_grid_offset=1.0,
               rope_grid_indexing="xy", pooling="map", pooling_heads=2),
    "axial_half": dict(rope="axial", rope_rotate_half=True, position_embedding="none"),
}
THETA = {"dinov3": 100.0, "axial": 10000.0}


def _tables(options, grid, head_dim):
    """(cos, sin) (h * w, head_dim) as the references build them."""
    form = options["rope"]
    theta = options.get("rope_theta", THETA[form])
    h, w = grid
    offset = options.get("rope_grid_offset", 0.0)
    if form == "dinov3":  # transformers: get_patches_center_coordinates, inv_freq, tile(2)
        ys, xs = (np.arange(0.5, h) + offset) / h, (np.arange(0.5, w) + offset) / w
        coords = 2.0 * np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2) - 1.0
        inv_freq = 1 / theta ** np.arange(0, 1, 4 / head_dim)
        angles = (2 * math.pi * coords[:, :, None] * inv_freq).reshape(len(coords), -1)
    else:  # timm: freq_bands(step=1), _build_grid("index", ref_feat_shape), meshgrid
        bands = 1.0 / theta ** (np.arange(head_dim // 4) / (head_dim // 4))
        shape, ref = [h, w], list(options.get("rope_reference_grid") or (h, w))
        if options.get("rope_grid_indexing") == "xy":
            shape, ref = shape[::-1], ref[::-1]
        t = [(np.arange(s) + offset) / s * r for s, r in zip(shape, ref)]
        indexing = options.get("rope_grid_indexing", "ij")
        grid_ = np.stack(np.meshgrid(*t, indexing=indexing), axis=-1)  # (h, w, 2)
        angles = (grid_[..., None] * bands).reshape(h * w, -1)
    half = options.get("rope_rotate_half", form == "dinov3")
    angles = np.concatenate([angles, angles], -1) if half else np.repeat(angles, 2, -1)
    return np.cos(angles), np.sin(angles), half


def _rotate(x, cos, sin, half):
    if half:  # rotate_half: [-x2, x1]
        x1, x2 = np.split(x, 2, axis=-1)
        turned = np.concatenate([-x2, x1], axis=-1)
    else:  # timm's rot: [-x1, x0, -x3, x2, ...]
        turned = np.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
    return x * cos + turned * sin


def _layer_norm(x, gamma, beta, eps):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _block_reference(x, w, options, grid, prefix):
    """One pre-norm block with RoPE on the patch tokens: (B, T, D) -> ((B, T, D), the
    attention probabilities (B, heads, T, T))."""
    eps = 1e-6
    y = _layer_norm(x, w["attention_norm/gamma"], w["attention_norm/beta"], eps)
    q, k, v = (np.einsum("btd,dnh->bnth", y, w[f"attention/{p}/kernel"])
               + w[f"attention/{p}/bias"][:, None] for p in ("query", "key", "value"))
    cos, sin, half = _tables(options, grid, q.shape[-1])
    q = np.concatenate([q[:, :, :prefix], _rotate(q[:, :, prefix:], cos, sin, half)], axis=2)
    k = np.concatenate([k[:, :, :prefix], _rotate(k[:, :, prefix:], cos, sin, half)], axis=2)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bnts,bnsh,nhd->btd", probs, v, w["attention/attention_output/kernel"])
    out = out + w["attention/attention_output/bias"]
    scale = w.get("attention_scale", 1.0)
    x = x + out * scale
    y = _layer_norm(x, w["mlp_norm/gamma"], w["mlp_norm/beta"], eps)
    y = _gelu_tanh(y @ w["mlp_dense_1/kernel"] + w["mlp_dense_1/bias"])
    y = y @ w["mlp_dense_2/kernel"] + w["mlp_dense_2/bias"]
    return x + y * w.get("mlp_scale", 1.0), probs


def _model(form, image_size=32):
    model = ViT(**dict(TINY_ONE_BLOCK, image_size=image_size, **FORMS[form]))
    rng = np.random.default_rng(0)
    for v in model.weights:
        base = 1.0 if v.path.endswith(("gamma", "_scale")) else 0.0
        v.assign(base + rng.normal(0, 0.3, v.shape).astype("float32"))
    return model


def _block_io(model, images):
    block = model.get_layer("encoder_block_0")
    x, out = keras.Model(model.input, [block.input, block.output])(images)
    weights = {v.path.split("encoder_block_0/", 1)[1]: ops.convert_to_numpy(v).astype("float64")
               for v in block.weights}
    return ops.convert_to_numpy(x).astype("float64"), ops.convert_to_numpy(out), weights


@pytest.mark.parametrize("form", FORMS)
def test_reference_tables_are_timms(form):
    """The NumPy tables above are timm's own (RotaryEmbeddingDinoV3, RotaryEmbeddingCat)."""
    pytest.importorskip("torch")
    pos_embed_sincos = import_timm().layers.pos_embed_sincos
    options, grid, head_dim = FORMS[form], (6, 5), 8
    half = options.get("rope_rotate_half", options["rope"] == "dinov3")
    common = dict(dim=head_dim, temperature=options.get("rope_theta", THETA[options["rope"]]),
                  feat_shape=list(grid), rotate_half=half,
                  grid_offset=options.get("rope_grid_offset", 0.0),
                  grid_indexing=options.get("rope_grid_indexing", "ij"))
    if options["rope"] == "dinov3":
        rope = pos_embed_sincos.RotaryEmbeddingDinoV3(**common)
    else:
        reference = options.get("rope_reference_grid")
        rope = pos_embed_sincos.RotaryEmbeddingCat(
            in_pixels=False, ref_feat_shape=None if reference is None else list(reference), **common)
    sin, cos = np.split(rope.get_embed().numpy(), 2, axis=-1)
    ours_cos, ours_sin, _ = _tables(options, grid, head_dim)
    np.testing.assert_allclose(ours_cos, cos, atol=1e-5)
    np.testing.assert_allclose(ours_sin, sin, atol=1e-5)


@pytest.mark.parametrize("implementation", ["plain", "head_major", "fast", "integer"])
@pytest.mark.parametrize("form", FORMS)
def test_block_matches_numpy_reference(form, implementation):
    model = _model(form)
    images = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    x, _, weights = _block_io(model, images)
    expected, _ = _block_reference(x, weights, FORMS[form], model.grid_size,
                                   model.architecture.num_tokens_before_patches)
    block = model.get_layer("encoder_block_0")
    if implementation == "integer":
        with config.graph_form("integer"):
            out = block(ops.convert_to_tensor(x.astype("float32")))
    else:
        set_model_implementation(model, implementation)
        out = block(ops.convert_to_tensor(x.astype("float32")))
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", FORMS)
def test_another_image_size_recomputes_the_rotation(form):
    """A 48x40 image (a 6x5 grid): the tables follow the grid, rows and columns apart."""
    model = _model(form, image_size=(48, 40))
    images = np.random.default_rng(2).uniform(0, 255, (2, 48, 40, 3)).astype("float32")
    x, out, weights = _block_io(model, images)
    expected, _ = _block_reference(x, weights, FORMS[form], (6, 5),
                                   model.architecture.num_tokens_before_patches)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", ["dinov3", "pe"])
def test_attention_maps_apply_rope(form):
    model = _model(form)
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    x, _, weights = _block_io(model, images)
    _, probs = _block_reference(x, weights, FORMS[form], model.grid_size,
                                model.architecture.num_tokens_before_patches)
    maps = insight.attention_maps(model, images)
    np.testing.assert_allclose(maps[:, 0], probs, rtol=1e-4, atol=1e-5)
    layer = model.get_layer("encoder_block_0").attention
    y = model.get_layer("encoder_block_0").attention_norm(x.astype("float32"))
    _, scores = layer(y, y, return_attention_scores=True)
    np.testing.assert_allclose(ops.convert_to_numpy(scores), probs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", ["dinov3", "pe"])
def test_config_and_keras_file_round_trip(form, tmp_path):
    model = _model(form)
    images = np.random.default_rng(4).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    config_ = model.get_config()
    assert all(config_[k] == v for k, v in FORMS[form].items() if k != "rope_reference_grid")
    rebuilt = ViT.from_config(config_)
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(rebuilt(images)),
                               ops.convert_to_numpy(model(images)), rtol=1e-5, atol=1e-5)
    model.save(tmp_path / "rope.keras")
    loaded = keras.saving.load_model(tmp_path / "rope.keras")
    assert loaded.rope == model.rope and loaded.pooling_heads == model.pooling_heads
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images)),
                               ops.convert_to_numpy(model(images)), rtol=1e-5, atol=1e-5)


def test_variable_shapes_follow_the_options():
    shapes = ViTConfig(**TINY_ONE_BLOCK, **FORMS["pe"]).variable_shapes
    assert shapes["pooling/attention/query/kernel"] == (32, 2, 16)
    assert "position_embedding/embedding" in shapes
    dinov3 = ViT(**TINY_ONE_BLOCK, **FORMS["dinov3"])
    assert "position_embedding/embedding" not in dinov3.architecture.variable_shapes
    assert sorted(v.path for v in dinov3.weights) == sorted(dinov3.architecture.variable_shapes)


@pytest.mark.parametrize("changes, message", [
    (dict(rope="2d"), "rope must be None, 'dinov3' or 'axial'"),
    (dict(rope_theta=10.0), "rope_theta needs rope="),
    (dict(rope="dinov3", rope_theta=0), "rope_theta must be positive"),
    (dict(rope="dinov3", rope_reference_grid=4), "rope_reference_grid needs rope='axial'"),
    (dict(rope="axial", rope_reference_grid=(0, 4)), "rope_reference_grid must be"),
    (dict(rope="axial", rope_grid_indexing="yx"), "rope_grid_indexing must be"),
    (dict(rope="axial", rope_rotate_half="yes"), "rope_rotate_half must be"),
    (dict(rope="axial", rope_grid_offset=float("nan")), "rope_grid_offset must be"),
    (dict(rope="axial", num_heads=8, hidden_dim=48), "head width divisible by 4"),
    (dict(position_embedding=None), "position_embedding must be one of"),
    (dict(pooling_heads=2), "pooling_heads .* needs pooling 'map' or 'probe'"),
    (dict(pooling="map", pooling_heads=3), "must divide hidden_dim"),
])
def test_fields_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        ViTConfig(**{**TINY_ONE_BLOCK, **changes})


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="converts under TensorFlow in-process (the other backends export "
                    "through the same TensorFlow subprocess)")
@pytest.mark.parametrize("quantize", ["float32", "int8"])
def test_tflite_export_uses_builtin_ops_and_keeps_the_outputs(quantize, tmp_path):
    """RoPE as constant tables at the export size: builtin ops only, in float32 and in
    the full-integer graph (one head at a time)."""
    from keras_vit import export

    model = _model("dinov3")
    model = ViT.from_config({**model.get_config(), "include_top": False})
    rng = np.random.default_rng(5)
    for v in model.weights:
        base = 1.0 if v.path.endswith(("gamma", "_scale")) else 0.0
        v.assign(base + rng.normal(0, 0.1, v.shape).astype("float32"))
    images = rng.integers(0, 256, (16, 32, 32, 3)).astype("float32")
    path = export.export_tflite(model, tmp_path / "m.tflite", quantize=quantize,
                                representative_data=images if quantize == "int8" else None)
    export.check_builtin_ops(path)
    features = ops.convert_to_numpy(model(images[:4]))
    ours = export.run_tflite(path, images[:4])[0]
    if quantize == "float32":
        np.testing.assert_allclose(ours, features, rtol=1e-4, atol=1e-4)
    else:  # int8: nearer the features than the same model's without RoPE
        unrotated = ViT.from_config({**model.get_config(), "rope": None})
        unrotated.set_weights(model.get_weights())
        other = ops.convert_to_numpy(unrotated(images[:4]))
        assert np.abs(ours - features).mean() < 0.5 * np.abs(ours - other).mean()


def test_attention_dropout_in_training_and_masks_refused():
    model = ViT(**TINY_ONE_BLOCK, **FORMS["dinov3"], attention_dropout_rate=0.5, include_top=False)
    images = np.random.default_rng(6).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    inference = ops.convert_to_numpy(model(images, training=False))
    trained = ops.convert_to_numpy(model(images, training=True))
    assert np.isfinite(trained).all() and not np.allclose(trained, inference)
    set_model_implementation(model, "head_major")  # the own paths take no dropout
    np.testing.assert_allclose(ops.convert_to_numpy(model(images)), inference, rtol=1e-5, atol=1e-5)
    attention = model.get_layer("encoder_block_0").attention
    length = model.architecture.sequence_length
    tokens = ops.ones((1, length, 32))
    with pytest.raises(ValueError, match="rope takes no attention masks"):
        attention(tokens, tokens, attention_mask=ops.ones((1, length, length), dtype="bool"))
