"""SigLIP 2 NaFlex: one image at its own aspect ratio, within a patch budget.

transformers' `Siglip2VisionModel` takes each image resized to a patch grid (h, w) that
keeps its aspect ratio within `max_num_patches`, and resizes its square position table to
(h, w) (antialiased bilinear). keras_vit builds the same model at that image size;
`NaFlexFeatures` does it in one call per image:

    encoder = NaFlexFeatures("siglip2_b16_naflex", max_num_patches=256)
    features = encoder(image)          # (H, W, 3) pixels 0..255, any size -> (768,)

which is, spelled out:

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

import collections
import math

import keras
import numpy as np

from keras_vit.model import ViT


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


class NaFlexFeatures:
    """A NaFlex checkpoint's features for images of any size and aspect ratio.

    Each image is resized (bilinear, antialiased) to its `naflex_size` and run through the
    checkpoint's model built at that size (position table resized as transformers does).
    Models are kept per size, the `max_models` most recently used; each holds its own copy
    of the weights.

    Args:
        preset: what `ViT.from_preset` takes (a preset name, file, folder or hf:// handle).
        max_num_patches: the patch budget (transformers' processor's `max_num_patches`).
        max_models: how many sizes' models to keep.
        **overrides: further `ViT.from_preset` arguments (not `image_size`).
    """

    def __init__(self, preset, max_num_patches=256, max_models=4, **overrides):
        for name, value in (("max_num_patches", max_num_patches), ("max_models", max_models)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if "image_size" in overrides:
            raise ValueError("NaFlexFeatures picks each image's size itself: leave out "
                             "image_size.")
        self._load = lambda size: ViT.from_preset(preset, image_size=size, **overrides)
        first = ViT.from_preset(preset, **overrides)  # at the checkpoint's own size
        self.patch_size = first.patch_size
        if self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"NaFlex needs square patches, the checkpoint has {self.patch_size}.")
        self.max_num_patches, self.max_models = max_num_patches, max_models
        self._models = collections.OrderedDict({tuple(first.image_size): first})

    @property
    def sizes(self):
        """The sizes whose models are kept, least recently used first."""
        return list(self._models)

    def size_of(self, image_hw):
        """The (H, W) an image of (height, width) `image_hw` is resized to."""
        return naflex_size(image_hw, self.patch_size[0], self.max_num_patches)

    def model_for(self, size):
        """The model built at `size` (H, W), from the cache or loaded."""
        size = tuple(size)
        if size in self._models:
            self._models.move_to_end(size)
        else:
            self._models[size] = self._load(size)
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
        return self._models[size]

    def __call__(self, image):
        """Features of one (H, W, C) image of pixels 0..255: a (features,) NumPy array."""
        image = np.asarray(image)
        if image.ndim != 3 or min(image.shape) < 1:
            raise ValueError(f"Expected one (height, width, channels) image, got shape "
                             f"{image.shape}.")
        size = self.size_of(image.shape[:2])
        pixels = image.astype("float32")
        if tuple(image.shape[:2]) != size:
            pixels = keras.ops.image.resize(pixels, size, interpolation="bilinear",
                                            antialias=True)
        return keras.ops.convert_to_numpy(self.model_for(size)(pixels[None]))[0]
