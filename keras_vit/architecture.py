"""`ViTConfig`: the architecture of a `keras_vit.ViT`, checked once, with what follows from
it (the patch grid, the tokens before the patches, the MLP activation, every variable's
shape). The model, the presets, the checkpoint converters and the sharding read it."""

import dataclasses

from keras_vit import arguments
from keras_vit.layer_helpers import MLP_TYPES
from keras_vit.norm import NORM_TYPES
from keras_vit.shapes import variable_shapes

POOLINGS = ("token", "gap", "map", "probe")
POSITION_EMBEDDINGS = ("learned", "learned_2d", "sincos_2d", "none")
ROPE_FORMS = ("dinov3", "axial")
BOOLEAN_FIELDS = ("mlp_inner_norm", "query_bias", "key_bias", "value_bias", "output_bias",
                  "mlp_bias", "patch_bias", "patch_norm")


def resolve_mlp_activation(mlp_activation=None, gelu_approximate=True):
    """The blocks' MLP activation name: `mlp_activation`, else "gelu_tanh" for
    `gelu_approximate=True` (the original Flax models) and "gelu" (exact) for False."""
    return mlp_activation or ("gelu_tanh" if gelu_approximate else "gelu")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """The architecture of a Vision Transformer (Dosovitskiy et al., 2021) and its variants.

    Args:
        image_size: int or (height, width); both must be multiples of `patch_size`.
        patch_size: int or (height, width) of the patches cut from the image.
        hidden_dim: token width D. num_layers: encoder blocks. num_heads: attention
            heads (must divide D). mlp_dim: hidden width of each block's MLP.
        num_classes: size of the classification head.
        num_channels: image channels (3 for RGB, 1 for grayscale).
        pooling: "token" (prepend a class token and read it out), "gap" (average),
            "map" (multi-head attention pooling with a learned probe, SigLIP; no class
            token; its MLP is `mlp_dim` wide) or "probe" (AIMv2's head: the learned probe
            itself is the query, key and value projections with biases where the blocks'
            have them (`key_bias`, `value_bias`), an output projection; no norm, no MLP).
        representation_size: if set, a Dense + tanh "pre_logits" layer of this width
            before the head, as in the original ImageNet-21k checkpoints.
        include_top: False drops the head and returns the pooled features.
        include_preprocessing: True normalises 0..255 pixels inside the model, to
            (pixel / 255 - image_mean) / image_std; False passes the inputs through.
        image_mean, image_std: per-channel mean and std in 0..1 units (one value, or one
            per channel; stored one per channel), e.g. ImageNet's for DeiT and DINOv2;
            None is 0.5 / 0.5, the originals'.
        dropout_rate, attention_dropout_rate, drop_path_rate: regularisation; drop path
            grows linearly with depth up to `drop_path_rate` in the last block.
        layer_norm_epsilon: 1e-6 as in the original (Flax); Hugging Face uses 1e-12.
        mlp_activation: "gelu_tanh" (the original Flax models), "gelu" (exact: timm and
            Hugging Face) or "quick_gelu" (OpenAI CLIP). `ViT` also takes the older
            `gelu_approximate` (see `resolve_mlp_activation`).
        classifier_activation: activation of the head, e.g. "softmax"; None for logits.
        class_token_position: False gives the position embedding no slot for the class
            token (DeiT III, big_vision): positions are added to the patch tokens only.
        num_register_tokens: learned register tokens after the class token (DINOv2 with
            registers); they get no position and pooling drops them.
        pre_norm: a LayerNormalization ("pre_norm") before the first block (CLIP).
        pooled_norm: with pooling "gap", the final LayerNormalization normalises the pooled
            vector instead of the tokens (timm's `fc_norm`).
        layer_scale_init: if set, a learned per-channel scale on both residual branches
            of every block, initialised to this value (DeiT III, DINOv2).
        distillation_token: DeiT's distillation token after the class token, with its own
            position and its own head ("head_dist"); the model returns the average of the
            two heads' logits, as the original does at inference.
        distillation_head: False keeps the distillation token but gives it no head.
        norm_type: "layer_norm" or "rms_norm" (AIMv2: scale only, no offset), every norm
            of the model; its epsilon is `layer_norm_epsilon`.
        mlp_type: "mlp" (Dense -> activation -> Dense) or "swiglu":
            `mlp_dense_2(silu(mlp_gate(x)) * mlp_dense_1(x))` in every block (AIMv2,
            EVA-02); the MAP pooling's MLP stays "mlp".
        mlp_inner_norm: a norm on each block's MLP hidden before `mlp_dense_2` (EVA-02).
        query_bias, key_bias, value_bias, output_bias: False drops that attention
            projection's bias in every block. mlp_bias: False drops the biases of the
            blocks' MLP Dense layers. patch_bias: False drops the patch projection's.
        patch_norm: a norm on the patch tokens inside the patch embedding (AIMv2).
        position_embedding: the absolute position embedding added to the tokens: "learned"
            (one learned row per position, the original), "learned_2d" (a learned row
            embedding and column embedding, concatenated: the ViT paper's 2-D ablation),
            "sincos_2d" (fixed sines and cosines of the patch coordinates, big_vision's
            plain baseline; hidden_dim divisible by 4) or "none" (DINOv3, which has RoPE
            only). See `keras_vit.positions`.
        rope: 2-D rotary position embedding of the patch tokens' queries and keys in every
            block (`keras_vit.rope`): None, "dinov3" (patch centres in [-1, 1], theta 100,
            rotate-half) or "axial" (EVA-02 / Perception Encoder: patch indices, theta
            10000, interleaved); recomputed from the grid of `image_size`.
        rope_theta: the frequencies' base; None: the form's (100 or 10000).
        rope_rotate_half: True pairs channel j with j + head_dim / 2, False pairs
            neighbours (interleaved); None: the form's.
        rope_reference_grid: "axial" only: (h, w) the coordinates are scaled to span
            (timm's `ref_feat_shape`, the pre-training grid); None: the model's grid.
        rope_grid_offset: added to the patch indices (Perception Encoder: 1).
        rope_grid_indexing: "ij" (row coordinate first) or "xy" (column first, PE).
        pooling_heads: heads of the "map" or "probe" pooling attention; None: `num_heads`.
        class_token: a class token before the patches; None: with pooling "token" only.
            True with "gap" (EVA-02: the patches are averaged), "map" or "probe" (PE: it is
            attended).
    """

    image_size: tuple = 224
    patch_size: tuple = 16
    hidden_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    num_classes: int = 1000
    num_channels: int = 3
    pooling: str = "token"
    representation_size: int = None
    include_top: bool = True
    include_preprocessing: bool = True
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    mlp_activation: str = "gelu_tanh"
    classifier_activation: str = None
    class_token_position: bool = True
    num_register_tokens: int = 0
    pre_norm: bool = False
    pooled_norm: bool = False
    layer_scale_init: float = None
    distillation_token: bool = False
    distillation_head: bool = True
    image_mean: tuple = None
    image_std: tuple = None
    norm_type: str = "layer_norm"
    mlp_type: str = "mlp"
    mlp_inner_norm: bool = False
    query_bias: bool = True
    key_bias: bool = True
    value_bias: bool = True
    output_bias: bool = True
    mlp_bias: bool = True
    patch_bias: bool = True
    patch_norm: bool = False
    position_embedding: str = "learned"
    rope: str = None
    rope_theta: float = None
    rope_rotate_half: bool = None
    rope_reference_grid: tuple = None
    rope_grid_offset: float = 0.0
    rope_grid_indexing: str = "ij"
    pooling_heads: int = None
    class_token: bool = None

    def __post_init__(self):
        """Checks the fields (each a ValueError naming it) and stores sizes as pairs and
        mean / std one value per channel."""
        normalized = dict(image_size=arguments.pair(self.image_size, "image_size"),
                          patch_size=arguments.pair(self.patch_size, "patch_size"))
        arguments.check_positive(
            hidden_dim=self.hidden_dim, num_layers=self.num_layers, num_heads=self.num_heads,
            mlp_dim=self.mlp_dim, num_classes=self.num_classes, num_channels=self.num_channels)
        if self.representation_size is not None:
            arguments.check_positive(representation_size=self.representation_size)
        arguments.check_rate(dropout_rate=self.dropout_rate,
                             attention_dropout_rate=self.attention_dropout_rate,
                             drop_path_rate=self.drop_path_rate)
        arguments.check_epsilon(self.layer_norm_epsilon)
        image, patch = normalized["image_size"], normalized["patch_size"]
        if image[0] % patch[0] or image[1] % patch[1]:
            raise ValueError(f"image_size {image} must be divisible by patch_size {patch}.")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads "
                             f"({self.num_heads}).")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        if not arguments.is_int(self.num_register_tokens) or self.num_register_tokens < 0:
            raise ValueError("num_register_tokens must be an integer >= 0, got "
                             f"{self.num_register_tokens!r}.")
        if self.pooled_norm and self.pooling != "gap":
            raise ValueError("pooled_norm=True needs pooling='gap' (timm's fc_norm).")
        if self.layer_scale_init is not None:
            arguments.check_number(layer_scale_init=self.layer_scale_init)
        if self.distillation_token and (self.pooling != "token" or not self.class_token_position
                                        or self.num_register_tokens):
            raise ValueError("distillation_token=True needs pooling='token', a class-token "
                             "position and no register tokens (DeiT's layout).")
        if not isinstance(self.distillation_head, bool) or (
                not self.distillation_head and not self.distillation_token):
            raise ValueError("distillation_head must be True or False, and False only with "
                             f"distillation_token=True; got {self.distillation_head!r}.")
        if self.class_token not in (None, True, False) or (
                self.class_token is False and self.pooling == "token"):
            raise ValueError(f"class_token must be None, True or False (not False with pooling "
                             f"'token'), got {self.class_token!r}.")
        self._check_rope(normalized)
        if self.pooling_heads is not None:
            arguments.check_positive(pooling_heads=self.pooling_heads)
            if self.pooling not in ("map", "probe") or self.hidden_dim % self.pooling_heads:
                raise ValueError(f"pooling_heads ({self.pooling_heads}) needs pooling 'map' or "
                                 f"'probe' and must divide hidden_dim ({self.hidden_dim}).")
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {self.norm_type!r}.")
        if self.mlp_type not in MLP_TYPES:
            raise ValueError(f"mlp_type must be one of {MLP_TYPES}, got {self.mlp_type!r}.")
        for name in BOOLEAN_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        mean, std = arguments.normalization(self.image_mean, self.image_std, self.num_channels)
        if self.image_mean is not None:
            normalized["image_mean"] = mean
        if self.image_std is not None:
            normalized["image_std"] = std
        for name, value in normalized.items():
            object.__setattr__(self, name, value)

    def _check_rope(self, normalized):
        """Checks `position_embedding` and the `rope*` fields; stores the reference grid
        as a pair in `normalized`."""
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding must be one of {POSITION_EMBEDDINGS}, got "
                             f"{self.position_embedding!r}.")
        if self.position_embedding == "sincos_2d" and self.hidden_dim % 4:
            raise ValueError(f"position_embedding='sincos_2d' needs hidden_dim divisible by 4, "
                             f"got {self.hidden_dim}.")
        if self.rope is None:
            changed = [name for name in ("rope_theta", "rope_rotate_half", "rope_reference_grid",
                                         "rope_grid_offset", "rope_grid_indexing")
                       if getattr(self, name) != self.defaults()[name]]
            if changed:
                raise ValueError(f"{changed[0]} needs rope='dinov3' or 'axial'.")
            return
        if self.rope not in ROPE_FORMS:
            raise ValueError(f"rope must be None, 'dinov3' or 'axial', got {self.rope!r}.")
        if (self.hidden_dim // self.num_heads) % 4:
            raise ValueError(f"rope needs a head width divisible by 4, got "
                             f"{self.hidden_dim // self.num_heads}.")
        if self.rope_theta is not None:
            arguments.check_number(rope_theta=self.rope_theta)
            if self.rope_theta <= 0:
                raise ValueError(f"rope_theta must be positive, got {self.rope_theta!r}.")
        if self.rope_rotate_half not in (None, True, False):
            raise ValueError(f"rope_rotate_half must be None, True or False, got {self.rope_rotate_half!r}.")
        if self.rope_reference_grid is not None:
            if self.rope != "axial":
                raise ValueError("rope_reference_grid needs rope='axial'.")
            normalized["rope_reference_grid"] = arguments.pair(
                self.rope_reference_grid, "rope_reference_grid")
        arguments.check_number(rope_grid_offset=self.rope_grid_offset)
        if self.rope_grid_indexing not in ("ij", "xy"):
            raise ValueError(f"rope_grid_indexing must be 'ij' or 'xy', got {self.rope_grid_indexing!r}.")

    @classmethod
    def field_names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def defaults(cls):
        """{field: default value}."""
        return {field.name: field.default for field in dataclasses.fields(cls)}

    def replace(self, **changes):
        """A copy with `changes` (checked again)."""
        return dataclasses.replace(self, **changes)

    @property
    def normalization(self):
        """(mean, std) one value per channel, 0.5 / 0.5 where the fields are None."""
        return arguments.normalization(self.image_mean, self.image_std, self.num_channels)

    @property
    def grid_size(self):
        """(h, w): the patch grid."""
        return (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])

    @property
    def num_patches(self):
        return self.grid_size[0] * self.grid_size[1]

    @property
    def has_class_token(self):
        return self.pooling == "token" if self.class_token is None else self.class_token

    @property
    def prefix_tokens(self):
        """The names of the tokens before the patch tokens, in sequence order: "class",
        "distillation", then one "register" per register token."""
        return (("class",) * self.has_class_token + ("distillation",) * self.distillation_token
                + ("register",) * self.num_register_tokens)

    @property
    def positioned_prefix_tokens(self):
        """The prefix tokens with a row in the position embedding (before the patches')."""
        positioned = ("class",) * (self.has_class_token and self.class_token_position)
        return positioned + ("distillation",) * self.distillation_token

    @property
    def num_tokens_before_patches(self):
        """Where the patch tokens start in the sequence the blocks see."""
        return len(self.prefix_tokens)

    @property
    def sequence_length(self):
        return self.num_tokens_before_patches + self.num_patches

    @property
    def final_norm_name(self):
        """The final LayerNormalization: "encoder_norm" on the tokens, or "pooled_norm" on
        the pooled vector."""
        return "pooled_norm" if self.pooled_norm else "encoder_norm"

    @property
    def has_distillation_head(self):
        return self.include_top and self.distillation_token and self.distillation_head

    @property
    def variable_shapes(self):
        """{variable path (`v.path` of the built `ViT`): shape}, in the model's order
        (`keras_vit.shapes.variable_shapes`)."""
        return variable_shapes(self)
