"""What a forward pass costs: `forward_flops(config)`, counted from the architecture.

FLOPs count 2 per multiply-add of the matrix products (patch embedding, attention
projections and products, MLP, pooling, head); element-wise work (norms, softmax,
activations, additions) is left out, as in the ViT paper's and timm's counts.
"""

from keras_vit.architecture import ViTConfig


def forward_flops(config):
    """FLOPs of one image's forward pass through a ViT built from `config` (a `ViTConfig`
    or a dict of its fields)."""
    if isinstance(config, dict):
        config = ViTConfig(**config)
    d, m, n = config.hidden_dim, config.mlp_dim, config.sequence_length
    ph, pw = config.patch_size
    macs = config.num_patches * ph * pw * config.num_channels * d  # patch embedding
    block = 4 * n * d * d + 2 * n * n * d + 2 * n * d * m  # q, k, v, out; QK^T, AV; MLP
    macs += config.num_layers * block
    if config.pooling == "map":  # one probe attending to the n tokens, then an MLP
        macs += d * d + 2 * n * d * d + 2 * n * d + d * d + 2 * d * m
    elif config.pooling == "probe":  # the same attention without the query projection
        macs += 2 * n * d * d + 2 * n * d + d * d
    width = config.representation_size or d
    if config.representation_size is not None:
        macs += d * width
    if config.include_top:
        macs += width * config.num_classes * (2 if config.has_distillation_head else 1)
    return 2 * macs
