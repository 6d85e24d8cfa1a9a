"""`ViT.from_preset`'s loading: a preset name (`keras_vit.presets`), a checkpoint file or
URL, or an `hf://owner/repo[@revision]` handle, to a built ViT."""

import os

from keras_vit import download, hub, presets
from keras_vit import weights as weights_lib

# Models trained by this project's recipes: the repository's saved_models/, installed with
# the package as keras_vit/saved_models/ (or the folder named by $KERAS_VIT_SAVED_MODELS).
_INSTALLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "saved_models")
_REPOSITORY = os.path.join(os.path.dirname(os.path.dirname(_INSTALLED)), "saved_models")
SAVED_MODELS = os.environ.get("KERAS_VIT_SAVED_MODELS") or (
    _INSTALLED if os.path.isdir(_INSTALLED) else _REPOSITORY)


def _is_url(value):
    return isinstance(value, str) and "://" in value


def _looks_like_file(value):
    return isinstance(value, (str, os.PathLike)) and (
        os.path.sep in str(value) or str(value).endswith((".npz", ".safetensors", ".keras"))
    )


def _fetch_url(url):
    """Downloads a checkpoint URL into the cache (for a `.safetensors` file, with the
    `config.json` beside it on the server, which a Hugging Face checkpoint needs)."""
    return download.download_checkpoint(url)


def _fetch_named(preset, name, spec):
    """Downloads a preset's named weights (and their config.json) into the cache, or
    returns the path of a shipped model."""
    if spec.get("file"):
        path = os.path.join(SAVED_MODELS, spec["file"])
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Preset {preset!r} loads {path}, which ships with keras_vit (the repository's "
                "saved_models/ folder): reinstall keras_vit, or set KERAS_VIT_SAVED_MODELS to "
                "that folder."
            )
        return path
    if _is_hub_handle(spec["url"]):
        return _fetch_remote(spec["url"])
    subdir = f"{preset}/{name}"
    if spec.get("config_url"):
        download.download(spec["config_url"], subdir=subdir)
    return download.download(
        spec["url"], subdir=subdir, sha256=spec.get("sha256"), size=spec.get("size")
    )


CHECKPOINT_SUFFIXES = (".safetensors", ".npz", ".keras")


def _local_file(path):
    """The checkpoint file at `path`, or in the folder `path` (the layout `hf download`,
    `save_pretrained` and timm's `save_for_hf` leave: `model.safetensors` beside its
    `config.json`; else the folder's one `.safetensors`, `.npz` or `.keras` file)."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        return _checkpoint_in_folder(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    return path


def _checkpoint_in_folder(folder):
    if os.path.isfile(os.path.join(folder, "model.safetensors")):
        return os.path.join(folder, "model.safetensors")
    names = sorted(os.listdir(folder))
    found = [n for n in names if n.endswith(CHECKPOINT_SUFFIXES)
             and os.path.isfile(os.path.join(folder, n))]
    if len(found) == 1:
        return os.path.join(folder, found[0])
    if not found:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") or "nothing"
        raise FileNotFoundError(
            f"No checkpoint in the folder {folder!r}: expected model.safetensors (with its "
            f"config.json) or one {', '.join(CHECKPOINT_SUFFIXES)} file; it holds {shown}.")
    raise ValueError(f"The folder {folder!r} holds several checkpoints ({', '.join(found)}) "
                     "and no model.safetensors: pass the path of the one to load.")


def _is_hub_handle(value):
    return isinstance(value, str) and value.startswith("hf://")


def _location(value, name, none=False):
    """`value` checked to be a str or os.PathLike (or None with `none`), its URL scheme in
    lower case (schemes are case-insensitive: HF://owner/repo is hf://owner/repo)."""
    if not isinstance(value, (str, os.PathLike)) and not (none and value is None):
        raise TypeError(
            f"{name} must be {'None or ' if none else ''}a str or os.PathLike: a preset name"
            f"{' or weights name' if none else ''}, a checkpoint path or URL, or an "
            f"hf://owner/repo handle; got {value!r} ({type(value).__name__}).")
    if _is_url(value):
        scheme, rest = value.split("://", 1)
        return f"{scheme.lower()}://{rest}"
    return value


def _fetch_remote(location):
    """Fetches a checkpoint URL, or an `hf://owner/repo[@revision]` handle through
    `keras_vit.hub` (the huggingface_hub cache); returns the local path."""
    if _is_hub_handle(location):
        return hub.fetch(location)
    return _fetch_url(location)


def build_from_preset(cls, preset, weights="default", **overrides):
    """Builds `cls` (a ViT) from a preset name, a checkpoint file or URL, or an `hf://`
    handle; see `ViT.from_preset`."""
    preset, weights = _location(preset, "preset"), _location(weights, "weights", none=True)
    if _is_url(preset) or _looks_like_file(preset) or (
        isinstance(preset, str) and preset not in presets.PRESETS and os.path.exists(preset)
    ):
        if weights not in ("default", None):
            raise ValueError(
                "When `preset` is a checkpoint file or hf:// handle, `weights` must be "
                f"'default' (load it) or None (its architecture only), got {weights!r}."
            )
        path = _fetch_remote(preset) if _is_url(preset) else _local_file(preset)
        checkpoint = weights_lib.load_checkpoint(path)
        if weights is None:
            weights_lib.require_num_heads(checkpoint, overrides)
            include_top = weights_lib.default_include_top(checkpoint, overrides)
            return cls(config=checkpoint.config, **{"include_top": include_top, **overrides})
        return weights_lib.build_model(cls, checkpoint, overrides=overrides)

    entry = presets.get_preset(preset)
    if weights == "default":
        weights = entry["default_weights"]
    if weights is None:
        return cls(**{**entry["config"], **overrides})
    if weights in entry["weights"]:
        path = _fetch_named(preset, weights, entry["weights"][weights])
    elif _is_url(weights):
        path = _fetch_remote(weights)
    elif _looks_like_file(weights) or os.path.exists(weights):
        path = _local_file(weights)
    else:
        raise ValueError(
            f"Unknown weights {weights!r} for preset {preset!r}. Valid names: "
            f"{', '.join(entry['weights'])}; or None, a local path, a URL or an hf:// handle."
        )
    checkpoint = weights_lib.load_checkpoint(path)
    return weights_lib.build_model(cls, checkpoint, entry["config"], overrides)
