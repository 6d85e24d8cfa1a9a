"""keras_vit.config: each switch's setter, context manager, environment variable and checks,
and the device probes."""

import os
import re
import subprocess
import sys
import textwrap

import keras
import pytest

from keras_vit import attention, config
from keras_vit import layers as vit_layers

SWITCHES = {
    "attention implementation": (
        config.set_attention_implementation,
        config.get_attention_implementation,
        config.attention_implementation,
        config.ATTENTION_IMPLEMENTATIONS,
    ),
    "gradient materialization": (
        config.set_gradient_materialization,
        config.get_gradient_materialization,
        config.gradient_materialization,
        config.GRADIENT_MATERIALIZATIONS,
    ),
}


@pytest.fixture(params=SWITCHES)
def switch(request):
    """(name, set, get, context manager, valid values) of one switch, restored afterwards."""
    set_value, get_value, scoped, values = SWITCHES[request.param]
    saved = get_value()
    yield request.param, set_value, get_value, scoped, values
    set_value(saved)


def test_every_value_can_be_set(switch):
    _, set_value, get_value, _, values = switch
    for value in values:
        set_value(value)
        assert get_value() == value


def test_bad_values_name_the_valid_ones(switch):
    name, set_value, get_value, scoped, values = switch
    before = get_value()
    message = f"{name} must be one of {values}, got 'flash'"
    with pytest.raises(ValueError, match=re.escape(message)):
        set_value("flash")
    with pytest.raises(ValueError, match=name):
        with scoped(None):
            pass
    assert get_value() == before


def test_context_manager_restores_the_value(switch):
    _, set_value, get_value, scoped, values = switch
    set_value(values[1])
    with scoped(values[2]):
        assert get_value() == values[2]
        with scoped(values[0]):
            assert get_value() == values[0]
        assert get_value() == values[2]
    assert get_value() == values[1]
    with pytest.raises(RuntimeError, match="inside"):
        with scoped(values[0]):
            raise RuntimeError("inside")
    assert get_value() == values[1]

    @scoped(values[2])
    def read():
        return get_value()

    assert read() == values[2] and get_value() == values[1]


def test_the_switch_reaches_the_layers():
    layer = attention.ViTAttention(num_heads=2, key_dim=4)
    with config.attention_implementation("fast"):
        assert layer.resolved_implementation(training=False) == "fast"
    layer.implementation = "plain"  # a layer's own setting wins
    with config.attention_implementation("head_major"):
        assert layer.resolved_implementation(training=False) == "plain"
    with config.gradient_materialization("off"):
        assert not vit_layers.materializes_gradient("float32")


def test_environment_variables_are_read_at_import():
    """One subprocess for every variable: set before the import, ignored after it, a bad
    value fails when the switch is read, and "auto" without them."""
    script = textwrap.dedent("""
        import importlib, os
        from keras_vit import config
        print(config.get_attention_implementation(), config.get_gradient_materialization())
        os.environ.update(KERAS_VIT_ATTENTION="flash", KERAS_VIT_MATERIALIZE_GRADIENT="always")
        print(config.get_attention_implementation(), config.get_gradient_materialization())
        importlib.reload(config)
        for get in (config.get_attention_implementation, config.get_gradient_materialization):
            try:
                get()
            except ValueError as e:
                print(e)
        del os.environ["KERAS_VIT_ATTENTION"], os.environ["KERAS_VIT_MATERIALIZE_GRADIENT"]
        importlib.reload(config)
        print(config.get_attention_implementation(), config.get_gradient_materialization())
    """)
    env = dict(os.environ, KERAS_VIT_ATTENTION="plain", KERAS_VIT_MATERIALIZE_GRADIENT="off")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "plain off",
        "plain off",
        "attention implementation must be one of ('auto', 'plain', 'head_major', 'fast'), "
        "got 'flash'.",
        "gradient materialization must be one of ('auto', 'on', 'off'), got 'always'.",
        "auto auto",
    ]


@pytest.mark.parametrize("bad", [0, -8, 2.5, "8", True, None])
def test_check_pad_multiple_rejects_a_bad_value(bad):
    with pytest.raises(ValueError, match="pad_multiple must be a positive integer"):
        config.check_pad_multiple(bad)


def test_device_probes_match_the_backend():
    backend = keras.backend.backend()
    assert not (config.on_cpu() and config.on_jax_gpu())
    if backend == "jax":
        import jax

        platform = jax.devices()[0].platform
        assert config.on_cpu() is (platform == "cpu")
        assert config.on_jax_gpu() is (platform == "gpu")
    else:
        assert config.on_jax_gpu() is False
    if backend == "torch":
        assert config.on_cpu() is False
