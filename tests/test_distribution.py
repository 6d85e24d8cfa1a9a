"""Training on many devices: `keras_vit.distribution`'s layout map and mesh checks (here, on
every backend) and training on simulated CPU devices (tests/distribution_worker.py, in
subprocesses: the JAX ones under KERAS_BACKEND=jax only, the TensorFlow one under
KERAS_BACKEND=tensorflow only, each once per session, so `make test` pays for them once),
and the recipes' `--distribute` (tests/recipe_distribution_worker.py, the same way).
"""

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import distribution_worker as worker
from keras_vit import ViT, distribution, presets
from recipes import feeds
from tiny import TINY

WORKER = Path(__file__).with_name("distribution_worker.py")
RECIPE_WORKER = Path(__file__).with_name("recipe_distribution_worker.py")
BACKEND = keras.backend.backend()

# Megatron-style: {variable of an encoder block or of the MAP head: axes}; all else whole.
MEGATRON = {
    **{f"attention/{p}/kernel": (None, "model", None) for p in ("query", "key", "value")},
    **{f"attention/{p}/bias": ("model", None) for p in ("query", "key", "value")},
    "attention/attention_output/kernel": ("model", None, None),
    **{f"{p}/kernel": (None, "model") for p in ("mlp_dense_1", "mlp_gate")},  # SwiGLU: up, gate
    **{f"{p}/bias": ("model",) for p in ("mlp_dense_1", "mlp_gate")},
    "mlp_dense_2/kernel": ("model", None),
}
WITHOUT_GATE = [name for name in MEGATRON if not name.startswith("mlp_gate")]  # a plain MLP

# Every option that adds, removes or renames variables, and every preset, at tiny sizes.
OPTIONS = {
    "token": {},
    "gap_registers_layer_scale_pre_norm_pre_logits": dict(
        pooling="gap", pooled_norm=True, num_register_tokens=2, layer_scale_init=0.1,
        pre_norm=True, representation_size=16),
    "map": dict(pooling="map"),
    "probe_without_key_bias": dict(pooling="probe", key_bias=False),
    "distillation": dict(distillation_token=True),
    "distillation_no_head": dict(distillation_token=True, distillation_head=False),
    "token_without_position_registers": dict(class_token_position=False, num_register_tokens=1),
    "no_top": dict(include_top=False),
    "swiglu_rms_norm_no_biases": dict(
        norm_type="rms_norm", mlp_type="swiglu", mlp_inner_norm=True, query_bias=False,
        output_bias=False, mlp_bias=False, patch_bias=False, patch_norm=True),
}
SMALL = dict(image_size=32, patch_size=8, hidden_dim=32, num_heads=4, mlp_dim=64, num_layers=2)


def tiny_configs():
    """OPTIONS on TINY, and each preset at SMALL sizes unless another config is the same."""
    configs = {name: {**TINY, **options} for name, options in OPTIONS.items()}
    for name, preset in presets.PRESETS.items():
        config = {**TINY, **preset["config"], **SMALL}
        if config not in configs.values():
            configs[f"preset_{name}"] = config
    return configs


CONFIGS = tiny_configs()


def mesh(shape=(2, 4), axis_names=("batch", "model")):
    """A mesh of named (not real) devices: enough for layouts and checks on any backend."""
    devices = [f"cpu:{i}" for i in range(math.prod(shape))]
    return keras.distribution.DeviceMesh(shape, axis_names, devices)


def megatron_axes(path, rank):
    owner, _, name = path.partition("/")
    if re.fullmatch(r"encoder_block_\d+|pooling", owner) and name in MEGATRON:
        return MEGATRON[name]
    return (None,) * rank


@pytest.mark.parametrize("name", CONFIGS)
def test_every_variable_is_sharded_megatron_style_or_replicated_by_one_rule(name):
    model = ViT(**CONFIGS[name])
    layouts = ViT.get_layout_map(mesh())
    rules = list(layouts) + list(distribution.REPLICATED_VARIABLES)
    for variable in model.variables:
        matching = [rule for rule in rules if re.fullmatch(rule, variable.path)]
        assert len(matching) == 1, (variable.path, matching)
        layout = layouts[variable.path]
        axes = layout.axes if layout else (None,) * len(variable.shape)
        assert axes == megatron_axes(variable.path, len(variable.shape)), variable.path
        for size, axis in zip(variable.shape, axes):
            assert axis is None or size % 4 == 0, (variable.path, variable.shape)


def test_layout_map_finds_a_vit_nested_in_another_model():
    layouts = ViT.get_layout_map(mesh())
    assert layouts["classifier/vit/encoder_block_11/mlp_dense_2/kernel"].axes == ("model", None)
    assert layouts["classifier/vit/encoder_block_11/mlp_dense_2/bias"] is None


def test_layout_map_uses_the_axis_names_it_is_given():
    layouts = ViT.get_layout_map(mesh(axis_names=("data", "tensor")), "tensor", "data")
    assert layouts["encoder_block_0/attention/query/kernel"].axes == (None, "tensor", None)


@pytest.mark.parametrize("make, message", [
    pytest.param(lambda: ViT.get_layout_map(mesh(axis_names=("batch", "tensor"))),
                 r"no axis named 'model': its axes are \('batch', 'tensor'\)", id="model_axis"),
    pytest.param(lambda: ViT.get_layout_map(mesh(), data_parallel_dim_name="data"),
                 r"no axis named 'data'", id="data_axis"),
    pytest.param(lambda: ViT.get_layout_map([2, 4]),
                 r"must be a keras.distribution.DeviceMesh, got list", id="not_a_mesh"),
    pytest.param(lambda: ViT.get_layout_map(mesh(), config=presets.get_preset("ti16")["config"]),
                 r"num_heads=3 is not divisible by the 4 devices of the 'model' axis", id="heads"),
])
def test_layout_map_refuses_a_mesh_it_cannot_use(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("config, shape, global_batch, message", [
    ({"num_heads": 3}, (2, 4), None,
     r"shape \(2, 4\) and axes \('batch', 'model'\): num_heads=3 is not divisible by the 4 "
     r"devices of the 'model' axis\."),
    ({"num_heads": 4, "mlp_dim": 66}, (2, 4), None,
     r"mlp_dim=66 is not divisible by the 4 devices of the 'model' axis\."),
    ({"num_heads": 4, "mlp_dim": 64}, (4, 2), 6,
     r"the global batch 6 is not divisible by the 4 devices of the 'batch' axis\."),
    ({"num_heads": 6, "mlp_dim": 90}, (1, 4), 8,
     r"num_heads=6 is not divisible .*; mlp_dim=90 is not divisible .*\."),
    (None, (8,), 12, r"the global batch 12 is not divisible by the 8 devices of the 'batch' axis"),
])
def test_check_mesh_names_the_numbers_that_clash(config, shape, global_batch, message):
    axis_names = ("batch", "model")[:len(shape)]
    with pytest.raises(ValueError, match=message):
        distribution.check_mesh(config, mesh(shape, axis_names), global_batch)


def test_check_mesh_accepts_what_divides():
    distribution.check_mesh(ViT(**TINY), mesh(), global_batch=8)
    distribution.check_mesh(presets.get_preset("b16")["config"], mesh((1, 4)), global_batch=1)
    distribution.check_mesh({}, mesh((8,), ("batch",)), global_batch=16)  # defaults: ViT-B
    with pytest.raises(ValueError, match="no axis named 'batch'"):
        distribution.check_mesh({}, mesh((8,), ("data",)), global_batch=16)


def test_model_parallel_and_data_parallel_check_their_inputs():
    model_parallel = distribution.model_parallel(TINY, mesh(), global_batch=8)
    assert isinstance(model_parallel, keras.distribution.ModelParallel)
    assert model_parallel.batch_dim_name == "batch"
    with pytest.raises(ValueError, match="global batch 5 is not divisible by the 2 devices"):
        distribution.model_parallel(TINY, mesh(), global_batch=5)
    devices = [f"cpu:{i}" for i in range(4)]
    assert distribution.data_parallel(8, devices).device_mesh.shape == (4,)
    with pytest.raises(ValueError, match=r"shape \(4,\) and axes \('batch',\): the global batch 6"):
        distribution.data_parallel(6, devices)


B16 = presets.get_preset("b16")["config"]
DEVICES = [f"cpu:{i}" for i in range(4)]


@pytest.mark.parametrize("error, message, call", [
    (ValueError, r"global_batch must be an integer >= 1, got -8\.",
     lambda: distribution.check_mesh(TINY, mesh(), global_batch=-8)),
    (ValueError, r"global_batch must be an integer >= 1, got 0\.",
     lambda: distribution.check_mesh(None, mesh((8,), ("batch",)), global_batch=0)),
    (TypeError, r"global_batch must be an integer >= 1, got 8.0 \(float\)",
     lambda: distribution.check_mesh(TINY, mesh(), global_batch=8.0)),
    (TypeError, r"global_batch must be an integer >= 1, got True \(bool\)",
     lambda: distribution.model_parallel(TINY, mesh(), global_batch=True)),
    (TypeError, r"num_heads must be an integer >= 1, got '12' \(str\)",
     lambda: distribution.check_mesh({"num_heads": "12"}, mesh())),
    (ValueError, r"mlp_dim must be an integer >= 1, got 0\.",
     lambda: distribution.layout_map(mesh(), config={"num_heads": 4, "mlp_dim": 0})),
    (TypeError, r"Expected a ViT, a ViTConfig or a ViT config dict, got list",
     lambda: distribution.check_mesh([4, 64], mesh())),
    (ValueError, r"device_mesh must be a keras.distribution.DeviceMesh, got tuple",
     lambda: distribution.check_mesh(TINY, (2, 4), global_batch=8)),
    (TypeError, r"global_batch must be an integer >= 1, got 8.0 \(float\)",
     lambda: distribution.data_parallel(8.0, DEVICES)),
    (ValueError, r"global_batch must be an integer >= 1, got -8\.",
     lambda: distribution.data_parallel(-8, DEVICES)),
    (ValueError, r"batch_size must be an integer >= 1, got -8\.",
     lambda: distribution.for_training("none", TINY, batch_size=-8)),
    (TypeError, r"batch_size must be an integer >= 1, got 8.0 \(float\)",
     lambda: distribution.for_training("none", TINY, batch_size=8.0)),
    (ValueError, r"per_device_batch_size must be an integer >= 1, got 0\.",
     lambda: distribution.for_training("auto", TINY, per_device_batch_size=0)),
    (TypeError, r"model_devices must be an integer >= 1, got '2' \(str\)",
     lambda: distribution.for_training("model", TINY, batch_size=8, model_devices="2")),
    (TypeError, r"num_heads must be an integer >= 1, got '12' \(str\)",
     lambda: distribution.for_training("auto", {**TINY, "num_heads": "12"}, batch_size=8)),
    (TypeError, r"num_devices must be an integer >= 1, got 8.0 \(float\)",
     lambda: distribution.model_axes(B16, 8.0)),
    (ValueError, r"device_memory must be an integer >= 0, got -1\.",
     lambda: distribution.model_devices_for_memory(B16, 8, -1)),
    (TypeError, r"num_layers must be an integer >= 1, got 12.0 \(float\)",
     lambda: distribution.model_devices_for_memory({**B16, "num_layers": 12.0}, 8, 2 ** 30)),
], ids=["negative_batch", "zero_batch", "float_batch", "bool_batch", "str_heads", "zero_mlp",
        "list_config", "tuple_mesh", "data_parallel_float", "data_parallel_negative",
        "for_training_negative", "for_training_float", "per_device_zero", "str_model_devices",
        "for_training_str_heads", "float_devices", "negative_memory", "float_layers"])
def test_distribution_helpers_check_types_and_ranges(error, message, call):
    with pytest.raises(error, match=message):
        call()


# ------------------------------------------------------------ training on simulated devices


def run_worker(*args, backend, devices=None, worker=WORKER):
    """Starts the worker; `devices`: the number of simulated JAX CPU devices."""
    # Without LLVM's optimisations XLA compiles twice as fast; the workers run 3 steps.
    flags = "--xla_backend_optimization_level=0"
    if devices:
        flags += f" --xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, KERAS_BACKEND=backend, XLA_FLAGS=flags)
    return subprocess.Popen([sys.executable, str(worker), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(process, timeout=300):
    """The worker's JSON results, or the end of its stderr if it failed."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    if process.returncode:
        return f"exit status {process.returncode}: {stderr[-3000:]}"
    return json.loads(stdout.strip().splitlines()[-1])


def results(result):
    assert isinstance(result, dict), result  # else the worker's error
    return result


def only_under(backend):
    if BACKEND != backend:
        pytest.skip(f"runs its subprocesses under KERAS_BACKEND={backend} only, once")


@pytest.fixture(scope="session")
def jax_runs(tmp_path_factory):
    """Side by side: one process of 8 simulated devices (one device, DataParallel,
    ModelParallel over (2, 4)), and two processes of 4 connected on 127.0.0.1."""
    only_under("jax")
    out = tmp_path_factory.mktemp("distribution_jax")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = [run_worker("jax", out, backend="jax", devices=8)]
    processes += [run_worker("jax_process", out, port, i, backend="jax", devices=4)
                  for i in range(2)]
    single, *pair = [outcome(p) for p in processes]
    return {"out": out, "single": single, "pair": pair}


@pytest.fixture
def jax_results(jax_runs):
    return results(jax_runs["single"])


@pytest.mark.slow  # the JAX workers take 60 to 110 s on 2 shared cores
@pytest.mark.parametrize("strategy", ["data_parallel", "model_parallel"])
@pytest.mark.parametrize("implementation", worker.IMPLEMENTATIONS)
def test_distributed_training_agrees_with_one_device(jax_results, implementation, strategy):
    assert jax_results["devices"] == 8
    worker.assert_agrees(jax_results["agreement"][f"{implementation}/{strategy}"])


def assert_sharded(specs, model_parallel):
    """Each variable and its momentum sharded as MEGATRON says (replicated without
    model parallelism)."""
    assert specs["variables"] and specs["momentums"]
    for kind in ("variables", "momentums"):
        for path, spec in specs[kind].items():
            expected = megatron_axes(path, len(spec)) if model_parallel else (None,) * len(spec)
            assert tuple(spec) == expected, (kind, path, spec)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["data_parallel", "model_parallel"])
@pytest.mark.parametrize("implementation", worker.IMPLEMENTATIONS)
def test_variables_are_sharded_as_the_layout_says(jax_results, implementation, strategy):
    specs = jax_results["specs"][f"{implementation}/{strategy}"]
    assert_sharded(specs, strategy == "model_parallel")
    sharded = sum("model" in spec for spec in specs["variables"].values())
    assert sharded == (3 * len(WITHOUT_GATE) if strategy == "model_parallel" else 0)  # 2 blocks, MAP


@pytest.mark.slow
def test_two_processes_agree_with_one_device(jax_runs, jax_results):
    pair, out = [results(r) for r in jax_runs["pair"]], jax_runs["out"]
    assert [r["local_devices"] for r in pair] == [4, 4]
    assert [r["devices"] for r in pair] == [8, 8]
    initial = dict(np.load(out / "initial.npz"))
    one_device = dict(np.load(out / "one_device.npz"))
    for i, result in enumerate(pair):
        assert_sharded(result["specs"], model_parallel=True)
        worker.assert_agrees(worker.agreement(dict(np.load(out / f"process_{i}.npz")), one_device,
                                       initial))


@pytest.fixture(scope="session")
def tensorflow_results(tmp_path_factory):
    """tf.distribute.MirroredStrategy over 2 logical CPUs, and one device."""
    only_under("tensorflow")
    out = tmp_path_factory.mktemp("distribution_tensorflow")
    return results(outcome(run_worker("tensorflow", out, backend="tensorflow")))


def test_mirrored_strategy_agrees_with_one_device(tensorflow_results):
    assert tensorflow_results["replicas"] == 2
    # ViT.compile turns XLA on for one CPU and leaves it off under a strategy, as Keras does.
    assert tensorflow_results["jit_compile"] == {"one_device": True, "mirrored": False}
    worker.assert_agrees(tensorflow_results["agreement"])


def test_model_built_in_a_strategy_scope_trains_when_compiled_outside_it(tensorflow_results):
    """ViT.compile checks the model's own strategy too: XLA would not reach the other
    replica's variables."""
    assert tensorflow_results["compiled_outside_scope"] == {"jit_compile": False, "error": None}


# ------------------------------------------------------------ the recipes' --distribute


@pytest.mark.parametrize("arguments, message", [
    (dict(kind="pipeline", batch_size=8), r"Unknown distribution 'pipeline'; use one of none, "),
    (dict(kind="data", batch_size=8, per_device_batch_size=2), r"not both"),
    (dict(kind="data"), r"not both"),
    (dict(kind="data", batch_size=8, model_devices=2),
     r"model_devices=2 needs the 'model' or 'auto' distribution, not 'data'"),
])
def test_for_training_refuses_what_it_cannot_do(arguments, message):
    with pytest.raises(ValueError, match=message):
        distribution.for_training(model_config=TINY, **arguments)


def test_for_training_on_this_backend():
    """One device here: "none" and "auto" use it alone; "data" and "model" need what each
    backend has (JAX: the devices, TensorFlow: no model parallelism, PyTorch: neither)."""
    for kind in ("none", "auto"):
        setup = distribution.for_training(kind, TINY, per_device_batch_size=4)
        assert (setup.kind, setup.strategy, setup.global_batch) == ("none", None, 4)
    data = {"jax": None, "tensorflow": None, "torch": "PyTorch use DistributedDataParallel"}
    model = {"jax": r"2 model-parallel devices do not divide the 1 devices",
             "tensorflow": r"Model parallelism needs the JAX backend",
             "torch": r"torch backend has no keras.distribution"}
    if data[BACKEND]:
        with pytest.raises(ValueError, match=data[BACKEND]):
            distribution.for_training("data", TINY, batch_size=8)
    else:
        setup = distribution.for_training("data", TINY, per_device_batch_size=8)
        assert (setup.kind, setup.global_batch, setup.data_devices) == ("data", 8, 1)
    with pytest.raises(ValueError, match=model[BACKEND]):
        distribution.for_training("model", TINY, batch_size=8, model_devices=2)


@pytest.mark.parametrize("memory, model_devices", [
    (None, 1),              # unknown (a CPU): data parallelism
    (16 * 2 ** 30, 1),      # ViT-B/16's blocks: 85M parameters, 1.36 GB of training state
    (2 * 2 ** 30, 2),       # half of 2 GiB: 1.07 GB >= 1.36 GB / 2
    (2 ** 30, 4),           # 0.54 GB >= 1.36 GB / 4
    (2 ** 20, 4),           # nothing fits: the largest axis that divides 8 and 12 heads
])
def test_auto_splits_the_blocks_that_do_not_fit_in_half_a_device(memory, model_devices):
    config = presets.get_preset("b16")["config"]
    assert distribution.model_devices_for_memory(config, 8, memory) == model_devices


def test_a_vit_built_under_a_model_parallel_layout_checks_the_mesh():
    layouts = ViT.get_layout_map(mesh())
    strategy = keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="batch")
    with strategy.scope(), pytest.raises(
            ValueError, match=r"num_heads=3 is not divisible by the 4 devices of the 'model'"):
        ViT(**{**TINY, "num_heads": 3, "hidden_dim": 48})


@pytest.fixture(scope="session")
def recipe_results(tmp_path_factory):
    """The recipes with --distribute (tests/recipe_distribution_worker.py): under JAX on 8
    simulated devices, under TensorFlow on 2 logical CPUs."""
    if BACKEND == "torch":
        pytest.skip("Keras's torch backend has no keras.distribution")
    out = tmp_path_factory.mktemp(f"recipes_distributed_{BACKEND}")
    return results(outcome(run_worker(BACKEND, out, backend=BACKEND, worker=RECIPE_WORKER,
                                      devices=8 if BACKEND == "jax" else None)))


def assert_resumed(run, distribution_summary, devices):
    assert run["interrupted"] and run["distribution"] == distribution_summary
    assert run["history_epochs"] == ["0", "1"] and run["epochs"] == 2
    assert run["tensorboard"] == ["train", "validation"]
    steps = 64 // distribution_summary["global_batch"]  # 64 training images
    assert run["start"] == {"epoch": 1, "step": steps, "devices": devices,
                            "sharded": distribution_summary["sharded_variables"]}


@pytest.mark.slow  # the JAX worker takes about 45 s
def test_recipe_resumes_a_model_parallel_run_with_its_weights_still_sharded(recipe_results):
    only_under("jax")
    assert recipe_results["devices"] == 8
    assert_resumed(recipe_results["model_resumed"], {
        "kind": "model", "global_batch": 16, "data_devices": 4, "model_devices": 2,
        "per_replica_batch": 4, "sharded_variables": len(WITHOUT_GATE)}, devices=8)  # one block


@pytest.mark.slow
def test_recipe_auto_on_cpus_is_data_parallel_and_keeps_the_time_budget(recipe_results):
    only_under("jax")
    run = recipe_results["auto_budget"]
    assert run["distribution"] == {"kind": "data", "global_batch": 16, "data_devices": 8,
                                   "model_devices": 1, "per_replica_batch": 2,
                                   "sharded_variables": 0}
    assert run["start"] == {"epoch": 0, "step": 0, "sharded": 0, "devices": 8}
    assert run["epochs"] == 2 and run["history_epochs"] == ["0", "1"]  # 3 planned: shortened


@pytest.mark.slow
def test_pretrained_weights_load_into_a_sharded_model(recipe_results):
    only_under("jax")
    run = recipe_results["pretrained"]
    assert run["weights_max_abs"] == 0.0 and run["logits_max_abs"] < 1e-5
    blocks = [f"encoder_block_{i}/{name}" for i in range(TINY["num_layers"]) for name in WITHOUT_GATE]
    assert run["sharded"] == sorted(blocks)
    assert run["ti16_error"] == ("No model axis above 1 divides the 8 devices, num_heads=3 "
                                 "and mlp_dim=768: use the 'data' distribution, or give "
                                 "model_devices.")
    assert run["finetune"] == {"steps": 2, "distribution": {
        "kind": "model", "global_batch": 8, "data_devices": 4, "model_devices": 2,
        "per_replica_batch": 2, "sharded_variables": len(blocks)}}


def test_recipe_resumes_a_mirrored_strategy_run(recipe_results):
    only_under("tensorflow")
    assert_resumed(recipe_results["data_resumed"], {
        "kind": "data", "global_batch": 16, "data_devices": 2, "model_devices": 1,
        "per_replica_batch": 8, "sharded_variables": 0}, devices=2)


def test_recipe_refuses_a_global_batch_the_replicas_do_not_divide(recipe_results):
    devices, batch = {"jax": (8, 12), "tensorflow": (2, 15)}[BACKEND]
    run = recipe_results["refused"]
    assert re.search(f"global batch {batch} is not divisible by the {devices} ", run["error"])
    assert run["wrote"] == []  # refused before the output folder was made


def test_eval_batches_split_evenly_over_the_replicas():
    assert feeds.eval_batch_size(40, 1000, 8) == 40
    assert feeds.eval_batch_size(10_000, 1000, 8) == 1000
    assert feeds.eval_batch_size(10_000, 1000, 16) == 400
    assert feeds.eval_batch_size(250, 1000) == 250
    with pytest.raises(ValueError, match="The 250 evaluation examples cannot be split into "
                                         "equal batches over the 8 data-parallel replicas"):
        feeds.eval_batch_size(250, 1000, 8)
