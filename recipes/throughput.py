"""Training throughput (images/s) of the Fashion-MNIST recipe's models on this machine.

    KERAS_BACKEND=jax python -m recipes.throughput [--seconds 15] [--batch-size 128]

Times `train_on_batch` with the recipe's optimiser and loss (jit_compile as
`keras_vit.jit.resolve_jit_compile` resolves "auto": on, except on torch where it means
torch.compile), after a warm-up that pays for compilation, on random 28x28x1 data.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras
import numpy as np

from keras_vit.jit import resolve_jit_compile
from recipes import fashion_mnist, loop, options

MODELS = {
    "demo (p7 w64 L4)": fashion_mnist.DEMO.model,
    "p4 w128 L6": dict(fashion_mnist.CONFIG.model, hidden_dim=128, mlp_dim=256),
    "full (p4 w256 L6)": fashion_mnist.CONFIG.model,
}


def measure(model_config, batch_size, seconds, jit):
    config = dataclasses.replace(fashion_mnist.CONFIG, model=model_config)
    model = loop.build_model(config)
    optimizer, _ = loop.build_optimizer(config, 100)
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, 28, 28, 1)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch_size)]
    for _ in range(3):
        model.train_on_batch(x, y)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.train_on_batch(x, y)
        steps += 1
    return steps * batch_size / (time.perf_counter() - start), model.count_params()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=options.positive_float, default=15)
    p.add_argument("--batch-size", type=options.positive_int, default=128)
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args(argv)
    backend = keras.backend.backend()
    jit = resolve_jit_compile()
    for name in args.models.split(","):
        rate, params = measure(MODELS[name], args.batch_size, args.seconds, jit)
        print(f"| {backend} | {name} | {params:,} | {args.batch_size} | {jit} | {rate:,.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
