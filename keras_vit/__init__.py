"""keras_vit: Vision Transformers for Keras 3 on TensorFlow, JAX and PyTorch."""

from keras_vit import layers, naflex, presets
# Registers what a recipe's model.keras holds (its optimizer's WarmupCosine schedule).
from keras_vit import schedules  # noqa: F401
from keras_vit import export
from keras_vit.imagenet import decode_predictions, imagenet_classes
from keras_vit.architecture import ViTConfig
from keras_vit.model import ViT
from keras_vit.version import __version__

__all__ = ["ViT", "ViTConfig", "decode_predictions", "imagenet_classes", "layers", "presets"]
__all__ += ["export", "naflex"]
