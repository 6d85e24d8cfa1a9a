"""The recipes' command line: argparse types that refuse bad values by name, and the
options every training recipe shares."""

import argparse
import dataclasses
import json
import math

from keras_vit import arguments, distribution
from keras_vit.model import ViT
from recipes.recipe import REPO_ROOT


def checked_number(kind, description, ok):
    """An argparse type: `kind(text)` where `ok(value)` holds, else an error that says
    `description` is expected."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


positive_int = checked_number(int, "a positive integer", lambda v: v > 0)
non_negative_int = checked_number(int, "an integer >= 0", lambda v: v >= 0)
positive_float = checked_number(float, "a positive number", lambda v: 0 < v < math.inf)


def model_override(text):
    """An argparse type: KEY=VALUE as (key, value), the value parsed as JSON if it is JSON;
    KEY must be an argument of `ViT`."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        arguments.check_keyword_arguments(ViT, {key: value})
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    return key, value


def base_parser(config, description):
    """Command-line options common to the training recipes, defaulting to `config` (a
    `RecipeConfig`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=positive_int, default=config.epochs,
                   help="epochs (sizes the LR schedule)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=positive_int, default=config.batch_size,
                       help="the global batch, over all devices")
    batch.add_argument("--per-device-batch-size", type=positive_int, default=None,
                       help="the batch of each data-parallel replica: the global batch is "
                            "this times the replicas")
    p.add_argument("--distribute", choices=distribution.KINDS, default="none",
                   help="data: data parallelism over every device (JAX DataParallel, TF "
                        "MirroredStrategy); model: JAX model parallelism (blocks split "
                        "Megatron-style) with data parallelism; auto: model parallelism if "
                        "the model is too big for one device, else data parallelism if "
                        "there are several devices (keras_vit.distribution.for_training)")
    p.add_argument("--model-devices", type=positive_int, default=None,
                   help="the devices each block is split over (--distribute model or auto)")
    p.add_argument("--learning-rate", type=positive_float, default=config.learning_rate)
    p.add_argument("--output-dir", default=str(REPO_ROOT / "runs" / config.name),
                   help="where the model, logs, plots and resume checkpoint go")
    p.add_argument("--mixed-precision", action="store_true", help="train under mixed_bfloat16")
    p.add_argument("--time-budget-minutes", type=positive_float, default=None,
                   help="finish training (shortening the LR schedule if needed) within this time")
    p.add_argument("--limit-train", type=positive_int, default=None,
                   help="use only this many training examples")
    p.add_argument("--limit-test", type=positive_int, default=None,
                   help="use only this many test examples")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if --output-dir holds a checkpoint")
    p.add_argument("--no-jit", action="store_true", help="turn off jit_compile")
    p.add_argument("--steps-per-execution", type=positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="Keras fit verbosity: 0, 1 (bars), 2")
    p.add_argument("--model", type=model_override, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a model config entry, e.g. --model hidden_dim=128 (repeatable)")
    return p


def apply_overrides(config, args):
    """A copy of `config` with the command-line options applied."""
    return dataclasses.replace(
        config,
        model={**config.model, **dict(args.model)},
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
