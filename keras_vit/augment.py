"""The per-image augmentation of the recipes, as Keras core layers: one definition that
runs inside tf.data on any backend and on the device inside a model
(`keras_vit.training.AugmentedModel`). MixUp and CutMix, which need one-hot labels, are
applied per batch by `keras_vit.data.mix_batch`."""

import dataclasses

import keras


@dataclasses.dataclass
class AugmentConfig:
    """What `make_augmenter` and `build_pipeline` apply to training batches.

    translate: largest random shift as a fraction of the image side, zero-filled (the
        "pad and random crop" of small-image recipes: 0.1 on 28 px ~ pad 3 then crop).
    flip: random horizontal flip. rand_augment: RandAugment ops per image (0 = off).
    random_erasing: probability of erasing a random box per image (0 = off).
    mixup / cutmix: probability of MixUp / CutMix per batch (0 = off); they need one-hot
        labels and so are applied by `build_pipeline` or `mix_batch`, not by the augmenter.
    """

    translate: float = 0.0
    flip: bool = False
    rand_augment: int = 0
    rand_augment_magnitude: float = 0.5
    random_erasing: float = 0.0
    mixup: float = 0.0
    mixup_alpha: float = 0.2
    cutmix: float = 0.0


def make_augmenter(config, seed=None):
    """The list of Keras core augmentation layers `config` asks for (0..255 images).

    The same layers work inside tf.data (any backend) and on the device inside a model
    (`keras_vit.training.AugmentedModel`), so a recipe's augmentation is defined once.
    Apply them with `augment_batch`. Returns [] when `config` asks for no per-image
    augmentation. Build new ones per use: under JAX, an instance used in tf.data can't be
    reused eagerly. (Not a `keras.Sequential`: that doesn't run in tf.data under JAX.)
    """
    L = keras.layers
    layers = []
    if config.rand_augment:
        layers.append(
            L.RandAugment(
                value_range=(0, 255),
                num_ops=config.rand_augment,
                factor=config.rand_augment_magnitude,
                seed=seed,
            )
        )
    if config.translate:
        layers.append(
            L.RandomTranslation(
                config.translate,
                config.translate,
                fill_mode="constant",
                fill_value=0.0,
                interpolation="nearest",
                seed=seed,
            )
        )
    if config.flip:
        layers.append(L.RandomFlip("horizontal", seed=seed))
    if config.random_erasing:
        p = float(config.random_erasing)
        layers.append(L.RandomErasing(factor=(p, p), value_range=(0, 255), seed=seed))
    # float32 even under a mixed policy: 0..255 pixels lose precision in bfloat16.
    for layer in layers:
        layer.dtype_policy = keras.dtype_policies.get("float32")
    return layers


def augment_batch(layers, images):
    """Applies the `make_augmenter` layers to a batch, in training mode."""
    for layer in layers:
        images = layer(images, training=True)
    return images
