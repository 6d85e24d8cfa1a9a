"""The benchmark script runs end to end on a tiny configuration (a check that it works, not
a timing: the numbers are not looked at)."""

import importlib.util
import json
import os
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench  # noqa: E402

HAS_KERAS_HUB = importlib.util.find_spec("keras_hub") is not None


def test_expected_params_match_the_reference_and_the_presets():
    from keras_vit import presets

    # Published counts with a 1000-class head at 224 (vit_jax / timm).
    assert bench.expected_params("ti16", 224) == 5_717_416
    assert bench.expected_params("s16", 224) == 22_050_664
    assert bench.expected_params("b16", 224) == 86_567_656
    # DINOv2-B/14 features: keras-hub's dinov2_base preset metadata says 87,632,640 at 518 px
    # (its mask token and 518 px position table included); at 224 both tables are smaller.
    assert bench.expected_params("dinov2_b14", 518, "keras_hub") == 87_632_640
    assert bench.expected_params("dinov2_b14", 224) == 85_724_928
    assert bench.expected_params("dinov2_b14", 224, "keras_hub") == 85_724_928 + 1_052_928
    # DINOv3 ViT-B/16 without q/k/v biases (timm's vit_base_patch16_dinov3: 85.6 M), any
    # image size (RoPE, no table); keras-hub's adds its mask token.
    assert bench.expected_params("dinov3_b16", 224) == bench.expected_params("dinov3_b16", 256) == 85_641_216
    assert bench.expected_params("dinov3_b16", 224, "keras_hub") == 85_641_216 + 768
    # bench.ARCH is read from keras_vit's preset modules, not a copy of them: every preset
    # is literal data (ast.literal_eval raises on a call or a name), and together they
    # are presets.PRESETS.
    assert bench.load_presets() == presets.PRESETS
    assert bench.ARCH["b16"] == tuple(presets.PRESETS["b16"]["config"][key] for key in (
        "patch_size", "hidden_dim", "mlp_dim", "num_heads", "num_layers"))


def test_modes_build_the_documented_jobs():
    gpu = bench.build_specs(bench.parse_args(["--gpu", "--attention", "plain,fast,fast:8"]))
    assert [s["libs"] for s in gpu] == [
        ["keras_vit:plain"], ["keras_vit:fast"], ["keras_vit:fast:8"], ["keras_hub"], ["timm"]
    ]
    assert {(s["preset"], s["batch_size"], s["train_batch_size"], s["precision"]) for s in gpu} == {
        ("b16", 256, 128, "mixed_bfloat16")
    }
    assert gpu[-1]["backend"] == "torch" and gpu[-1]["jit_compile"] is True
    quick = bench.build_specs(bench.parse_args(["--quick"]))
    assert {(s["backend"], s["preset"]) for s in quick if s["libs"] != ["timm"]} == {
        (b, p) for b in ("tensorflow", "jax", "torch") for p in ("ti16", "s16")
    }
    assert all(s["libs"] == ["keras_vit", "keras_hub"] for s in quick if s["libs"] != ["timm"])
    dinov2 = bench.build_specs(bench.parse_args(["--gpu", "--presets", "dinov2_b14"]))
    assert [s["libs"] for s in dinov2] == [["keras_vit"], ["keras_hub"], ["timm"]]
    assert bench.TIMM_NAMES["dinov2_b14"] == "vit_base_patch14_dinov2"
    dinov3 = bench.build_specs(bench.parse_args(["--gpu", "--presets", "dinov3_b16"]))
    assert [s["libs"] for s in dinov3] == [["keras_vit"], ["keras_hub"], ["timm"]]


def test_attention_specs():
    assert bench.attention_spec("plain") == ("plain", None)
    assert bench.attention_spec("fast") == ("fast", None)
    assert bench.attention_spec("fast:8") == ("fast", 8)
    for bad in ("flash", "plain:8", "fast:0", "fast:x", "fast:-2", "fast:"):
        with pytest.raises(ValueError, match="attention"):
            bench.attention_spec(bad)
        with pytest.raises(SystemExit):
            bench.parse_args(["--attention", f"plain,{bad}"])


def _tiny_run(tmp, presets, libs, *extra):
    """bench.main on `presets` at 32 px, batch 2, one step a phase; (status, results, report)."""
    out, raw = tmp / "report.md", tmp / "results.json"
    status = bench.main([
        "--backends", keras.backend.backend(), "--libs", libs, "--presets", presets,
        "--image-size", "32", "--batch-size", "2", "--train-batch-size", "2", "--warmup", "1",
        "--repeats", "1", "--steps", "1", "--predict-batches", "1", "--timeout", "900",
        "--out", str(out), "--json", str(raw), *extra,
    ])
    return status, json.loads(raw.read_text()), out.read_text()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of the script on a 2-layer model: keras_vit's plain attention and its fast path
    padding to a multiple of 8, and keras-hub where it is installed, in one interleaved
    process."""
    libs = "keras_vit,keras_hub" if HAS_KERAS_HUB else "keras_vit"
    return _tiny_run(tmp_path_factory.mktemp("bench"), "tiny", libs,
                     "--attention", "plain,fast:8")


@pytest.fixture(scope="module")
def tiny_dinov2_run(tmp_path_factory):
    """The same for the 2-layer DINOv2 features model, keras_vit as built."""
    libs = "keras_vit,keras_hub" if HAS_KERAS_HUB else "keras_vit"
    return _tiny_run(tmp_path_factory.mktemp("bench_dinov2"), "dinov2_tiny", libs)


@pytest.fixture(scope="module")
def tiny_dinov3_run(tmp_path_factory):
    """The same for the 2-layer DINOv3 features model (RoPE, 4 registers)."""
    libs = "keras_vit,keras_hub" if HAS_KERAS_HUB else "keras_vit"
    return _tiny_run(tmp_path_factory.mktemp("bench_dinov3"), "dinov3_tiny", libs)


def test_runs_keras_vit_with_both_attention_paths(tiny_run):
    status, results, report = tiny_run
    assert status == 0, results
    by_lib = {r["spec"]["lib"]: r for r in results}
    for lib in ("keras_vit:plain", "keras_vit:fast:8"):
        res = by_lib[lib]
        assert "error" not in res, res
        assert res["params"] == bench.expected_params("tiny", 32)
        for key in ("fwd_ips", "predict_ips", "train_ips"):
            assert res[key] > 0
    assert "keras_vit (fast:8 attention)" in report and "Software:" in report


@pytest.mark.skipif(not HAS_KERAS_HUB, reason="keras-hub is not installed (requirements-bench.txt)")
def test_runs_against_keras_hub_with_equal_params(tiny_run):
    status, results, report = tiny_run
    by_lib = {r["spec"]["lib"]: r for r in results}
    assert "error" not in by_lib["keras_hub"], by_lib["keras_hub"]
    assert by_lib["keras_hub"]["params"] == bench.expected_params("tiny", 32)
    line = next(line for line in report.splitlines() if "keras_vit (plain attention)" in line)
    ratios = line.split("|")[-3].split("/")
    assert len(ratios) == 3 and all(float(r) > 0 for r in ratios)


@pytest.mark.parametrize("run, preset, hub_note", [
    ("tiny_dinov2_run", "dinov2_tiny", "mask token, 518 px position table"),
    ("tiny_dinov3_run", "dinov3_tiny", "+32 params: mask token")])
def test_runs_the_features_models(run, preset, hub_note, request):
    status, results, report = request.getfixturevalue(run)
    assert status == 0, results
    by_lib = {r["spec"]["lib"]: r for r in results}
    for lib, res in by_lib.items():  # keras-hub's count includes its extra weights
        assert res["params"] == bench.expected_params(preset, 32, lib), res
        for key in ("fwd_ips", "predict_ips", "train_ips"):
            assert res[key] > 0
    rows = {line.split("|")[4].strip(): line for line in report.splitlines()
            if f"| {preset} 32 b2/2 |" in line}
    if HAS_KERAS_HUB:
        assert all(float(r) > 0 for r in rows["keras_vit"].split("|")[-3].split("/"))
        assert hub_note in rows["keras_hub"]


def _same_weights(preset, mapping):
    """keras_vit's and keras-hub's `preset` at 32 px with the same random weights (keras-hub's
    weight paths renamed by `mapping`'s substrings); returns (ours, hub, hub weights unused,
    our weights not set, a batch of images)."""
    import numpy as np

    ours = bench.build_keras_model("keras_vit", preset, 32)
    hub = bench.build_keras_model("keras_hub", preset, 32)
    by_path = {v.path: v for v in ours.weights}
    rng = np.random.default_rng(0)
    unused = []
    for v in hub.weights:
        path = v.path
        for a, b in mapping:
            path = path.replace(a, b)
        if path not in by_path:
            unused.append(v.path)
            continue
        value = 0.3 * rng.standard_normal(v.shape).astype("float32")  # layer scales too
        v.assign(value)
        target = by_path.pop(path)
        target.assign(value.reshape(target.shape))  # DINOv3's (D, D) -> (D, heads, head_dim)
    return ours, hub, unused, list(by_path), rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")


# keras-hub DINOv2 weight path -> keras_vit's, by substring
_HUB_TO_VIT = [
    ("embeddings/patch_embeddings/", "patch_embedding/"),
    ("embeddings/cls_token", "class_token/token"),
    ("embeddings/interpolated_position_embeddings", "position_embedding/embedding"),
    ("encoder/layers_", "encoder_block_"), ("layer_scale1/lambda1", "attention_scale"),
    ("layer_scale2/lambda1", "mlp_scale"), ("norm1", "attention_norm"), ("norm2", "mlp_norm"),
    ("attention/attention/", "attention/"), ("mlp/fc1", "mlp_dense_1"), ("mlp/fc2", "mlp_dense_2"),
    ("layernorm/", "encoder_norm/"),
]


@pytest.mark.skipif(not HAS_KERAS_HUB, reason="keras-hub is not installed (requirements-bench.txt)")
def test_dinov2_models_compute_the_same_function():
    """With keras-hub's weights copied over, keras_vit's DINOv2 gives the same features: the
    benchmark compares two implementations of one model, not two models."""
    import numpy as np

    ours, hub, unused, unset, x = _same_weights("dinov2_tiny", _HUB_TO_VIT)
    assert not unset and unused == ["embeddings/mask_token", "embeddings/position_embeddings"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)),
                               keras.ops.convert_to_numpy(hub(x)), atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="breakdown.py times JAX functions")
def test_breakdown_times_every_part_and_patchify_equals_the_conv(tmp_path):
    import breakdown
    import numpy as np

    from keras_vit import layers as vit_layers

    out = tmp_path / "breakdown.md"
    assert breakdown.main([
        "--preset", "tiny", "--image-size", "32", "--batch-size", "2", "--precision",
        "float32", "--attention", "plain,head_major,fast:2", "--warmup", "1", "--repeats", "1",
        "--steps", "1", "--out", str(out),
    ]) == 0
    rows = [line.split("|")[1].strip() for line in out.read_text().splitlines()[4:]]
    # float32 blocks materialise their gradient by default on a CPU, never elsewhere
    materialized = vit_layers.materializes_gradient("float32")
    other_mode = ["model (gradient materialization off)"] if materialized else []
    assert rows == [
        "matmul (B*T, D) x (D, M)", "patch embedding (conv)",
        "patch embedding (patchify matmul)", "layer norm", "attention (plain)",
        "attention (head_major)", "attention (fast:2)", "MLP", "encoder block", "model",
        *other_mode, "model - parts",
    ]
    for line in out.read_text().splitlines()[4:-1]:
        fwd_ms, grad_ms = float(line.split("|")[2]), float(line.split("|")[4])
        assert fwd_ms > 0 and grad_ms > 0, line

    args = breakdown.parse_args(["--preset", "tiny", "--image-size", "32", "--batch-size", "2",
                                 "--precision", "float32"])
    by_name = {row[0]: row for row in breakdown.build_rows(args)}
    conv, patchify = by_name["patch embedding (conv)"], by_name["patch embedding (patchify matmul)"]
    np.testing.assert_allclose(
        np.asarray(patchify[1](*patchify[3])), np.asarray(conv[1](*conv[3])), atol=1e-4
    )


def test_breakdown_reports_a_failing_row_and_keeps_the_rest(monkeypatch):
    import breakdown

    def refused(*_):
        raise NotImplementedError("Unsupported sequence length Q 198, KV 198.\nmore")

    def ok(*_):
        return 0.0

    monkeypatch.setattr(breakdown, "build_rows", lambda args: [
        ("attention (fast:2)", refused, refused, (), (1, 3), 0),
        ("encoder block", ok, ok, (), (1, 3), 2),
        ("model", ok, ok, (), (2, 6), 0),
    ])
    args = breakdown.parse_args(["--warmup", "0", "--repeats", "1", "--steps", "1"])
    timed, failed = breakdown.measure(args)
    assert [row[0] for row in timed] == ["encoder block", "model"]
    assert failed == [("attention (fast:2)",
                       "NotImplementedError: Unsupported sequence length Q 198, KV 198.")]
    table = breakdown.format_table(
        [("encoder block", 1e-3, 2e-3, (1, 3), 2), ("model", 4e-3, 8e-3, (2, 6), 0)], failed
    )
    assert table.splitlines()[-1] == (
        "- attention (fast:2) failed: NotImplementedError: Unsupported sequence length Q 198, "
        "KV 198."
    )
    assert "| model - parts | 2.000 |" in table
    model_refused = [("model", refused, ok, (), (2, 6), 0)]
    monkeypatch.setattr(breakdown, "build_rows", lambda args: model_refused)
    with pytest.raises(NotImplementedError):
        breakdown.measure(args)


def test_breakdown_rejects_an_unknown_attention_implementation():
    import breakdown

    with pytest.raises(SystemExit):
        breakdown.parse_args(["--attention", "plain,flash"])
    with pytest.raises(SystemExit):
        breakdown.parse_args(["--attention", "fast:0"])


_HLO = """HloModule jit_step, is_scheduled=true

%fused_dot (p0: bf16[8,4], p1: bf16[4,4]) -> bf16[8,4] {
  %p0 = bf16[8,4]{1,0} parameter(0)
  %p1 = bf16[4,4]{1,0} parameter(1)
  ROOT %dot.1 = bf16[8,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_norm (p0.1: f32[8,4]) -> f32[8] {
  %p0.1 = f32[8,4]{1,0} parameter(0)
  %c = f32[] constant(0)
  ROOT %reduce.1 = f32[8]{0} reduce(%p0.1, %c), dimensions={1}, to_apply=%add
}

%fused_copy (p0.2: bf16[8,4]) -> bf16[4,8] {
  %p0.2 = bf16[8,4]{1,0} parameter(0)
  ROOT %transpose.1 = bf16[4,8]{1,0} transpose(%p0.2), dimensions={1,0}
}

%fused_gelu (p0.3: bf16[8,4]) -> bf16[8,4] {
  %p0.3 = bf16[8,4]{1,0} parameter(0)
  ROOT %multiply.1 = bf16[8,4]{1,0} multiply(%p0.3, %p0.3)
}

ENTRY %main (a: bf16[8,4], b: bf16[4,4]) -> bf16[8,4] {
  %a = bf16[8,4]{1,0} parameter(0)
  %b = bf16[4,4]{1,0} parameter(1)
  %gemm_fusion = bf16[8,4]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_dot, metadata={op_name="jit(loss)/transpose(jvp(encoder_block_3))/mlp_dense_1/dot_general"}
  %cublas-gemm.1 = (bf16[8,4]{1,0}, s8[64]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm", metadata={op_name="jit(loss)/jvp(encoder_block_0)/mlp_dense_2/dot_general"}
  %cudnn-fmha = (bf16[8,4]{1,0}, s8[64]{0}) custom-call(%a, %a, %a), custom_call_target="__cudnn$fmhaSoftmax", metadata={op_name="jit(loss)/jvp(encoder_block_11)/attention/dot_product_attention"}
  %input_reduce_fusion = f32[8]{0} fusion(%a), kind=kInput, calls=%fused_norm, metadata={op_name="jit(loss)/jvp(encoder_block_2)/attention_norm/jit(_var)/reduce_sum"}
  %transpose_fusion = bf16[4,8]{1,0} fusion(%a), kind=kLoop, calls=%fused_copy
  %loop_fusion = bf16[8,4]{1,0} fusion(%a), kind=kLoop, calls=%fused_gelu, metadata={op_name="jit(loss)/jvp(encoder_block_1)/erfc"}
  ROOT %copy.3 = bf16[8,4]{1,0} copy(%loop_fusion)
}
"""


def test_op_profile_reads_kinds_and_sources_from_hlo():
    import op_profile

    ops = op_profile.parse_hlo(_HLO)
    assert ops["gemm_fusion"] == (
        "matmul (fusion)", "encoder_block_*/mlp_dense_1/dot_general (backward)"
    )
    assert ops["cublas-gemm.1"] == ("matmul (library)", "encoder_block_*/mlp_dense_2/dot_general")
    assert ops["cudnn-fmha"][0] == "attention (cuDNN)"
    assert ops["input_reduce_fusion"] == (
        "reduction fusion", "encoder_block_*/attention_norm/reduce_sum"
    )
    assert ops["transpose_fusion"] == ("copy / transpose", "")
    assert ops["loop_fusion"] == ("elementwise fusion", "encoder_block_*/erfc")
    assert ops["copy.3"][0] == "copy / transpose"
    assert ops["dot.1"][0] == "matmul (XLA)"  # instructions inside fusions are read too

    events = [("k1", 2e6, "gemm_fusion"), ("k2", 1e6, "cublas-gemm.1"),
              ("sm90_xmma_gemm_bf16", 4e6, None), ("k3", 3e6, "loop_fusion"),
              ("k3", 3e6, "loop_fusion"), ("cublas_gemm_1", 1e6, None)]
    kinds, sources, summed = op_profile.summarize(events, ops, calls=2)
    assert summed == pytest.approx(7.0)
    assert dict(kinds) == pytest.approx({"matmul (fusion)": 1.0, "matmul (library)": 3.0,
                                         "elementwise fusion": 3.0})
    # a kernel without an HLO op, named after its instruction, joins that instruction
    assert ("encoder_block_*/mlp_dense_2/dot_general", "matmul (library)", 1.0, 1) in sources
    assert sources[0] == ("encoder_block_*/erfc", "elementwise fusion", 3.0, 1)
    assert ("sm90_xmma_gemm_bf16", "matmul (library)", 2.0, 1) in sources
    report = op_profile.format_report("t", {"gradient": (7.0, kinds, sources, summed)}, top=2)
    assert "### gradient: 7.000 ms per call (wall), 7.000 ms summed op time" in report
    assert "| encoder_block_*/erfc | elementwise fusion | 3.000 | 42.9% | 1 |" in report
    assert "no device events traced" in op_profile.format_report(
        "t", {"forward": (1.0, [], [], 0.0)}, top=2)


def test_op_profile_torch_kernel_table():
    torch = pytest.importorskip("torch")
    import op_profile

    x = torch.randn(64, 64)
    wall, rows = op_profile.torch_kernel_table(lambda: torch.relu(x @ x), steps=3, warmup=1)
    names = [name for name, _, _, _ in rows]
    assert wall > 0 and "aten::mm" in names
    assert all(ms >= 0 and calls > 0 for _, _, ms, calls in rows)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="op_profile.py profiles JAX")
def test_op_profile_runs_on_a_tiny_model(tmp_path):
    import tarfile

    import op_profile

    assert op_profile.main([
        "--preset", "tiny", "--image-size", "32", "--batch-size", "2", "--train-batch-size",
        "2", "--precision", "float32", "--warmup", "1", "--steps", "1", "--out-dir",
        str(tmp_path),
    ]) == 0
    report = (tmp_path / "op_profile.md").read_text()
    assert "### forward:" in report and "### gradient:" in report
    assert "### train step:" in report
    assert "| matmul" in report and "encoder_block_*/" in report
    with tarfile.open(tmp_path / "hlo.tar.gz") as tar:
        names = tar.getnames()
        assert names == ["hlo_forward.txt", "hlo_gradient.txt", "hlo_train_step.txt"]
        assert tar.extractfile("hlo_gradient.txt").read().startswith(b"HloModule")


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="checks the refusal elsewhere")
def test_jax_scripts_refuse_other_backends():
    import breakdown

    with pytest.raises(SystemExit, match="op_profile.py measures JAX functions"):
        breakdown.jax_device_text("op_profile.py")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="scaling.py times JAX setups")
def test_scaling_times_every_setup_on_simulated_devices(tmp_path):
    import subprocess

    out = tmp_path / "scaling.json"
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "scaling.py"), "--image-size",
               "32", "--per-device-batch-size", "2", "--steps", "2", "--warmup", "1",
               "--json", str(out)]
    # 8 heads: the default setups include model:8 (the suite's TINY, 4 heads, would not).
    for key, value in dict(hidden_dim=32, num_layers=1, num_heads=8, mlp_dim=64, patch_size=8,
                           num_classes=10).items():
        command += ["--model", f"{key}={value}"]
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_backend_optimization_level=0 "
               "--xla_force_host_platform_device_count=8")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["setup"]: row for row in json.loads(out.read_text())["rows"]}
    # setup: (devices, data x model mesh, global batch = 2 per data replica)
    assert {name: (r["devices"], r["mesh"], r["global_batch"]) for name, r in rows.items()} == {
        "none": (1, [1, 1], 2), "data": (8, [8, 1], 16), "model:2": (8, [4, 2], 8),
        "model:4": (8, [2, 4], 4), "model:8": (8, [1, 8], 2),
    }
    none = rows["none"]["images_per_s"]
    for name, r in rows.items():
        assert r["step_ms"] > 0 and r["images_per_s"] > 0 and r["final_loss"] > 0, r
        assert r["efficiency"] == pytest.approx(r["images_per_s"] / (r["mesh"][0] * none))
        assert r["peak_mib"] is None  # JAX reports no allocator peak on a CPU
        assert r["params"] == rows["none"]["params"]
        assert (r["sharded_variables"] > 0) == name.startswith("model:"), r
    assert "| model:4 | 8 | 2 x 4 | 4 |" in proc.stdout
    assert "| none | 1 | 1 x 1 | 2 |" in proc.stdout and "| 1.00 | n/a |" in proc.stdout


# keras-hub DINOv3 weight path -> keras_vit's, by substring
_HUB_DINOV3_TO_VIT = [
    ("embeddings/patch_embeddings/", "patch_embedding/"),
    ("embeddings/cls_token", "class_token/token"),
    ("embeddings/register_tokens", "register_tokens/tokens"),
    ("encoder/layers_", "encoder_block_"), ("layer_scale1/lambda1", "attention_scale"),
    ("layer_scale2/lambda1", "mlp_scale"), ("norm1", "attention_norm"), ("norm2", "mlp_norm"),
    ("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("o_proj", "attention_output"),
    ("mlp/up_proj", "mlp_dense_1"), ("mlp/down_proj", "mlp_dense_2"),
    ("layernorm/", "encoder_norm/"),
]


@pytest.mark.skipif(not HAS_KERAS_HUB, reason="keras-hub is not installed (requirements-bench.txt)")
def test_dinov3_models_compute_the_same_function():
    """With keras-hub's weights copied over, keras_vit's DINOv3 (RoPE, registers, layer
    scale, no q/k/v biases) gives the same class-token features as keras-hub's backbone."""
    import numpy as np

    ours, hub, unused, unset, x = _same_weights("dinov3_tiny", _HUB_DINOV3_TO_VIT)
    assert not unset and unused == ["embeddings/mask_token"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)),
                               keras.ops.convert_to_numpy(hub(x)), atol=1e-5)
