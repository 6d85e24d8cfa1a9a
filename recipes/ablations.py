"""Recipe: the ViT paper's design ablations, small, on Fashion-MNIST.

    python -m recipes ablations                      # the CPU grid (56 min on our 2 cores)
    python -m recipes ablations --schedule full      # the GPU-sized grid
    python -m recipes ablations --cells patch_2 patch_7 --seeds 0 1 2

Trains every cell of `CELLS` (one design change from `baseline`) once per seed through
the fashion_mnist recipe's `fit` pipeline, each run in its own folder under `--runs-dir`
(`CELL/seed_S`). A run with a `record.json` is done and skipped; an interrupted one
resumes from its last finished epoch. Then `recipes.ablation_report` gathers the records
into `--output-dir`: results.json, README.md (tables, claims), accuracy_vs_cost.png,
the position-embedding similarity panels and attention maps with and without registers.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python recipes/ablations.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras
import numpy as np

from keras_vit import data as vit_data
from keras_vit import training
from keras_vit.architecture import ViTConfig
from keras_vit.cost import forward_flops
from keras_vit.insight import intermediate_model
from recipes import ablation_report, feeds, loop, options, reports, run_folder
from recipes.recipe import REPO_ROOT, RecipeConfig

# The baseline: a learned 1-D position embedding, a class token, 4x4-pixel patches (49
# tokens), 4 blocks of width 64. Each cell changes one thing ("model" entries and/or the
# learning rate as a multiple of the schedule's).
BASE_MODEL = dict(image_size=28, num_channels=1, num_classes=10, patch_size=4, hidden_dim=64,
                  num_layers=4, num_heads=4, mlp_dim=128)
CELLS = {
    "baseline": {},
    "pos_none": {"model": {"position_embedding": "none"}},
    "pos_learned_2d": {"model": {"position_embedding": "learned_2d"}},
    "pos_sincos_2d": {"model": {"position_embedding": "sincos_2d"}},
    "pos_rope_2d": {"model": {"position_embedding": "none", "rope": "axial"}},
    "lr_high": {"lr_factor": 3.0},
    "pool_gap": {"model": {"pooling": "gap"}},
    "pool_gap_lr_high": {"model": {"pooling": "gap"}, "lr_factor": 3.0},
    "sincos_gap": {"model": {"position_embedding": "sincos_2d", "pooling": "gap"}},
    "patch_2": {"model": {"patch_size": 2}},
    "patch_7": {"model": {"patch_size": 7}},
    # About the baseline's FLOPs: twice the depth at 3/4 of the width, half at 3/2.
    "deep_narrow": {"model": {"num_layers": 8, "hidden_dim": 48, "mlp_dim": 96}},
    "shallow_wide": {"model": {"num_layers": 2, "hidden_dim": 96, "mlp_dim": 192}},
    "registers_4": {"model": {"num_register_tokens": 4}},
}

# "cpu": 10,000 training images, 8 epochs, every test image; "full": the whole training
# set and the fashion_mnist recipe's length (for a GPU).
CPU = RecipeConfig(
    name="ablations", model=BASE_MODEL, batch_size=128, epochs=8, learning_rate=1e-3,
    end_learning_rate=1e-5, weight_decay=0.05, global_clipnorm=1.0, warmup_epochs=1,
    label_smoothing=0.1, augment=vit_data.AugmentConfig(translate=0.1, flip=True),
    eval_batch_size=1000, validation_freq=1000, class_names=vit_data.FASHION_MNIST_CLASSES)
FULL = dataclasses.replace(CPU, batch_size=512, epochs=100, warmup_epochs=5,
                           augment=vit_data.AugmentConfig(translate=0.1, flip=True,
                                                          random_erasing=0.25))
SCHEDULES = {"cpu": (CPU, 10_000), "full": (FULL, None)}  # (recipe, training images)
SEEDS = (0, 1)
RECORD = "record.json"


def cell_config(schedule_config, cell):
    """The `RecipeConfig` of `cell` (a name in `CELLS`) under a schedule's config."""
    change = CELLS[cell]
    return dataclasses.replace(
        schedule_config, name=f"ablations/{cell}",
        model={**schedule_config.model, **change.get("model", {})},
        learning_rate=schedule_config.learning_rate * change.get("lr_factor", 1.0))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="cpu")
    p.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS),
                   help="the cells to run (default: all)")
    p.add_argument("--seeds", nargs="+", type=options.non_negative_int, default=list(SEEDS))
    p.add_argument("--runs-dir", default=str(REPO_ROOT / "runs" / "ablations"),
                   help="one folder per run (CELL/seed_S): models, histories, records")
    p.add_argument("--output-dir", default=str(REPO_ROOT / "saved_models" / "ablations"),
                   help="where results.json, README.md and the figures go")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST idx files")
    p.add_argument("--limit-train", type=options.positive_int, default=None,
                   help="training images (default: the schedule's)")
    p.add_argument("--limit-test", type=options.positive_int, default=None)
    p.add_argument("--epochs", type=options.positive_int, default=None,
                   help="epochs (default: the schedule's)")
    p.add_argument("--batch-size", type=options.positive_int, default=None,
                   help="batch (default: the schedule's)")
    p.add_argument("--pipeline", choices=["auto", "tf.data", "numpy"], default="auto")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    return p


def run_args(run_dir, seed, verbose):
    """The training options `loop.train` reads, at their defaults, for one run."""
    return options.base_parser(CPU, "").parse_args(
        ["--output-dir", str(run_dir), "--seed", str(seed), "--verbose", str(verbose)])


def high_norm_ratio(model, images):
    """The largest patch token's norm over the median one, at the last block's output
    (before the final norm), averaged over `images`: the "high-norm artefact" measure of
    Darcet et al. (about 1 without such tokens)."""
    tokens = intermediate_model(model, blocks=(-1,)).predict(images, verbose=0)
    tokens = np.asarray(tokens[0] if isinstance(tokens, (list, tuple)) else tokens)
    patches = tokens[:, model.architecture.num_tokens_before_patches:]
    norms = np.linalg.norm(patches.astype("float64"), axis=-1)
    return float(np.mean(norms.max(-1) / np.median(norms, axis=-1)))


def run_cell(config, cell, seed, run_dir, data, args):
    """Trains and evaluates one run unless its record exists; returns the record."""
    record_path = run_dir / RECORD
    if record_path.exists():
        print(f"[ablations] {cell} seed {seed}: done already ({record_path})", flush=True)
        return json.loads(record_path.read_text())
    (x_train, y_train), (x_test, y_test) = data
    training_input = feeds.array_input((x_train, y_train), (x_test, y_test), args.pipeline)
    model, _, info = loop.train(config, run_args(run_dir, seed, args.verbose), training_input,
                                outputs=(RECORD,))
    accuracy = float(np.mean(reports.predict_labels(model, x_test) == y_test))
    record = {
        "cell": cell, "seed": seed, "test_accuracy": accuracy, "test_examples": len(x_test),
        "train_examples": info["num_train"], "epochs": info["epochs_run"],
        "parameters": model.count_params(), "flops_per_image": forward_flops(config.model),
        "train_seconds": round(info["train_seconds"], 1),
        "high_norm_ratio": high_norm_ratio(model, x_test[:64].astype("float32")),
        "learning_rate": config.learning_rate, "model": config.model,
        "backend": keras.backend.backend(), "hardware": training.hardware_description(),
    }
    run_folder.write_json(record_path, record)
    print(f"[ablations] {cell} seed {seed}: {accuracy:.2%} in {record['train_seconds']} s",
          flush=True)
    return record


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    schedule_config, limit = SCHEDULES[args.schedule]
    schedule_config = dataclasses.replace(
        schedule_config, epochs=args.epochs or schedule_config.epochs,
        batch_size=args.batch_size or schedule_config.batch_size)
    configs = {cell: cell_config(schedule_config, cell) for cell in args.cells}
    for config in configs.values():  # every cell's model is valid before anything trains
        ViTConfig(**config.model)
    data = (vit_data.load_fashion_mnist("train", args.data_dir, limit=args.limit_train or limit),
            vit_data.load_fashion_mnist("test", args.data_dir, limit=args.limit_test))
    start = time.time()
    records = [run_cell(configs[cell], cell, seed, Path(args.runs_dir) / cell / f"seed_{seed}",
                        data, args)
               for cell in args.cells for seed in args.seeds]
    paths = ablation_report.write_report(records, args.runs_dir, args.output_dir,
                                         data[1][0], schedule=args.schedule)
    reports.banner([f"Ablations: {len(records)} runs ({time.time() - start:.0f} s this time)"]
                   + [str(path) for path in paths.values()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
