"""When keras_vit compiles with XLA: the one rule that `ViT.compile` and the recipes share."""

import keras

from keras_vit import config


def resolve_jit_compile(jit_compile="auto", model=None, run_eagerly=False):
    """The `jit_compile` to give `keras.Model.compile`: True or False for "auto", else
    `jit_compile` unchanged.

    "auto" means XLA (True), also for TensorFlow on a CPU where Keras's own "auto" turns it
    off: every ViT layer compiles with XLA, and it trains and predicts faster there (see
    benchmarks/RESULTS.md). It means False when:

    * the backend is torch (True would mean `torch.compile`: slow to start, and no faster
      for small ViTs);
    * `run_eagerly` is set;
    * a tf.distribute strategy is in scope, or `model` was built in one (TensorFlow's XLA
      cannot reach the other replicas' variables).

    Keras may still turn True off for a model with a layer that does not support XLA.
    """
    if jit_compile != "auto":
        return jit_compile
    return not (
        keras.backend.backend() == "torch"
        or run_eagerly
        or config.in_tf_distribution_strategy()
        or getattr(model, "_distribute_strategy", None) is not None  # built in a scope
    )
