"""SigLIP 2 NaFlex: one image at its own aspect ratio, within a patch budget.

transformers' `Siglip2VisionModel` takes each image resized to a patch grid (h, w) that
keeps its aspect ratio within `max_num_patches`, and resizes its square position table to
(h, w) (antialiased bilinear). keras_vit builds the same model at that image size:

    size = naflex_size(image.shape[:2], patch_size=16, max_num_patches=256)
    model = ViT.from_preset(path, image_size=size)  # the table resized as transformers does
    image = keras.ops.image.resize(image, size, antialias=True)
    features = model(image[None])                   # transformers' pooler_output

transformers' processor resizes with PIL or torchvision (bilinear, antialiased): close to
`keras.ops.image.resize`, not bit-equal. Given the same resized image, the model matches:
in transformers' padded batch (`pixel_attention_mask`, `spatial_shapes`) the padding is
masked, so each image gets the output it has alone. Models of one checkpoint at several
sizes share its file but not their variables: build one per size that occurs.
"""

import math


def naflex_size(image_hw, patch_size=16, max_num_patches=256, eps=1e-5):
    """(H, W) in pixels, multiples of `patch_size`, that transformers' SigLIP 2 image
    processor resizes an image of (height, width) `image_hw` to: the largest scale (found
    by bisection, as `get_image_size_for_max_num_patches` does) whose patch grid, each side
    rounded up and at least one patch, holds at most `max_num_patches` patches."""
    height, width = image_hw
    for name, value in (("image height", height), ("image width", width),
                        ("patch_size", patch_size), ("max_num_patches", max_num_patches)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    height, width = int(height), int(width)

    def scaled(scale, size):
        return max(patch_size, math.ceil(size * scale / patch_size) * patch_size)

    low, high = eps / 10, 100.0
    while high - low >= eps:
        scale = (low + high) / 2
        patches = (scaled(scale, height) // patch_size) * (scaled(scale, width) // patch_size)
        low, high = (scale, high) if patches <= max_num_patches else (low, scale)
    return scaled(low, height), scaled(low, width)
