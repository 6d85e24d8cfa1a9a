"""The Vision Transformer's building blocks, as backend-agnostic Keras layers, in one
namespace (`keras_vit.layers.<Name>`); each lives in the module of its concern:

- `keras_vit.tokens`: `PatchEmbedding`, `ClassToken`, `RegisterTokens`,
  `DistillationToken`, `PositionEmbedding`;
- `keras_vit.positions`: `LearnedPositionEmbedding2D`, `SinCosPositionEmbedding2D`;
- `keras_vit.resampling`: `resample_position_embedding`, `RESAMPLE_METHODS`;
- `keras_vit.encoder`: `TransformerEncoderBlock`, `DropPath`, `materializes_gradient`;
- `keras_vit.attention`: `ViTAttention`; `keras_vit.norm`: `LayerNormalization`,
  `RMSNormalization`;
- `keras_vit.pooling`: `TokenPooling`, `AttentionPooling`, `ProbePooling`;
- `keras_vit.layer_helpers`: `MLP_ACTIVATIONS`, `activation`, `FlatXavierUniform`.

Only `keras.ops` is used in them, so every layer runs on TensorFlow, JAX and PyTorch.
"""

from keras_vit.attention import ViTAttention
from keras_vit.encoder import DropPath, TransformerEncoderBlock, materializes_gradient
from keras_vit.layer_helpers import MLP_ACTIVATIONS, FlatXavierUniform, activation
from keras_vit.norm import LayerNormalization, RMSNormalization
from keras_vit.pooling import AttentionPooling, ProbePooling, TokenPooling
from keras_vit.positions import LearnedPositionEmbedding2D, SinCosPositionEmbedding2D
from keras_vit.resampling import RESAMPLE_METHODS, resample_position_embedding
from keras_vit.tokens import (
    ClassToken,
    DistillationToken,
    PatchEmbedding,
    PositionEmbedding,
    RegisterTokens,
)

__all__ = [
    "MLP_ACTIVATIONS",
    "RESAMPLE_METHODS",
    "AttentionPooling",
    "ClassToken",
    "DistillationToken",
    "DropPath",
    "FlatXavierUniform",
    "LayerNormalization",
    "LearnedPositionEmbedding2D",
    "PatchEmbedding",
    "PositionEmbedding",
    "ProbePooling",
    "RMSNormalization",
    "RegisterTokens",
    "SinCosPositionEmbedding2D",
    "TokenPooling",
    "TransformerEncoderBlock",
    "ViTAttention",
    "activation",
    "materializes_gradient",
    "resample_position_embedding",
]
