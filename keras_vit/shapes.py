"""Every variable of a ViT and its shape, from its architecture (a `ViTConfig`) alone:
what the checkpoint converters fill, what `.keras` files are checked against, and what
`keras_vit.weights.loading` assigns, without building the model."""


def variable_shapes(config):
    """{variable path (`v.path` of the `ViT` built from `config`): shape}, in the model's
    order."""
    d, heads, mlp = config.hidden_dim, config.num_heads, config.mlp_dim
    ph, pw = config.patch_size

    def norm(name, width):
        """A norm's variables: gamma and beta (LayerNorm) or scale (RMSNorm)."""
        if config.norm_type == "rms_norm":
            return {f"{name}/scale": (width,)}
        return {f"{name}/gamma": (width,), f"{name}/beta": (width,)}

    shapes = {"patch_embedding/projection/kernel": (ph, pw, config.num_channels, d)}
    if config.patch_bias:
        shapes["patch_embedding/projection/bias"] = (d,)
    if config.patch_norm:
        shapes.update(norm("patch_embedding/norm", d))
    if config.has_class_token:
        shapes["class_token/token"] = (1, 1, d)
    if config.distillation_token:
        shapes["distillation_token/tokens"] = (1, 1, d)
    positioned = len(config.positioned_prefix_tokens)
    if config.position_embedding == "learned":
        shapes["position_embedding/embedding"] = (1, positioned + config.num_patches, d)
    elif config.position_embedding == "learned_2d":
        shapes["position_embedding/row_embedding"] = (config.grid_size[0], d // 2)
        shapes["position_embedding/column_embedding"] = (config.grid_size[1], d - d // 2)
        if positioned:
            shapes["position_embedding/prefix_embedding"] = (positioned, d)
    if config.num_register_tokens:
        shapes["register_tokens/tokens"] = (1, config.num_register_tokens, d)
    if config.pre_norm:
        shapes.update(norm("pre_norm", d))
    biases = {part: getattr(config, f"{part}_bias")
              for part in ("query", "key", "value", "output")}
    for i in range(config.num_layers):
        block = f"encoder_block_{i}/"
        if config.layer_scale_init is not None:
            shapes[block + "attention_scale"] = shapes[block + "mlp_scale"] = (d,)
        shapes.update(norm(block + "attention_norm", d))
        shapes.update(_attention_shapes(block + "attention/", d, heads, **biases))
        shapes.update(norm(block + "mlp_norm", d))
        shapes.update(_mlp_shapes(block, d, mlp, config.mlp_bias, config.mlp_type == "swiglu"))
        if config.mlp_inner_norm:
            shapes.update(norm(block + "mlp_inner_norm", mlp))
    if not config.pooled_norm:
        shapes.update(norm("encoder_norm", d))
    if config.pooling in ("map", "probe"):
        shapes["pooling/probe"] = (1, 1, d)
        pooling_heads = config.pooling_heads or heads
        if config.pooling == "map":
            shapes.update(_attention_shapes("pooling/attention/", d, pooling_heads))
            shapes.update(norm("pooling/norm", d))
            shapes.update(_mlp_shapes("pooling/", d, mlp))
        else:  # no query projection; key and value biases where the blocks' have them
            attention = _attention_shapes("pooling/attention/", d, pooling_heads,
                                          key=config.key_bias, value=config.value_bias)
            shapes.update({k: v for k, v in attention.items() if "/query/" not in k})
    if config.pooled_norm:
        shapes.update(norm("pooled_norm", d))
    width = config.representation_size or d
    if config.representation_size is not None:
        shapes.update(_dense_shapes("pre_logits", d, width))
    if config.include_top:
        shapes.update(_dense_shapes("head", width, config.num_classes))
    if config.has_distillation_head:
        shapes.update(_dense_shapes("head_dist", width, config.num_classes))
    return shapes


def _dense_shapes(name, inputs, outputs, bias=True):
    return {f"{name}/kernel": (inputs, outputs), **({f"{name}/bias": (outputs,)} if bias else {})}


def _attention_shapes(prefix, width, heads, query=True, key=True, value=True, output=True):
    """The query, key and value kernels (D, heads, head_dim) and biases (heads, head_dim),
    the output kernel (heads, head_dim, D) and bias (D,); a False flag drops that bias."""
    head_dim = width // heads
    shapes = {}
    for part, bias in (("query", query), ("key", key), ("value", value)):
        shapes[f"{prefix}{part}/kernel"] = (width, heads, head_dim)
        if bias:
            shapes[f"{prefix}{part}/bias"] = (heads, head_dim)
    shapes[f"{prefix}attention_output/kernel"] = (heads, head_dim, width)
    if output:
        shapes[f"{prefix}attention_output/bias"] = (width,)
    return shapes


def _mlp_shapes(prefix, width, mlp, bias=True, gated=False):
    """mlp_dense_1 (D, mlp), mlp_gate (the same, SwiGLU) and mlp_dense_2 (mlp, D)."""
    shapes = _dense_shapes(prefix + "mlp_dense_1", width, mlp, bias)
    if gated:
        shapes.update(_dense_shapes(prefix + "mlp_gate", width, mlp, bias))
    return {**shapes, **_dense_shapes(prefix + "mlp_dense_2", mlp, width, bias)}
