"""The materialised block-output gradient of JAX training (`keras_vit.layers`): JAX only."""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def materialized_gradient(x):
    """Identity whose gradient goes through a matmul by the identity matrix.

    XLA's CPU compiler fuses the residual stream's gradient (elementwise LayerNorm-backward
    terms added up block after block) into every block's weight-gradient copies, so each
    block recomputes the chain of all the blocks after it: quadratic in depth, about 40 % of
    a ViT-Ti/16 JAX training step. A matmul is not fused into its consumers, so the gradient
    is computed once per block (the step time it saves: docs/speed.md).
    `keras_vit.layers.materializes_gradient` says where it applies.
    """
    return x


def _forward(x):
    return x, None


def _backward(_, upstream):
    return (jnp.matmul(upstream, jnp.eye(upstream.shape[-1], dtype=upstream.dtype)),)


materialized_gradient.defvjp(_forward, _backward)
