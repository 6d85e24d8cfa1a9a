"""`RecipeConfig`: what one recipe is (model, data, optimiser, schedule, augmentation)."""

import dataclasses
from pathlib import Path

from keras_vit import data as vit_data

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class RecipeConfig:
    """One recipe: the model, the data, the optimiser, the schedule and the augmentation.

    `epochs` sizes the schedule unless `total_steps` is set (fine-tuning counts steps).
    The warm-up is `warmup_steps`, or else `warmup_epochs` (may be fractional).
    """

    name: str
    model: dict
    batch_size: int
    epochs: int = 1
    total_steps: int | None = None
    optimizer: str = "adamw"  # "adamw" or "sgd"
    learning_rate: float = 1e-3
    end_learning_rate: float = 0.0
    weight_decay: float = 0.05
    momentum: float = 0.9
    global_clipnorm: float = 1.0
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None
    label_smoothing: float = 0.1
    augment: vit_data.AugmentConfig = dataclasses.field(default_factory=vit_data.AugmentConfig)
    eval_batch_size: int = 1000
    validation_freq: int = 1
    class_names: tuple | None = None

    def to_dict(self):
        return dataclasses.asdict(self)
