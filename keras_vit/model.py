"""The Vision Transformer as a functional `keras.Model`."""

import keras

from keras_vit import arguments, atomic
from keras_vit import distribution
from keras_vit import inputs as vit_inputs
from keras_vit import layers as vit_layers
from keras_vit import quantization
from keras_vit.jit import resolve_jit_compile
from keras_vit.norm import LayerNormalization


def block_activation(mlp_activation, gelu_approximate):
    """The blocks' MLP activation: `mlp_activation`, else from `gelu_approximate`."""
    return mlp_activation or ("gelu_tanh" if gelu_approximate else "gelu")


@keras.saving.register_keras_serializable(package="keras_vit")
class ViT(vit_inputs.CheckedModel):
    """Vision Transformer (Dosovitskiy et al., 2021), the original architecture.

    images (B, H, W, C), pixel values 0..255 -> logits (B, num_classes), or pooled
    features (B, representation_size or hidden_dim) with `include_top=False`.

    Args:
        image_size: int or (height, width); both must be multiples of `patch_size`.
        patch_size: int or (height, width) of the square patches cut from the image.
        hidden_dim: token width D. num_layers: encoder blocks. num_heads: attention
            heads (must divide D). mlp_dim: hidden width of each block's MLP.
        num_classes: size of the classification head.
        num_channels: image channels (3 for RGB, 1 for grayscale).
        pooling: "token" (prepend a class token and read it out), "gap" (average) or
            "map" (multi-head attention pooling with a learned probe, SigLIP; no class
            token; its MLP is `mlp_dim` wide).
        representation_size: if set, a Dense + tanh "pre_logits" layer of this width
            before the head, as in the original ImageNet-21k checkpoints.
        include_top: False drops the head and returns the pooled features.
        include_preprocessing: True normalises 0..255 pixels inside the model, to
            (pixel / 255 - image_mean) / image_std, by default [-1, 1]; False passes the
            inputs through unchanged.
        image_mean, image_std: per-channel mean and std in 0..1 units (one value, or one
            per channel), e.g. ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) for
            DeiT and DINOv2; None is 0.5 / 0.5, the originals'.
        dropout_rate, attention_dropout_rate, drop_path_rate: regularisation; drop path
            grows linearly with depth up to `drop_path_rate` in the last block.
        layer_norm_epsilon: 1e-6 as in the original (Flax); Hugging Face uses 1e-12.
        gelu_approximate: True for the tanh approximation (the original Flax models),
            False for exact (erf) GELU (timm and Hugging Face); used when
            `mlp_activation` is None.
        mlp_activation: "gelu", "gelu_tanh" or "quick_gelu" (OpenAI CLIP), or None.
        class_token_position: False gives the position embedding no slot for the class
            token (DeiT III, big_vision): positions are added to the patch tokens only.
        num_register_tokens: learned register tokens after the class token (DINOv2 with
            registers); they get no position and pooling drops them.
        pre_norm: a LayerNormalization ("pre_norm") before the first block (CLIP).
        pooled_norm: with pooling "gap", the final LayerNormalization normalises the pooled vector
            instead of the tokens (timm's `fc_norm`).
        layer_scale_init: if set, a learned per-channel scale on both residual branches
            of every block, initialised to this value (DeiT III, DINOv2).
        distillation_token: DeiT's distillation token after the class token, with its own
            position and its own head ("head_dist"); the model returns the average of the
            two heads' logits, as the original does at inference.
        distillation_head: False keeps the distillation token but gives it no head: the
            model reads out the class token only (`DeiTForImageClassification`).
        classifier_activation: activation of the head, e.g. "softmax"; None for logits.
        dtype: dtype policy of every layer; None follows the global policy.
    """

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        hidden_dim=768,
        num_layers=12,
        num_heads=12,
        mlp_dim=3072,
        num_classes=1000,
        num_channels=3,
        pooling="token",
        representation_size=None,
        include_top=True,
        include_preprocessing=True,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        gelu_approximate=True,
        classifier_activation=None,
        mlp_activation=None,
        class_token_position=True,
        num_register_tokens=0,
        pre_norm=False,
        pooled_norm=False,
        layer_scale_init=None,
        distillation_token=False,
        distillation_head=True,
        image_mean=None,
        image_std=None,
        dtype=None,
        name="vit",
        **kwargs,
    ):
        arguments.check_keyword_arguments(type(self), kwargs)
        image_size = arguments.pair(image_size, "image_size")
        patch_size = arguments.pair(patch_size, "patch_size")
        arguments.check_positive(
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            num_classes=num_classes,
            num_channels=num_channels,
        )
        if representation_size is not None:
            arguments.check_positive(representation_size=representation_size)
        arguments.check_rate(
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=drop_path_rate,
        )
        arguments.check_epsilon(layer_norm_epsilon)
        if image_size[0] % patch_size[0] or image_size[1] % patch_size[1]:
            raise ValueError(
                f"image_size {image_size} must be divisible by patch_size {patch_size}."
            )
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})."
            )
        if pooling not in ("token", "gap", "map"):
            raise ValueError(f"pooling must be 'token', 'gap' or 'map', got {pooling!r}.")
        if not arguments.is_int(num_register_tokens) or num_register_tokens < 0:
            raise ValueError(
                f"num_register_tokens must be an integer >= 0, got {num_register_tokens!r}.")
        if pooled_norm and pooling != "gap":
            raise ValueError("pooled_norm=True needs pooling='gap' (timm's fc_norm).")
        if layer_scale_init is not None:
            arguments.check_number(layer_scale_init=layer_scale_init)
        if distillation_token and (pooling != "token" or not class_token_position
                                   or num_register_tokens):
            raise ValueError("distillation_token=True needs pooling='token', a class-token "
                             "position and no register tokens (DeiT's layout).")
        if not isinstance(distillation_head, bool) or (not distillation_head and not distillation_token):
            raise ValueError("distillation_head must be True or False, and False only with "
                             f"distillation_token=True; got {distillation_head!r}.")
        distribution.check_active_distribution(num_heads=num_heads, mlp_dim=mlp_dim)
        mean, std = arguments.normalization(image_mean, image_std, num_channels)
        grid_size = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None

        images = keras.Input(shape=(*image_size, num_channels), name="images")
        x = images
        if include_preprocessing:
            x = arguments.rescaling(mean, std, policy)(x)
        x = vit_layers.PatchEmbedding(
            patch_size, hidden_dim, dtype=policy, name="patch_embedding"
        )(x)
        positioned_prefix = int(pooling == "token" and class_token_position)
        if positioned_prefix:
            x = vit_layers.ClassToken(dtype=policy, name="class_token")(x)
        if distillation_token:
            x = vit_layers.DistillationToken(dtype=policy, name="distillation_token")(x)
            positioned_prefix = 2
        x = vit_layers.PositionEmbedding(
            grid_size,
            num_prefix_tokens=positioned_prefix,
            dtype=policy,
            name="position_embedding",
        )(x)
        if pooling == "token" and not positioned_prefix:
            x = vit_layers.ClassToken(dtype=policy, name="class_token")(x)
        if num_register_tokens:
            x = vit_layers.RegisterTokens(
                num_register_tokens, insert_at=int(pooling == "token"), dtype=policy,
                name="register_tokens")(x)
        x = keras.layers.Dropout(dropout_rate, dtype=policy, name="embedding_dropout")(x)
        if pre_norm:
            x = LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=policy, name="pre_norm")(x)
        for i in range(num_layers):
            x = vit_layers.TransformerEncoderBlock(
                hidden_dim,
                num_heads,
                mlp_dim,
                dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate,
                drop_path_rate=drop_path_rate * i / max(num_layers - 1, 1),
                layer_norm_epsilon=layer_norm_epsilon,
                mlp_activation=block_activation(mlp_activation, gelu_approximate),
                layer_scale_init=layer_scale_init,
                dtype=policy,
                name=f"encoder_block_{i}",
            )(x)
        final_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy,
            name="pooled_norm" if pooled_norm else "encoder_norm")
        if not pooled_norm:
            x = final_norm(x)
        tokens = x
        if pooling == "map":
            x = vit_layers.AttentionPooling(
                num_heads, mlp_dim, layer_norm_epsilon=layer_norm_epsilon,
                mlp_activation=block_activation(mlp_activation, gelu_approximate),
                dtype=policy, name="pooling")(x)
        else:
            x = vit_layers.TokenPooling(
                pooling, num_prefix_tokens=num_register_tokens, dtype=policy, name="pooling")(x)
        if pooled_norm:
            x = final_norm(x)
        if representation_size is not None:
            x = keras.layers.Dense(
                representation_size,
                activation="tanh",
                kernel_initializer="lecun_normal",
                dtype=policy,
                name="pre_logits",
            )(x)
        if include_top:
            head = dict(activation=classifier_activation, kernel_initializer="zeros",
                        dtype=self._head_policy(policy))
            x = keras.layers.Dense(num_classes, name="head", **head)(x)
            if distillation_token and distillation_head:
                dist = vit_layers.TokenPooling(
                    "distillation", dtype=policy, name="distillation_pooling")(tokens)
                dist = keras.layers.Dense(num_classes, name="head_dist", **head)(dist)
                x = keras.layers.Average(dtype=head["dtype"], name="distilled_logits")([x, dist])
        super().__init__(inputs=images, outputs=x, name=name, **kwargs)

        self.image_size = image_size
        self.patch_size = patch_size
        self.grid_size = grid_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.num_classes = num_classes
        self.num_channels = num_channels
        self.pooling = pooling
        self.representation_size = representation_size
        self.include_top = include_top
        self.include_preprocessing = include_preprocessing
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.gelu_approximate = gelu_approximate
        self.classifier_activation = classifier_activation
        self.mlp_activation = mlp_activation
        self.class_token_position = class_token_position
        self.num_register_tokens = num_register_tokens
        self.pre_norm = pre_norm
        self.pooled_norm = pooled_norm
        self.layer_scale_init = layer_scale_init
        self.distillation_token = distillation_token
        self.distillation_head = distillation_head
        self.image_mean = image_mean if image_mean is None else list(mean)
        self.image_std = image_std if image_std is None else list(std)
        self._config_dtype = None if policy is None else policy.name

    @staticmethod
    def _head_policy(policy):
        """The head computes in float32 under a mixed policy, so logits stay precise."""
        policy = policy or keras.config.dtype_policy()
        return "float32" if policy.compute_dtype != policy.variable_dtype else policy

    def compile(self, *args, jit_compile="auto", **kwargs):
        """`keras.Model.compile`, with `jit_compile="auto"` resolved by
        `keras_vit.jit.resolve_jit_compile`: XLA also for TensorFlow on a CPU, where Keras
        turns it off (see benchmarks/RESULTS.md). Pass `jit_compile=False` to keep
        TensorFlow's graph mode.
        """
        resolved = resolve_jit_compile(jit_compile, self, kwargs.get("run_eagerly", False))
        super().compile(*args, jit_compile=resolved, **kwargs)
        self._requested_jit_compile = jit_compile

    def get_compile_config(self):
        """The compile arguments, with `jit_compile` as asked for ("auto" stays "auto", so a
        model saved under TensorFlow does not turn on torch.compile when loaded in PyTorch)."""
        config = super().get_compile_config()
        if config and getattr(self, "_requested_jit_compile", None) == "auto":
            config["jit_compile"] = "auto"
        return config

    def compile_from_config(self, config):
        """Compiles a loaded model as it was saved (Keras skips this for a custom `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def save(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save`, written atomically (`keras_vit.atomic`): a kill while saving
        leaves the old file or the new one, never a partial one."""
        with atomic.replacing(filepath, overwrite) as path:
            super().save(path, **kwargs)

    def get_config(self):
        return {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "num_classes": self.num_classes,
            "num_channels": self.num_channels,
            "pooling": self.pooling,
            "representation_size": self.representation_size,
            "include_top": self.include_top,
            "include_preprocessing": self.include_preprocessing,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "gelu_approximate": self.gelu_approximate,
            "classifier_activation": self.classifier_activation,
            "mlp_activation": self.mlp_activation,
            "class_token_position": self.class_token_position,
            "num_register_tokens": self.num_register_tokens,
            "pre_norm": self.pre_norm,
            "pooled_norm": self.pooled_norm,
            "layer_scale_init": self.layer_scale_init,
            "distillation_token": self.distillation_token,
            "distillation_head": self.distillation_head,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "dtype": self._config_dtype,
            "name": self.name,
            "trainable": self.trainable,
            **quantization.config_entry(self),
        }

    @classmethod
    def from_config(cls, config):
        return quantization.from_config(cls, config)

    def quantize(self, mode=None, config=None, filters=None):
        """`keras.Model.quantize`: see `keras_vit.quantization.quantize`."""
        quantization.quantize(self, mode, config=config, filters=filters)

    @classmethod
    def get_layout_map(cls, device_mesh, model_parallel_dim_name="model",
                       data_parallel_dim_name="batch", config=None):
        """A `keras.distribution.LayoutMap` sharding a ViT Megatron-style over the model
        axis of `device_mesh`: see `keras_vit.distribution.layout_map`."""
        return distribution.layout_map(
            device_mesh, model_parallel_dim_name, data_parallel_dim_name, config=config)

    @classmethod
    def from_preset(cls, preset, weights="default", **overrides):
        """Builds a ViT from a preset name or a checkpoint file.

        Args:
            preset: a name from `keras_vit.presets.list_presets()` (e.g. "b16"), or the
                path or URL of a checkpoint file (vit_jax / big_vision `.npz`, timm or
                Hugging Face `.safetensors`, a keras_vit `.keras` file) or an
                `hf://owner/repo[@revision]` Hugging Face Hub handle, whose architecture
                is read from the file.
            weights: "default" for the preset's default pretrained weights, a weights name
                of that preset, a local path or URL of a checkpoint, or None for a randomly
                initialised model.
            **overrides: constructor arguments to change, e.g. `num_classes=10`
                (a new zero-initialised head), `image_size=384` (the position embedding
                is resampled), `include_top=False`, `drop_path_rate=0.1`,
                `trainable=False`.
        """
        from keras_vit import preset_loading

        arguments.check_keyword_arguments(cls, overrides)
        return preset_loading.build_from_preset(cls, preset, weights=weights, **overrides)
