"""The Vision Transformer as a functional `keras.Model`."""

import keras

from keras_vit import arguments, atomic
from keras_vit import preset_loading, sharding
from keras_vit.architecture import ViTConfig, resolve_mlp_activation
from keras_vit import inputs as vit_inputs
from keras_vit import layers as vit_layers
from keras_vit import quantization
from keras_vit.rope import rope_options
from keras_vit.jit import resolve_jit_compile
from keras_vit.positions import POSITION_LAYERS
from keras_vit.norm import normalization


@keras.saving.register_keras_serializable(package="keras_vit")
class ViT(vit_inputs.CheckedModel):
    """Vision Transformer (Dosovitskiy et al., 2021), the original architecture and its
    variants (DeiT, DeiT III, DINOv2, CLIP, SigLIP, MAE).

    images (B, H, W, C), pixel values 0..255 -> logits (B, num_classes), or pooled
    features (B, representation_size or hidden_dim) with `include_top=False`.

    Args:
        config: a `keras_vit.ViTConfig`; keyword arguments named like its fields (see
            its docstring) build one, or change those of `config`.
        gelu_approximate: the older way to say the MLP activation (used when
            `mlp_activation` is not given): True for "gelu_tanh", False for "gelu".
        dtype: dtype policy of every layer; None follows the global policy.
        name: the model's name.
    """

    # The keyword arguments the constructor takes (besides keras.Model's "trainable").
    ARGUMENTS = ("config", *ViTConfig.field_names(), "gelu_approximate", "dtype", "name")

    def __init__(self, config=None, *, gelu_approximate=None, dtype=None, name="vit", **kwargs):
        changes = {key: kwargs.pop(key) for key in list(kwargs) if key in ViTConfig.field_names()}
        arguments.check_keyword_arguments(type(self), kwargs)
        if gelu_approximate is not None or "mlp_activation" in changes:
            changes["mlp_activation"] = resolve_mlp_activation(
                changes.get("mlp_activation"), gelu_approximate is not False)
        if config is not None and not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a keras_vit.ViTConfig, got {type(config).__name__}.")
        config = ViTConfig(**changes) if config is None else config.replace(**changes)
        sharding.check_active_distribution(num_heads=config.num_heads, mlp_dim=config.mlp_dim)
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None
        images = keras.Input(shape=(*config.image_size, config.num_channels), name="images")
        super().__init__(inputs=images, outputs=_outputs(config, images, policy), name=name,
                         **kwargs)
        self.architecture = config
        for field in ViTConfig.field_names():
            setattr(self, field, getattr(config, field))
        self.grid_size = config.grid_size
        self.gelu_approximate = config.mlp_activation == "gelu_tanh"
        self.image_mean = None if config.image_mean is None else list(config.image_mean)
        self.image_std = None if config.image_std is None else list(config.image_std)
        self._config_dtype = None if policy is None else policy.name

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
            "position_embedding": self.position_embedding,
            "rope": self.rope,
            "rope_theta": self.rope_theta,
            "rope_rotate_half": self.rope_rotate_half,
            "rope_reference_grid": self.rope_reference_grid,
            "rope_grid_offset": self.rope_grid_offset,
            "rope_grid_indexing": self.rope_grid_indexing,
            "pooling_heads": self.pooling_heads,
            "class_token": self.class_token,
            **{name: getattr(self, name) for name in BLOCK_OPTION_FIELDS},
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
        axis of `device_mesh`: see `keras_vit.sharding.layout_map`."""
        return sharding.layout_map(
            device_mesh, model_parallel_dim_name, data_parallel_dim_name, config=config)

    @classmethod
    def from_preset(cls, preset, weights="default", **overrides):
        """Builds a ViT from a preset name or a checkpoint file.

        Args:
            preset: a name from `keras_vit.presets.list_presets()` (e.g. "b16"), or the
                path or URL of a checkpoint file (vit_jax / big_vision `.npz`, timm or
                Hugging Face `.safetensors`, a keras_vit `.keras` file), a folder holding
                one (`model.safetensors` + `config.json`, as `hf download` and
                `save_pretrained` leave it) or an `hf://owner/repo[@revision]` Hugging
                Face Hub handle, whose architecture is read from the file. A file
                without a classification head gives the features model
                (`include_top=False`) unless `num_classes=` asks for a new head.
            weights: "default" for the preset's default pretrained weights, a weights name
                of that preset, a local path or URL of a checkpoint, or None for a randomly
                initialised model.
            **overrides: constructor arguments to change, e.g. `num_classes=10`
                (a new zero-initialised head), `image_size=384` (the position embedding
                is resampled), `include_top=False`, `drop_path_rate=0.1`,
                `trainable=False`.
        """
        arguments.check_keyword_arguments(cls, overrides)
        return preset_loading.build_from_preset(cls, preset, weights=weights, **overrides)


# The block options of issue 24 (norm, MLP form, biases), in ViTConfig's order.
BLOCK_OPTION_FIELDS = ("norm_type", "mlp_type", "mlp_inner_norm", "query_bias", "key_bias",
                       "value_bias", "output_bias", "mlp_bias", "patch_bias", "patch_norm")


def _head_policy(policy):
    """The head computes in float32 under a mixed policy, so logits stay precise."""
    policy = policy or keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else policy


def _outputs(config, images, policy):
    """The ViT of `config` applied to the `images` input: its logits or pooled features."""
    x = images
    if config.include_preprocessing:
        x = arguments.rescaling(*config.normalization, policy)(x)
    x = vit_layers.PatchEmbedding(
        config.patch_size, config.hidden_dim, use_bias=config.patch_bias,
        norm_type=config.norm_type if config.patch_norm else None,
        norm_epsilon=config.layer_norm_epsilon, dtype=policy, name="patch_embedding")(x)
    # The prefix tokens in sequence order: those with a position before the position
    # embedding, the others (a class token without one, registers) after it.
    prefix_layers = {}
    if config.has_class_token:
        prefix_layers["class"] = vit_layers.ClassToken(dtype=policy, name="class_token")
    if config.distillation_token:
        prefix_layers["distillation"] = vit_layers.DistillationToken(
            dtype=policy, name="distillation_token")
    if config.num_register_tokens:
        prefix_layers["register"] = vit_layers.RegisterTokens(
            config.num_register_tokens, insert_at=int(config.has_class_token), dtype=policy,
            name="register_tokens")
    positioned = config.positioned_prefix_tokens
    for token in positioned:
        x = prefix_layers[token](x)
    if config.position_embedding != "none":
        layer = POSITION_LAYERS[config.position_embedding]
        x = layer(config.grid_size, num_prefix_tokens=len(positioned), dtype=policy,
                  name="position_embedding")(x)
    for token, layer in prefix_layers.items():
        if token not in positioned:
            x = layer(x)
    x = keras.layers.Dropout(config.dropout_rate, dtype=policy, name="embedding_dropout")(x)
    if config.pre_norm:
        x = normalization(config.norm_type, config.layer_norm_epsilon, dtype=policy,
                          name="pre_norm")(x)
    rope = rope_options(config)
    for i in range(config.num_layers):
        x = vit_layers.TransformerEncoderBlock(
            config.hidden_dim,
            config.num_heads,
            config.mlp_dim,
            dropout_rate=config.dropout_rate,
            attention_dropout_rate=config.attention_dropout_rate,
            drop_path_rate=config.drop_path_rate * i / max(config.num_layers - 1, 1),
            layer_norm_epsilon=config.layer_norm_epsilon,
            mlp_activation=config.mlp_activation,
            layer_scale_init=config.layer_scale_init,
            norm_type=config.norm_type,
            mlp_type=config.mlp_type,
            mlp_inner_norm=config.mlp_inner_norm,
            query_bias=config.query_bias,
            key_bias=config.key_bias,
            value_bias=config.value_bias,
            output_bias=config.output_bias,
            mlp_bias=config.mlp_bias,
            rope=rope,
            dtype=policy,
            name=f"encoder_block_{i}",
        )(x)
    if config.pooling == "map":
        pooling = vit_layers.AttentionPooling(
            config.pooling_heads or config.num_heads, config.mlp_dim,
            layer_norm_epsilon=config.layer_norm_epsilon, mlp_activation=config.mlp_activation,
            norm_type=config.norm_type, dtype=policy, name="pooling")
    elif config.pooling == "probe":
        pooling = vit_layers.ProbePooling(
            config.pooling_heads or config.num_heads, key_bias=config.key_bias,
            value_bias=config.value_bias, dtype=policy, name="pooling")
    else:
        pooling = vit_layers.TokenPooling(
            config.pooling, num_prefix_tokens=config.num_tokens_before_patches, dtype=policy,
            name="pooling")
    final_norm = normalization(
        config.norm_type, config.layer_norm_epsilon, dtype=policy, name=config.final_norm_name)
    # The final norm acts on the tokens, or with pooled_norm on the pooled vector.
    first, second = (pooling, final_norm) if config.pooled_norm else (final_norm, pooling)
    normed_tokens = first(x)  # (the pooled vector with pooled_norm, never distilled)
    x = second(normed_tokens)
    if config.representation_size is not None:
        x = keras.layers.Dense(config.representation_size, activation="tanh",
                               kernel_initializer="lecun_normal", dtype=policy,
                               name="pre_logits")(x)
    if config.include_top:
        head = dict(activation=config.classifier_activation, kernel_initializer="zeros",
                    dtype=_head_policy(policy))
        x = keras.layers.Dense(config.num_classes, name="head", **head)(x)
        if config.has_distillation_head:
            dist = vit_layers.TokenPooling(
                "distillation", dtype=policy, name="distillation_pooling")(normed_tokens)
            dist = keras.layers.Dense(config.num_classes, name="head_dist", **head)(dist)
            x = keras.layers.Average(dtype=head["dtype"], name="distilled_logits")([x, dist])
    return x
