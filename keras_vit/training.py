"""Training set-up of the ViT recipes: optimisers, schedules, precision, callbacks.

* `make_adamw`: AdamW with weight decay off for biases, norms, the position embedding
  and the class token, and global gradient-norm clipping (1.0 by default).
* `make_sgd`: the ViT paper's fine-tuning optimiser (SGD, momentum 0.9, clip 1.0).
* `WarmupCosine` (from `keras_vit.schedules`): linear warm-up then cosine decay.
* `set_mixed_precision`: the mixed precision switch.
* `AugmentedModel`: a training-only wrapper that augments batches on the device, so
  only the plain ViT is saved.
* `make_callbacks`: checkpoints with resume (`CheckedBackupAndRestore`, at most one epoch
  lost), a guard against resuming a different model, CSV and TensorBoard logs, a time budget
  (the checkpoint and CSV parts, and `clear_resume_dir`, are in `keras_vit.checkpoints`).
"""

import math
import os
import time
from pathlib import Path

import keras

from keras_vit.backend import private_apis
# Re-exported: training.WarmupCosine, training.clear_resume_dir, ... as before.
from keras_vit.checkpoints import (  # noqa: F401
    CHECKPOINT_METADATA,
    CHECKPOINT_WEIGHTS,
    RESUME_FILES,
    RUN_SIGNATURE,
    AtomicCSVLogger,
    CheckedBackupAndRestore,
    check_resume_dir,
    clear_resume_dir,
)
from keras_vit.schedules import WarmupCosine  # noqa: F401

# Short variable names (regexes, anchored) that AdamW must not decay. In a ViT they are:
# every bias ("bias"), LayerNorm scale and offset ("gamma", "beta"), the position
# embedding ("embedding"), the class token ("token"), register and distillation tokens
# ("tokens"), layer scale ("attention_scale", "mlp_scale") and the MAP probe ("probe").
NO_WEIGHT_DECAY_NAMES = ("^bias$", "^gamma$", "^beta$", "^embedding$", "^token$", "^tokens$",
                         "^attention_scale$", "^mlp_scale$", "^probe$")


def make_adamw(
    learning_rate,
    weight_decay=0.05,
    beta_1=0.9,
    beta_2=0.999,
    global_clipnorm=1.0,
    exclude=NO_WEIGHT_DECAY_NAMES,
):
    """AdamW whose weight decay skips the variables named in `exclude` (regexes)."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        global_clipnorm=global_clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=list(exclude))
    return optimizer


def make_sgd(learning_rate, momentum=0.9, global_clipnorm=1.0):
    """The ViT paper's fine-tuning optimiser: SGD with momentum 0.9, no weight decay,
    global gradient-norm clipping at 1.0."""
    return keras.optimizers.SGD(
        learning_rate=learning_rate, momentum=momentum, global_clipnorm=global_clipnorm
    )


def decayed_variables(optimizer, model):
    """(decayed, excluded) lists of `model`'s trainable variables for `optimizer`."""
    decayed, excluded = [], []
    for variable in model.trainable_variables:
        (decayed if private_apis.uses_weight_decay(optimizer, variable) else excluded).append(variable)
    return decayed, excluded


def make_loss(label_smoothing=0.1):
    """Cross-entropy on logits and one-hot labels, with label smoothing."""
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)


def set_mixed_precision(enabled, dtype=None):
    """Turns the global mixed precision policy on or off; returns the policy name.

    `dtype` defaults to "mixed_bfloat16" (TPUs, recent GPUs, CPUs); "mixed_float16"
    needs loss scaling, which Keras optimisers do automatically under that policy.
    """
    name = (dtype or "mixed_bfloat16") if enabled else "float32"
    keras.config.set_dtype_policy(name)
    return name


class AugmentedModel(keras.Model):
    """Wraps a model with augmentation layers applied only when training (on the device).

    Saves nothing of its own: save `.model`. Its weights (for resuming) are the inner
    model's plus the augmenter's random-seed state.
    """

    def __init__(self, model, augmenter=(), **kwargs):
        kwargs.setdefault("name", f"{model.name}_training")
        kwargs.setdefault("dtype", "float32")  # augment 0..255 pixels in float32
        super().__init__(**kwargs)
        self.model = model
        self.augmenter = list(augmenter or ())
        if keras.backend.backend() == "jax":
            # RandomTranslation and RandomCrop say they don't support jit because TF's
            # XLA lacks their image op; their JAX implementation jits fine, and an
            # un-jitted JAX train step would be many times slower.
            for layer in self.augmenter:
                layer.supports_jit = True

    def call(self, images, training=False):
        if training:
            for layer in self.augmenter:
                images = layer(images, training=True)
        return self.model(images, training=training)

    def build(self, input_shape):
        for layer in self.augmenter:
            layer.build(input_shape)
        self.built = True


# --------------------------------------------------------------------------- callbacks


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` and `images_per_second` to the logs of each epoch."""

    def __init__(self, images_per_epoch=None):
        super().__init__()
        self.images_per_epoch = images_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        if logs is not None:
            logs["epoch_seconds"] = seconds
            if self.images_per_epoch:
                logs["images_per_second"] = self.images_per_epoch / seconds


class TimeBudget(keras.callbacks.Callback):
    """Stops training cleanly so that it ends within `seconds` of `start_time`.

    After each epoch it projects the remaining ones (in the first epoch, from the batches
    after the first, which pays for compilation). If `schedule` (a `WarmupCosine`) and
    `steps_per_epoch` are given and the planned epochs don't fit, it shortens the schedule to the epochs that
    do (re-tracing the train step once), so the learning rate still decays to its end
    value; otherwise it just stops before an epoch that would overrun the budget.
    `reserve_seconds` is kept free for evaluation and saving after training.
    """

    def __init__(self, seconds, start_time=None, schedule=None, steps_per_epoch=None,
                 reserve_seconds=0.0, verbose=True):
        super().__init__()
        self.seconds = float(seconds)
        self.start_time = time.time() if start_time is None else start_time
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.reserve_seconds = reserve_seconds
        self.verbose = verbose
        self.final_epoch = None
        self.replanned = False
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        self._epochs_run = 0
        self._durations = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if self._batches == 0:
            self._first_batch_end = now  # the first batch pays for compilation
        self._last_batch_end = now
        self._batches += 1

    def _epoch_estimate(self):
        """Seconds per epoch without compilation."""
        if self._epochs_run >= 2:  # the last two epochs, never the first one
            recent = self._durations[1:][-2:]
            return sum(recent) / len(recent)
        if self._batches > 1:  # first epoch: time the batches after the first one
            steady = self._last_batch_end - self._first_batch_end
            return steady * self._batches / (self._batches - 1)
        return self._durations[-1]

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        self._durations.append(now - self._epoch_start)
        self._epochs_run += 1
        left = self.seconds - self.reserve_seconds - (now - self.start_time)
        if self.final_epoch is not None and epoch + 1 >= self.final_epoch:
            self.model.stop_training = True
            return
        per_epoch = self._epoch_estimate()
        if self._epochs_run >= 2:
            per_epoch = max(per_epoch, self._durations[-1])
        if not self.replanned and self.schedule is not None and self.steps_per_epoch:
            planned = math.ceil(self.schedule.total_steps / self.steps_per_epoch)
            # Shortening the schedule re-traces the train step: about one compilation.
            compile_seconds = max(self._durations[0] - per_epoch, 0.0)
            fit = epoch + 1 + int((left - compile_seconds) // per_epoch)
            if fit < planned:
                self.replanned = True
                self.stopped_early = True
                fit = max(fit, epoch + 2)
                total = max(fit * self.steps_per_epoch, self.schedule.warmup_steps + 1)
                self.schedule.total_steps = total
                self.final_epoch = fit
                self.model.make_train_function(force=True)
                if self.verbose:
                    print(
                        f"\nTimeBudget: {planned} epochs won't fit in {self.seconds / 60:.1f} min "
                        f"({per_epoch:.1f} s/epoch); the learning-rate schedule now ends "
                        f"after epoch {fit}."
                    )
                return
        if left < per_epoch:
            self.model.stop_training = True
            self.stopped_early = True
            if self.verbose:
                print(f"\nTimeBudget: stopping after epoch {epoch + 1}, {left:.0f} s left.")


def make_callbacks(
    output_dir,
    signature,
    resume=True,
    csv=True,
    tensorboard=True,
    images_per_epoch=None,
    time_budget=None,
):
    """The recipes' callbacks, writing under `output_dir`.

    `output_dir/backup/` holds the resume checkpoint (`CheckedBackupAndRestore`, saved
    every epoch, kept after training) guarded by `check_resume_dir(…, signature)`;
    `output_dir/history.csv` the per-epoch logs (appended to on resume);
    `output_dir/logs/` TensorBoard logs (skipped if tensorboard is not installed).
    `time_budget` is a `TimeBudget` to add. Returns the list of callbacks.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [EpochTimer(images_per_epoch)]
    if time_budget is not None:
        callbacks.append(time_budget)
    if resume:
        backup = output_dir / "backup"
        check_resume_dir(backup, signature)
        callbacks.append(CheckedBackupAndRestore(str(backup)))
    if csv:
        callbacks.append(AtomicCSVLogger(str(output_dir / "history.csv"), append=True))
    if tensorboard:
        try:
            import tensorboard  # noqa: F401

            import tensorflow  # noqa: F401  (the callback writes summaries through TF)
        except ImportError:
            pass
        else:
            callbacks.append(keras.callbacks.TensorBoard(str(output_dir / "logs")))
    return callbacks


def hardware_description():
    """A short description of the machine and accelerator, for model cards."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = os.cpu_count()
    accelerator = None
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "cpu":
                accelerator = f"{len(jax.devices())}x {device.device_kind}"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                accelerator = torch.cuda.get_device_name(0)
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                accelerator = f"{len(gpus)}x {details.get('device_name', 'GPU')}"
    except Exception:  # noqa: BLE001 - a description is best effort
        pass
    text = f"{cpu} ({cores} cores)"
    if accelerator:
        text = f"{accelerator}; host {text}"
    return f"{text}, Keras {keras.__version__} on {backend}"
