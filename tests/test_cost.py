"""`keras_vit.cost.forward_flops` against PyTorch's own FLOP counter on the built model."""

import keras
import numpy as np
import pytest

from keras_vit import ViT
from keras_vit.cost import forward_flops

CONFIGS = [
    dict(image_size=28, patch_size=4, hidden_dim=64, num_layers=2, num_heads=4, mlp_dim=128,
         num_classes=10, num_channels=1),
    dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=1, num_heads=2, mlp_dim=64,
         num_classes=5, pooling="map", representation_size=16),
    dict(image_size=(32, 16), patch_size=8, hidden_dim=32, num_layers=1, num_heads=2, mlp_dim=48,
         num_classes=5, pooling="gap", num_register_tokens=2),
    dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=1, num_heads=2, mlp_dim=64,
         num_classes=5, distillation_token=True),
    dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=1, num_heads=2, mlp_dim=64,
         include_top=False),
    dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=1, num_heads=2, mlp_dim=64,
         num_classes=5, pooling="probe", class_token=True),
]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's FLOP counter")
@pytest.mark.parametrize("config", CONFIGS)
def test_forward_flops_equal_torch_flop_counter(config):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = ViT(**config)
    images = np.zeros((1, *model.input_shape[1:]), "float32")
    # The math backend computes attention as matmuls, which the counter counts.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(images)
    assert forward_flops(config) == counter.get_total_flops()
    assert forward_flops(model.architecture) == counter.get_total_flops()
