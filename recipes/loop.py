"""The recipes' training run: the model and optimiser a `RecipeConfig` describes, trained
on a training input (`recipes.feeds`) with resume, logs, a time budget and any
distribution, then saved as plain float32 `model.keras`."""

import dataclasses
import math
import time
from pathlib import Path

import keras
import numpy as np

from keras_vit import distribution, precision, training
from keras_vit.jit import resolve_jit_compile
from keras_vit.model import ViT
from recipes import run_folder
from recipes.reports import describe_distribution


def build_model(config):
    """`ViT(**config.model)`."""
    return ViT(**config.model)


def build_optimizer(config, steps_per_epoch, epochs=None):
    """(optimizer, its `WarmupCosine` schedule) for `config`: `config.total_steps` steps,
    else `epochs` (default `config.epochs`) of `steps_per_epoch`."""
    total = config.total_steps or (epochs or config.epochs) * steps_per_epoch
    if config.warmup_steps is not None:
        warmup = config.warmup_steps
    else:
        warmup = int(round(config.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(total - 1, 0))
    schedule = training.WarmupCosine(
        config.learning_rate, total, warmup, end=config.end_learning_rate
    )
    if config.optimizer == "adamw":
        opt = training.make_adamw(
            schedule, weight_decay=config.weight_decay, global_clipnorm=config.global_clipnorm
        )
    elif config.optimizer == "sgd":
        opt = training.make_sgd(schedule, momentum=config.momentum, global_clipnorm=config.global_clipnorm)
    else:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}; use 'adamw' or 'sgd'.")
    return opt, schedule


def train(config, args, training_input, model=None, outputs=(), architecture=None):
    """Trains `config` on `training_input` (a `feeds.ArrayInput` or `feeds.DatasetInput`)
    as the recipe options `args` say, with resume, logs and a time budget.

    `model` is a ViT, a function returning one, or None for `ViT(**config.model)`.
    `outputs` names the files the recipe writes in the output folder after training: like
    model.keras and history.csv, they are checked before training
    (`run_folder.prepare_output_dir`). `architecture` is the model's config for
    `--distribute` (default `config.model`: give it when that lacks the architecture, as
    a preset's does).
    Returns (plain model, history dict, info dict). The plain float32 model is saved as
    `output_dir/model.keras` before anything else happens after training.
    """
    start = time.time()
    output_dir = Path(args.output_dir)
    setup = distribution.for_training(
        args.distribute, architecture or config.model, model_devices=args.model_devices,
        batch_size=None if args.per_device_batch_size else config.batch_size,
        per_device_batch_size=args.per_device_batch_size)
    config = dataclasses.replace(config, batch_size=setup.global_batch)
    with setup.scope():  # the model is built, compiled and fitted in it
        keras.utils.set_random_seed(args.seed)
        policy = training.set_mixed_precision(args.mixed_precision)
        if model is None:
            model = build_model(config)
        elif callable(model) and not isinstance(model, keras.Model):
            model = model()  # built here, under the precision policy just set
        # After the model is built: a bad --model value is an error before anything is written.
        run_folder.prepare_output_dir(output_dir, ("model.keras", "history.csv", *outputs),
                                      resume=not args.no_resume)
        feed = training_input.feed(model, config, args.seed, setup.data_devices)
        steps_per_epoch = feed.steps_per_epoch
        if steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {config.batch_size} is larger than the dataset "
                f"({feed.num_train} examples)."
            )
        fit_kwargs = dict(feed.fit_kwargs, shuffle=False)  # the inputs shuffle themselves

        epochs = config.epochs
        if config.total_steps:
            # A schedule in steps (fine-tuning): whole epochs of a repeated dataset that add up
            # to exactly `total_steps`.
            epochs = max(1, round(config.total_steps / steps_per_epoch))
            steps_per_epoch = math.ceil(config.total_steps / epochs)
            fit_kwargs["steps_per_epoch"] = steps_per_epoch
        optimizer, schedule = build_optimizer(config, steps_per_epoch)
        feed.fit_model.compile(
            optimizer=optimizer,
            loss=training.make_loss(config.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=resolve_jit_compile(False if args.no_jit else "auto", feed.fit_model),
            steps_per_execution=args.steps_per_execution,
        )
        sample = np.zeros((1, *model.image_size, model.num_channels), "float32")
        feed.fit_model(sample)  # build before BackupAndRestore restores into it
        budget = None
        if args.time_budget_minutes:
            budget = training.TimeBudget(
                args.time_budget_minutes * 60, start_time=start, schedule=schedule,
                steps_per_epoch=steps_per_epoch, reserve_seconds=45)
        signature = {
            "recipe": config.name,
            "model": config.model,
            "num_channels": model.num_channels,
            "optimizer": config.optimizer,
            "batch_size": config.batch_size,
            "epochs": epochs,
            "pipeline": training_input.name,
        }
        callbacks = training.make_callbacks(
            output_dir, signature, images_per_epoch=steps_per_epoch * config.batch_size,
            time_budget=budget)
        print(
            f"[{config.name}] {model.count_params():,} parameters, {feed.num_train} training "
            f"images, {steps_per_epoch} steps/epoch x {epochs} epochs, batch "
            f"{config.batch_size}, {config.optimizer} lr {config.learning_rate}, policy "
            f"{policy}, pipeline {training_input.name}, backend {keras.backend.backend()}, "
            f"distribution: {describe_distribution(setup.describe())}",
            flush=True,
        )
        train_start = time.time()
        history = feed.fit_model.fit(
            feed.train,
            epochs=epochs,
            validation_data=feed.validation,
            validation_freq=config.validation_freq,
            callbacks=callbacks,
            verbose=args.verbose,
            **fit_kwargs,
        )
        train_seconds = time.time() - train_start

        # Save first: whatever fails afterwards, the trained model is on disk.
        training.set_mixed_precision(False)
        plain = precision.as_float32(model)
        plain.save(output_dir / "model.keras")
        logged = run_folder.read_history(output_dir / "history.csv")
        info = {
            "policy": policy,
            "pipeline": training_input.name,
            "train_seconds": train_seconds,
            "epochs_planned": epochs,
            "epochs_run": len(logged.get("epoch", [])) or len(history.epoch),
            "steps_per_epoch": steps_per_epoch,
            "num_train": feed.num_train,
            "time_budget_stopped_early": bool(budget and budget.stopped_early),
            "schedule_total_steps": schedule.total_steps,
            "distribution": dict(setup.describe(),
                                 sharded_variables=len(distribution.sharded_variables(model))),
        }
        return plain, logged, info
