"""The private APIs of Keras and LiteRT that keras_vit relies on, each behind one function.

Each has no public equivalent (the comment says why it is needed), and
tests/test_private_apis.py checks that it still behaves as used here, so a Keras or LiteRT
release that changes it fails that test by name instead of breaking a feature quietly.
"""


def flatten_layers(model):
    """Every layer inside `model`, recursively, `model` first.

    Keras has no public recursive layer iterator (`Model.layers` lists only the direct
    children, not the sublayers of a layer such as a block's attention).
    """
    return list(model._flatten_layers(include_self=True, recursive=True))


def keras_mask(tensor):
    """The Keras mask attached to `tensor`, or None: what `MultiHeadAttention.call` reads
    to mask padded tokens. Keras 3 stores it through a private backend helper."""
    if tensor is None:
        return None
    from keras.src.backend import get_keras_mask

    return get_keras_mask(tensor)


def uses_weight_decay(optimizer, variable):
    """Whether `optimizer` decays `variable`: the rule `exclude_from_weight_decay` sets
    up (names and variables), which Keras applies through a private method only."""
    return optimizer._use_weight_decay(variable)


def tflite_op_names(path):
    """The names of the ops in a TFLite file (custom ops by their custom name). LiteRT's
    interpreter lists them only through a private method; the public analyzer prints text."""
    import os

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(path))
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def tflite_nodes(interpreter):
    """[(index, op name, input tensor ids, output tensor ids)] for every node of a LiteRT
    interpreter's main subgraph: after `allocate_tensors`, the file's ops and then one
    "DELEGATE" node per partition a delegate took (its inputs and outputs are the
    partition's). LiteRT exposes nodes only through a private method."""
    return [(op["index"], op["op_name"], [int(t) for t in op["inputs"]],
             [int(t) for t in op["outputs"]]) for op in interpreter._get_ops_details()]


def stored_value(variable):
    """The value `variable` stores, or None while Keras's JAX trainer has detached it for a
    `fit`, `evaluate` or `predict` (the public `value` then fails: "'NoneType' object is not
    callable"). Keras has no public way to tell a detached variable."""
    return variable._value


def jax_trainer_state(model):
    """The values Keras's JAX trainer holds for `model`'s variables after the last step it
    completed, until the call ends (the public `model.jax_state_sync()` sets them back on the
    variables), or None. Keras keeps them in a private attribute only."""
    return getattr(model, "_jax_state", None)


def forget_jax_trainer_state(model):
    """Leaves `model`'s JAX trainer as a call that finished leaves it: no values held apart
    from the variables' own (a later `jax_state_sync()` must not set stale ones back)."""
    model._jax_state, model._jax_state_synced = None, True
