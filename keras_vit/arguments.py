"""Checks of `keras_vit.ViT`'s constructor arguments, each a ValueError that names the
argument and what it must be, and the preprocessing layer the mean / std arguments give."""

import difflib
import math
import numbers

import keras


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def pair(value, name):
    """Returns `value` as a (height, width) pair of positive ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(
        value, (list, tuple)) else ()
    if len(pair) != 2 or not all(is_int(v) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {value!r}.")
    return pair


def check_positive(**values):
    for name, value in values.items():
        if not is_int(value) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_rate(**values):
    """A TypeError unless each value is a real number (not a bool), a ValueError unless it
    lies in [0, 1)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number in [0, 1), got {value!r} "
                            f"({type(value).__name__}).")
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}.")


def check_integer(value, name, minimum=1):
    """`value` as an int: a TypeError unless it is an integer (a NumPy one too; not a bool
    nor a float such as 8.0), a ValueError below `minimum`; each names `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} "
                        f"({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def optional_count(value, name):
    """None, or `value` checked to be a positive integer (not 8.0, not a bool)."""
    return None if value is None else check_integer(value, name)


def check_bool(**values):
    """A TypeError unless each value is True or False."""
    for name, value in values.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")


def check_number(**values):
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")


def normalization(mean, std, channels):
    """Per-channel (mean, std) tuples in 0..1 units; None means 0.5 for each."""
    pairs = []
    for name, value in (("image_mean", mean), ("image_std", std)):
        values = [0.5] if value is None else [value] if isinstance(value, (int, float)) else list(value)
        if len(values) == 1:
            values = values * channels
        if len(values) != channels:
            raise ValueError(f"{name} needs 1 or {channels} values (num_channels), got {value!r}.")
        check_number(**{f"{name}[{i}]": v for i, v in enumerate(values)})
        pairs.append(tuple(float(v) for v in values))
    if not all(s > 0 for s in pairs[1]):
        raise ValueError(f"image_std must be positive, got {std!r}.")
    check_normalization(*pairs)
    return pairs


# Plausible per-channel normalisations, in 0..1 pixel units: a mean of pixels lies in
# [0, 1]; ImageNet's std (0.229), CLIP's (0.269), 0.5 and 1 (no scaling) lie in STD_RANGE.
MEAN_RANGE = (0.0, 1.0)
STD_RANGE = (0.01, 1.0)


def check_normalization(mean, std, mean_name="image_mean", std_name="image_std"):
    """Raises a ValueError naming the field (`mean_name`, `std_name`: the argument, or the
    file and its field) unless every mean lies in MEAN_RANGE and every std in STD_RANGE:
    a tiny std (1e-300) gives infinite or NaN outputs, and a mean or std in 0..255 units
    (123.7, 58.4) makes every image give nearly the same output."""
    for name, values, (low, high) in ((mean_name, mean, MEAN_RANGE), (std_name, std, STD_RANGE)):
        values = [float(v) for v in values]
        if all(low <= v <= high for v in values):
            continue
        if any(v > high for v in values):
            hint = " Values above 1 look like 0..255 units: divide them by 255."
        elif name == std_name and all(v > 0 for v in values):
            hint = f" A std below {low} scales pixels by more than {1 / low:g}x."
        else:
            hint = ""
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}] (pixels in 0..1 units), got "
                         f"{values}.{hint}")


def rescaling(mean, std, policy):
    """0..255 pixels -> (pixel / 255 - mean) / std, as one `Rescaling` layer."""
    if set(mean) == {0.5} and set(std) == {0.5}:
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, dtype=policy, name="rescaling")
    return keras.layers.Rescaling(
        [1.0 / (255.0 * s) for s in std], offset=[-m / s for m, s in zip(mean, std)],
        dtype=policy, name="rescaling")


def check_epsilon(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"layer_norm_epsilon must be a positive number, got {value!r}.")


def check_keyword_arguments(cls, kwargs, allowed=("trainable",)):
    """Raises a ValueError naming keyword arguments `cls` does not take (with the closest
    valid name), as Keras layers do: its `ARGUMENTS`, and `allowed`, those passed on to
    `keras.Model`."""
    valid = list(cls.ARGUMENTS)
    unknown = [k for k in kwargs if k not in valid and k not in allowed]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, valid, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"Unrecognized keyword argument(s) passed to {cls.__name__}: {', '.join(hints)}. "
            f"Valid arguments: {', '.join(valid)}."
        )
