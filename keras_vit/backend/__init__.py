"""Code that depends on one backend or on the private APIs of a library, kept in one place.

`private_apis`: every private API of Keras, TensorFlow or LiteRT that keras_vit uses, each
with why and a test (tests/test_private_apis.py) that fails loudly when a release changes it.
`jax_attention`, `jax_gradient`: the JAX-only fast attention path and materialised block
gradient, imported only when JAX is the backend.
"""
