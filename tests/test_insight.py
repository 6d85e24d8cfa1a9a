"""keras_vit.insight: intermediate features and attention maps against a float64 NumPy
forward pass of randomised tiny ViTs, attention rollout on hand-built attention with a
known result, overlay upsampling, and the errors."""

import math

import keras
import numpy as np
import pytest
import scipy.special
from keras import ops

from keras_vit import ViT, config, insight
from keras_vit.attention import set_model_implementation
from reference_vit import _gelu, _layer_norm
from tiny import randomised
from tiny import TINY

# Three sequence lengths only (16, 17 and 18 tokens): JAX compiles each eager op per shape.
CONFIGS = {
    "class_token": {},
    "gap": dict(pooling="gap"),
    "map": dict(pooling="map"),
    "registers_layer_scale_pre_norm": dict(num_register_tokens=1, layer_scale_init=0.1,
                                           pre_norm=True, class_token_position=False),
    "distillation_token": dict(distillation_token=True),
    "gap_registers": dict(pooling="gap", num_register_tokens=2),
}


def reference(w, c, images):
    """Float64 NumPy: the tokens after every block (L, B, T, D) and every block's
    attention probabilities (B, L, heads, T, T), written from the ViT's description."""
    x = np.asarray(images, np.float64) / 127.5 - 1.0
    kernel = w["patch_embedding/projection/kernel"]
    p = kernel.shape[0]
    b, gh, gw = x.shape[0], x.shape[1] // p, x.shape[2] // p
    patches = x.reshape(b, gh, p, gw, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
    tokens = patches @ kernel.reshape(-1, kernel.shape[-1]) + w["patch_embedding/projection/bias"]
    prefix = lambda name: np.broadcast_to(w[name], (b, *w[name].shape[1:]))  # noqa: E731
    token_pooling = c.get("pooling", "token") == "token"
    if token_pooling and c.get("class_token_position", True):
        first = [prefix("class_token/token")]
        if c.get("distillation_token"):
            first.append(prefix("distillation_token/tokens"))
        tokens = np.concatenate([*first, tokens], axis=1) + w["position_embedding/embedding"]
    else:
        tokens = tokens + w["position_embedding/embedding"]
        if token_pooling:
            tokens = np.concatenate([prefix("class_token/token"), tokens], axis=1)
    if c.get("num_register_tokens"):
        cut = int(token_pooling)
        registers = prefix("register_tokens/tokens")
        tokens = np.concatenate([tokens[:, :cut], registers, tokens[:, cut:]], axis=1)
    norm = lambda t, at: _layer_norm(t, (w[f"{at}/gamma"], w[f"{at}/beta"]), 1e-6)  # noqa: E731
    if c.get("pre_norm"):
        tokens = norm(tokens, "pre_norm")
    scale = (lambda y, at: y * w[at]) if c.get("layer_scale_init") else (lambda y, at: y)
    gelu, outputs, maps = _gelu("gelu_tanh"), [], []
    for i in range(c["num_layers"]):
        g = lambda name: w[f"encoder_block_{i}/{name}"]  # noqa: E731,B023
        y = norm(tokens, f"encoder_block_{i}/attention_norm")
        q, k, v = (np.einsum("btd,dnh->bnth", y, g(f"attention/{n}/kernel"))
                   + g(f"attention/{n}/bias")[:, None] for n in ("query", "key", "value"))
        attention = scipy.special.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]), -1)
        y = np.einsum("bnth,nhd->btd", attention @ v, g("attention/attention_output/kernel"))
        y = y + g("attention/attention_output/bias")
        tokens = tokens + scale(y, f"encoder_block_{i}/attention_scale")
        y = norm(tokens, f"encoder_block_{i}/mlp_norm")
        y = gelu(y @ g("mlp_dense_1/kernel") + g("mlp_dense_1/bias")) @ g("mlp_dense_2/kernel")
        tokens = tokens + scale(y + g("mlp_dense_2/bias"), f"encoder_block_{i}/mlp_scale")
        outputs.append(tokens)
        maps.append(attention)
    return np.stack(outputs), np.stack(maps, axis=1)


def built(name, seed=0):
    """A randomised tiny ViT of CONFIGS[name], its config, images, and the reference."""
    c = {**TINY, **CONFIGS[name]}
    model = ViT(**c)
    w = randomised(model, seed)
    images = np.random.default_rng(seed + 1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    return model, c, images, reference(w, c, images)


def prefix_tokens(c):
    return (c.get("pooling", "token") == "token") + bool(c.get("distillation_token")) + c.get(
        "num_register_tokens", 0)


@pytest.mark.parametrize("name", CONFIGS)
def test_attention_maps_and_block_tokens_match_the_reference(name):
    model, c, images, (tokens, attention) = built(name)
    maps = insight.attention_maps(model, images)
    assert maps.shape == (2, 2, 4, prefix_tokens(c) + 16, prefix_tokens(c) + 16)
    assert maps.dtype == np.float32
    np.testing.assert_allclose(maps, attention, atol=1e-5)
    first, last = insight.intermediate_model(model, blocks=(0, -1))(images)
    np.testing.assert_allclose(ops.convert_to_numpy(first), tokens[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(last), tokens[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["registers_layer_scale_pre_norm", "distillation_token", "map"])
def test_intermediate_model_norm_and_grid_under_predict(name):
    model, c, images, (tokens, _) = built(name)
    features = insight.intermediate_model(model, blocks=range(-2, 0), norm=True, reshape=True)
    assert isinstance(features, keras.Model) and len(features.outputs) == 2
    w = {v.path: ops.convert_to_numpy(v).astype("float64") for v in model.weights}
    normed = _layer_norm(tokens, (w["encoder_norm/gamma"], w["encoder_norm/beta"]), 1e-6)
    expected = normed[:, :, prefix_tokens(c):].reshape(2, 2, 4, 4, 32)
    for ours, want in zip(features.predict(images, verbose=0), expected):
        np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-4)
    single = insight.intermediate_model(model)  # the last block, one output
    assert isinstance(single.output, keras.KerasTensor)
    assert single.output_shape == (None, prefix_tokens(c) + 16, 32)
    np.testing.assert_allclose(ops.convert_to_numpy(single(images)), tokens[-1],
                               rtol=1e-4, atol=1e-4)
    first = insight.intermediate_model(model, blocks=np.int64(-2))
    np.testing.assert_allclose(ops.convert_to_numpy(first(images)), tokens[0],
                               rtol=1e-4, atol=1e-4)


def test_class_token_maps_of_a_model_match_the_reference():
    model, c, images, (_, attention) = built("registers_layer_scale_pre_norm")
    prefix = prefix_tokens(c)
    rollout = insight.attention_rollout(model, images)
    np.testing.assert_allclose(rollout, insight.rollout_from_attention(attention, prefix, (4, 4)),
                               atol=1e-5)
    maps = insight.attention_maps(model, images)
    np.testing.assert_array_equal(insight.attention_rollout(model, attention=maps), rollout)
    np.testing.assert_array_equal(insight.mean_attention_distance(model, attention=maps),
                                  insight.mean_attention_distance(model, images))
    for call in (insight.attention_rollout, insight.mean_attention_distance):
        with pytest.raises(ValueError, match="Give the images or their attention maps"):
            call(model, images, attention=maps)
        with pytest.raises(ValueError, match="Give the images or their attention maps"):
            call(model)
        with pytest.raises(ValueError, match=r"attention maps, of shape \(batch, 2, 4, 18, "
                                             r"18\), got \(2, 2, 4, 18\)"):
            call(model, attention=maps[..., 0])
    last = attention[:, -1].mean(axis=1)[:, 0, prefix:]  # the class token's row over patches
    np.testing.assert_allclose(insight.class_token_attention(model, images),
                               (last / last.sum(axis=1, keepdims=True)).reshape(2, 4, 4), atol=1e-5)
    assert rollout.shape == (2, 4, 4) and np.allclose(rollout.sum(axis=(1, 2)), 1)


@pytest.mark.parametrize("implementation", config.ATTENTION_IMPLEMENTATIONS)
def test_maps_do_not_depend_on_the_attention_implementation(implementation):
    model, _, images, (_, attention) = built("distillation_token")
    logits = ops.convert_to_numpy(model(images))
    with config.attention_implementation(implementation):
        np.testing.assert_allclose(insight.attention_maps(model, images), attention, atol=1e-5)
    set_model_implementation(model, implementation)
    np.testing.assert_allclose(insight.attention_maps(model, images), attention, atol=1e-5)
    # The model's own forward pass is untouched by the side model.
    assert {layer.implementation for layer in _attention_layers(model)} == {implementation}
    np.testing.assert_allclose(ops.convert_to_numpy(model(images)), logits, rtol=1e-5, atol=1e-5)


def _attention_layers(model):
    return [model.get_layer(f"encoder_block_{i}").attention for i in range(model.num_layers)]


def one_hot_rows(rows, tokens=5):
    """(T, T) attention: row i attends to `rows[i]` (a token, or {token: weight}), else to
    itself."""
    a = np.eye(tokens)
    for i, target in rows.items():
        a[i] = 0
        for j, weight in (target.items() if isinstance(target, dict) else [(target, 1.0)]):
            a[i, j] = weight
    return a


def test_rollout_adds_the_residual_and_multiplies_first_to_last():
    # Block 1: patch token 1 attends to token 2. Block 2: the class token attends to token 1.
    # With the residual, each becomes half itself: the class token's rollout row is
    # 0.5 e0 + 0.25 e1 + 0.25 e2, i.e. half on each of the first two patches.
    blocks = [one_hot_rows({1: 2}), one_hot_rows({0: 1})]
    attention = np.stack([np.stack([a, a]) for a in blocks])[None]  # (1, 2, 2 heads, 5, 5)
    rollout = insight.rollout_from_attention(attention, 1, (2, 2))
    np.testing.assert_allclose(rollout, [[[0.5, 0.5], [0.0, 0.0]]])


def test_rollout_renormalises_the_rows():
    # Rows summing to less than 1, as after discarding: block 1's row 1 keeps 0.5 on token
    # 3, so with the residual it is (e1 + 0.5 e3) / 1.5; row 2 is (e2 + e4) / 2. Block 2's
    # class row 0.5 e0 + 0.25 e1 + 0.25 e2 then gives the patches 1/6, 1/8, 1/12, 1/8.
    blocks = [one_hot_rows({1: {3: 0.5}, 2: 4}), one_hot_rows({0: {1: 0.5, 2: 0.5}})]
    rollout = insight.rollout_from_attention(np.stack(blocks)[None, :, None], 1, (2, 2))
    np.testing.assert_allclose(rollout, [[[1 / 3, 1 / 4], [1 / 6, 1 / 4]]])


def test_rollout_averages_the_heads():
    heads = [one_hot_rows({0: 1}), one_hot_rows({0: 4})]
    rollout = insight.rollout_from_attention(np.stack(heads)[None, None], 1, (2, 2))
    np.testing.assert_allclose(rollout, [[[0.5, 0.0], [0.0, 0.5]]])


def test_rollout_leaves_out_the_prefix_tokens():
    # Token 1 is a register: the class token's weight on it is dropped, the rest renormalised.
    a = one_hot_rows({0: {1: 0.5, 2: 0.375, 5: 0.125}}, tokens=6)
    rollout = insight.rollout_from_attention(a[None, None, None], 2, (2, 2))
    np.testing.assert_allclose(rollout, [[[0.75, 0.0], [0.0, 0.25]]])


def test_rollout_discard_ratio_drops_the_smallest_entries():
    a = one_hot_rows({0: {0: 0.1, 1: 0.4, 2: 0.3, 3: 0.15, 4: 0.05}})[None, None, None]
    np.testing.assert_allclose(insight.rollout_from_attention(a, 1, (2, 2)),
                               [[[0.4 / 0.9, 0.3 / 0.9], [0.15 / 0.9, 0.05 / 0.9]]], rtol=1e-12)
    # 17 of the 25 entries go: the 16 zeros and the 0.05.
    np.testing.assert_allclose(insight.rollout_from_attention(a, 1, (2, 2), discard_ratio=0.7),
                               [[[0.4 / 0.85, 0.3 / 0.85], [0.15 / 0.85, 0.0]]], rtol=1e-12)


def numpy_rollout(attention, num_prefix_tokens, grid_size, discard_ratio):
    """Attention rollout written out per image and block: the heads averaged, the smallest
    `int(discard_ratio * T * T)` entries zeroed, the identity added, rows renormalised,
    A_L ... A_1; the class token's row over the patches, renormalised (uniform if empty)."""
    maps = []
    for image in np.asarray(attention, np.float64):  # (L, heads, T, T)
        tokens = image.shape[-1]
        result = np.eye(tokens)
        for block in image:
            a = block.mean(axis=0)
            discard = int(discard_ratio * a.size)
            if discard:
                threshold = np.sort(a, axis=None)[discard - 1]
                assert np.count_nonzero(a <= threshold) == discard  # no ties to break
                a = np.where(a <= threshold, 0.0, a)
            a = a + np.eye(tokens)
            result = (a / a.sum(axis=1, keepdims=True)) @ result
        row = result[0, num_prefix_tokens:]
        maps.append(row / row.sum() if row.sum() > 0 else np.full(row.shape, 1 / row.size))
    return np.reshape(maps, (-1, *grid_size))


def test_rollout_with_any_discard_ratio_matches_numpy_and_is_never_nan():
    """Discarding 99 % of the entries can leave the class token attending to itself alone
    in every block: its map was 0 / 0 (NaN), now uniform with a warning."""
    model, _, images, (_, attention) = built("class_token")
    for ratio in (0.0, 0.5, 0.9):
        np.testing.assert_allclose(insight.attention_rollout(model, images, discard_ratio=ratio),
                                   numpy_rollout(attention, 1, (4, 4), ratio), atol=1e-5)
    with pytest.warns(UserWarning, match=r"image\(s\) \[1\] has no weight on any patch"):
        maps = insight.attention_rollout(model, images, discard_ratio=0.99)
    np.testing.assert_allclose(maps, numpy_rollout(attention, 1, (4, 4), 0.99), atol=1e-5)
    assert not np.isnan(maps).any() and np.allclose(maps.sum(axis=(1, 2)), 1)
    assert maps[0].std() > 0 and np.all(maps[1] == 1 / 16)  # the second image's is empty


def test_insight_arguments_of_the_wrong_type_or_range_say_what_was_expected(images):
    model = ViT(**TINY)
    maps = np.full((1, 2, 4, 17, 17), 1 / 17)
    cases = [
        (TypeError, r"blocks must be an encoder block index \(an int\) or a sequence of them, "
                    r"got 1.0 \(float\)", lambda: insight.intermediate_model(model, blocks=1.0)),
        (TypeError, r"blocks must be .* got '-1' \(str\)",
         lambda: insight.intermediate_model(model, blocks="-1")),
        (TypeError, r"norm must be True or False, got 'yes'",
         lambda: insight.intermediate_model(model, norm="yes")),
        (TypeError, r"reshape must be True or False, got 1 \(int\)",
         lambda: insight.intermediate_model(model, reshape=1)),
        (ValueError, r"batch_size must be an integer >= 1, got 0\.",
         lambda: insight.attention_maps(model, images, batch_size=0)),
        (TypeError, r"batch_size must be an integer >= 1, got 2.0 \(float\)",
         lambda: insight.class_token_attention(model, images, batch_size=2.0)),
        (TypeError, r"batch_size must be an integer >= 1, got True \(bool\)",
         lambda: insight.attention_rollout(model, images, batch_size=True)),
        (ValueError, r"batch_size must be an integer >= 1, got -8",
         lambda: insight.attention_rollout(model, attention=maps, batch_size=-8)),
        (TypeError, r"discard_ratio must be a number in \[0, 1\), got '0.5' \(str\)",
         lambda: insight.attention_rollout(model, images, discard_ratio="0.5")),
        (ValueError, r"discard_ratio must be in \[0, 1\), got nan",
         lambda: insight.attention_rollout(model, images, discard_ratio=float("nan"))),
        (ValueError, r"discard_ratio must be in \[0, 1\), got -0.1",
         lambda: insight.rollout_from_attention(maps, 1, (4, 4), discard_ratio=-0.1)),
        (TypeError, r"num_prefix_tokens must be an integer >= 1, got 1.0 \(float\)",
         lambda: insight.rollout_from_attention(maps, 1.0, (4, 4))),
        (ValueError, r"grid_size must be a positive int or a \(height, width\) pair, got 4.0",
         lambda: insight.rollout_from_attention(maps, 1, 4.0)),
        (ValueError, r"image_size must be a positive int or a \(height, width\) pair, got 32.0",
         lambda: insight.upsample_map(np.ones((1, 4, 4)), 32.0)),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()


def test_upsample_map_is_bilinear_with_pixel_centres_aligned():
    up = insight.upsample_map([[[0.0, 1.0], [2.0, 3.0]]], 4)
    steps = np.array([0.0, 0.25, 0.75, 1.0])  # source coordinates, clamped at the edges
    np.testing.assert_allclose(up, [(2 * steps[:, None] + steps[None, :]) / 3], atol=1e-12)
    wide = insight.upsample_map(np.random.default_rng(0).uniform(size=(3, 2, 3)), (8, 12))
    assert wide.shape == (3, 8, 12)
    assert np.allclose(wide.min(axis=(1, 2)), 0) and np.allclose(wide.max(axis=(1, 2)), 1)
    np.testing.assert_array_equal(insight.upsample_map(np.full((1, 2, 2), 0.25), 4), 0.0)


def test_errors_name_the_problem(images):
    model = ViT(**TINY, num_register_tokens=1)
    for blocks in (2, (-3,), (0, 5), ("last",), ()):
        with pytest.raises(ValueError, match="does not exist|at least one"):
            insight.intermediate_model(model, blocks=blocks)
    for bad in (images[0], images[:, :16, :16]):
        with pytest.raises(ValueError, match="without a batch axis|was built for 32x32"):
            insight.attention_maps(model, bad)
    with pytest.raises(ValueError, match="was built for 32x32"):
        insight.attention_rollout(model, images[:, :16])
    for pooling in ("gap", "map"):
        no_class_token = ViT(**TINY, pooling=pooling)
        for function in (insight.attention_rollout, insight.class_token_attention):
            with pytest.raises(ValueError, match=f"no class token \\(pooling='{pooling}'\\)"):
                function(no_class_token, images)
            kept = ViT(**TINY, pooling=pooling, class_token=True)  # EVA-02, PE: token 0 is it
            np.testing.assert_allclose(function(kept, images).sum(axis=(1, 2)), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="pooled_norm=True"):
        insight.intermediate_model(ViT(**TINY, pooling="gap", pooled_norm=True), norm=True)
    plain = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten()])
    for function in (insight.attention_maps, insight.attention_rollout,
                     insight.class_token_attention):
        with pytest.raises(ValueError, match="Expected a keras_vit.ViT, got Sequential"):
            function(plain, images)
    for function in (insight.intermediate_model, insight.attention_model):
        with pytest.raises(ValueError, match="Expected a keras_vit.ViT"):
            function(plain)


def test_array_helpers_check_their_inputs():
    with pytest.raises(ValueError, match=r"\(batch, layers, heads, tokens, tokens\)"):
        insight.rollout_from_attention(np.ones((2, 5, 5)), 1, (2, 2))
    with pytest.raises(ValueError, match="do not hold 1 prefix tokens and a \\(3, 3\\) patch grid"):
        insight.rollout_from_attention(np.ones((1, 1, 1, 5, 5)) / 5, 1, (3, 3))
    with pytest.raises(ValueError, match="discard_ratio must be in"):
        insight.rollout_from_attention(np.ones((1, 1, 1, 5, 5)) / 5, 1, (2, 2), discard_ratio=1)
    with pytest.raises(ValueError, match="maps must be \\(batch, h, w\\)"):
        insight.upsample_map(np.ones((4, 4)), 32)


def test_intermediate_model_exports_to_tflite(tmp_path):
    """The features model converts like the ViT (TensorFlow backend: in-process)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("converted in-process under TensorFlow; the other backends convert the same "
                    "way, through a .keras file in a TensorFlow subprocess")
    from ai_edge_litert.interpreter import Interpreter

    from keras_vit import export

    model = ViT(**TINY)
    randomised(model)
    features = insight.intermediate_model(model, blocks=(-1,), norm=True, reshape=True)
    path = str(tmp_path / "features.tflite")
    export.export_tflite(features, path)
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    image = np.random.default_rng(4).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    exported = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = ops.convert_to_numpy(features(image))
    assert exported.shape == expected.shape == (1, 4, 4, TINY["hidden_dim"])
    np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-4)
