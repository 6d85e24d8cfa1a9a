"""`hf://owner/repo[@revision]` handles: ViT checkpoints on the Hugging Face Hub.

`fetch` downloads a repository's `model.safetensors`, and its `config.json` and
`preprocessor_config.json` when it has them, with `huggingface_hub.hf_hub_download` into
the huggingface_hub cache: files that transformers or timm already downloaded are reused,
and `HF_ENDPOINT`, `HF_HOME` / `HF_HUB_CACHE`, `HF_HUB_OFFLINE` and the login token
(`HF_TOKEN`, `hf auth login`) apply as they do there. Needs `huggingface_hub`
(`pip install -e ".[hub]"` in a checkout).

The promises of URL downloads (`keras_vit.download`) hold here too: one deadline covers
every attempt of every file (`keras_vit.hub_guard`), every failure is a DownloadError that
says what to do, and every file keras_vit reads from the snapshot is checked to lie inside
the huggingface_hub cache (real paths, symbolic links followed) before it is read.
"""

import os
import re

from keras_vit.download import DownloadError, deadline_seconds

WEIGHTS = "model.safetensors"
# Fetched beside the weights when the repository has them: file name -> whether it must
# be in the cache to load offline (config.json has the head count; keras_vit does not read
# preprocessor_config.json, it completes the snapshot for transformers).
COMPANIONS = {"config.json": True, "preprocessor_config.json": False}

# The Hub's names: ASCII letters, digits, '-', '_', '.', starting and ending with a letter,
# digit or '_', at most 96 characters, without '--' (the cache's separator) or '..'.
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
# A branch, tag or commit: parts that do not start with '.', separated by single '/'.
_REF_PART = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_HANDLE = re.compile(
    rf"hf://(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>{_REF_PART}(?:/{_REF_PART})*))?",
    re.ASCII,
)
_FORM = (
    "expected hf://owner/repo or hf://owner/repo@revision: owner and repo of 1-96 ASCII "
    "letters, digits, '-', '_' or '.' (starting and ending with a letter, digit or '_', "
    "without '--' or '..', the repo not ending in '.git'), and a branch, tag or commit "
    "of letters, digits, '-', '_', '.' and '/' (no part starting with '.', no '..')"
)
_LOGIN = ("log in: `hf auth login` (`huggingface-cli login` with older huggingface_hub), or "
          "set HF_TOKEN to an access token")


def parse(handle):
    """Returns (repo id, revision or None) of `hf://owner/repo[@revision]`; raises a
    ValueError naming the handle and the expected form otherwise."""
    match = _HANDLE.fullmatch(handle) if isinstance(handle, str) else None
    repo_id = match and match["repo"]
    if not match or "--" in repo_id or ".." in handle or repo_id.endswith(".git"):
        raise ValueError(f"Invalid Hugging Face Hub handle {handle!r}: {_FORM}.")
    return repo_id, match["revision"]


def fetch(handle, deadline=None):
    """Returns the local path of the `model.safetensors` of `hf://owner/repo[@revision]`,
    downloading it (and its config files, into the same snapshot folder) when it is not
    in the huggingface_hub cache.

    `deadline` is the seconds the whole fetch may take, every file and every attempt
    together; it defaults to the environment variable KERAS_VIT_DOWNLOAD_DEADLINE, else 4
    hours. A stalled read is given up on within about `deadline` plus huggingface_hub's
    read timeout (HF_HUB_DOWNLOAD_TIMEOUT, 10 s) or one of its pauses between retries.

    Raises:
        ValueError: `handle` is not of that form, or the deadline is not a positive number.
        ImportError: huggingface_hub is not installed.
        DownloadError: no such repository, revision or weights file; a gated or private
            repository without access; files missing from the cache while offline or
            the Hub cannot be reached; a transfer that failed, was cut short or passed
            the deadline; an endpoint answer that would put a file outside the cache;
            or a cached file that lies outside it. The message says what to do.
    """
    repo_id, revision = parse(handle)
    seconds = deadline_seconds(deadline)
    hub, hub_guard = _import_hub(handle)
    offline = hub.constants.HF_HUB_OFFLINE or (
        os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"))
    with hub_guard.guard(seconds):
        path = _download(hub, handle, repo_id, WEIGHTS, revision, offline)
        # The weights' folder is snapshots/<commit>: the other files come from that commit.
        commit = os.path.basename(os.path.dirname(path))
        for name, needed_offline in COMPANIONS.items():
            try:
                _download(hub, handle, repo_id, name, commit, offline)
            except DownloadError as e:
                if not (e.not_found or (offline and not needed_offline)):
                    raise
    _check_inside_cache(hub, handle, os.path.dirname(path))
    return path


def _check_inside_cache(hub, handle, folder):
    """Raises a DownloadError when a file keras_vit reads from the snapshot `folder` (the
    weights and their config files) resolves outside the huggingface_hub cache. Such a
    file was put there by an earlier download (this one refuses the answers that would
    do it): it is not read, and not removed either, as keras_vit did not write it."""
    root = os.path.realpath(hub.constants.HF_HUB_CACHE)
    for name in (WEIGHTS, *COMPANIONS):
        path = os.path.join(folder, name)
        real = os.path.realpath(path)
        if os.path.lexists(path) and os.path.commonpath([root, real]) != root:
            raise DownloadError(
                f"{handle}: {path} resolves to {real}, outside the huggingface_hub cache "
                f"({root}), so keras_vit does not read it. An earlier download from an "
                "endpoint that is not the Hugging Face Hub probably put it there: remove "
                f"{os.path.dirname(os.path.dirname(folder))} and download again, with "
                "HF_ENDPOINT unset or set to a mirror you trust."
            )


def _import_hub(handle):
    """huggingface_hub, with the submodules used here loaded (it loads them lazily, which
    the deadline need not count), and keras_vit.hub_guard, which needs huggingface_hub 2
    (its HTTP client is httpx2)."""
    try:
        import huggingface_hub.constants
        import huggingface_hub.file_download
        import huggingface_hub.utils
    except ImportError as e:
        raise ImportError(
            f"Loading {handle} needs the huggingface_hub package: pip install huggingface_hub "
            "(in a keras_vit checkout: pip install -e '.[hub]')."
        ) from e
    try:
        from keras_vit import hub_guard
    except ImportError as e:
        raise ImportError(
            f"Loading {handle} needs huggingface_hub 2 or newer, found "
            f"{huggingface_hub.__version__}: pip install -U huggingface_hub."
        ) from e
    return huggingface_hub, hub_guard


def _download(hub, handle, repo_id, filename, revision, offline):
    """`hf_hub_download`, with every failure turned into a DownloadError."""
    import httpx2

    from keras_vit import hub_guard
    from keras_vit.version import __version__

    what = _what(handle, repo_id, filename, revision)
    endpoint, cache = hub.constants.ENDPOINT, hub.constants.HF_HUB_CACHE
    errors = hub.utils
    try:
        return hub.hf_hub_download(repo_id, filename, revision=revision,
                                   local_files_only=offline, library_name="keras-vit",
                                   library_version=__version__)
    except (errors.HfHubHTTPError, errors.EntryNotFoundError) as e:
        raise _explain(e, hub, handle, repo_id, filename, revision, offline) from e
    except hub_guard.Refused as e:
        raise DownloadError(f"{what} could not be downloaded from {endpoint}: {e}") from e
    except httpx2.TooManyRedirects as e:
        raise DownloadError(
            f"{what} could not be downloaded from {endpoint}: it redirects in a loop ({e}). "
            "Try again later; if it persists, check HF_ENDPOINT and any proxy settings."
        ) from e
    except (httpx2.HTTPError, httpx2.InvalidURL, OSError, ValueError) as e:
        raise DownloadError(
            f"{what} could not be downloaded from {endpoint} into the huggingface_hub cache "
            f"({cache}): {str(e).rstrip('.')}. Nothing partial was kept. Try again; if it "
            "fails again, check the connection, HF_ENDPOINT, and that the cache folder is "
            "writable and has room."
        ) from e


def _what(handle, repo_id, filename, revision):
    return f"{handle}: {filename} of {repo_id}" + (f" at revision {revision}" if revision else "")


def _explain(error, hub, handle, repo_id, filename, revision, offline):
    """A DownloadError that says why `filename` could not be had and what to do."""
    errors = hub.utils
    endpoint, cache = hub.constants.ENDPOINT, hub.constants.HF_HUB_CACHE
    what = _what(handle, repo_id, filename, revision)
    if isinstance(error, errors.LocalEntryNotFoundError):
        if offline:
            return DownloadError(
                f"{what} is not in the Hugging Face cache ({cache}), and HF_HUB_OFFLINE is set, "
                "so nothing is downloaded. Unset HF_HUB_OFFLINE to download it, or run "
                f"`hf download {repo_id}` on a machine that is online and copy its cache here."
            )
        if not isinstance(error.__cause__, errors.HfHubHTTPError):
            return DownloadError(
                f"{what} could not be downloaded from {endpoint} and is not in the Hugging Face "
                f"cache ({cache}): check the connection and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 "
                "to use cached files only."
            )
        error = error.__cause__  # the HTTP error that made the lookup fall back to the cache
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, errors.GatedRepoError):
        return DownloadError(
            f"{handle}: {repo_id} is a gated repository (HTTP {status}). Accept its licence at "
            f"{endpoint}/{repo_id} with your Hugging Face account, then {_LOGIN}."
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return DownloadError(
            f"{handle}: there is no repository {repo_id} on {endpoint} (HTTP {status}). Check "
            f"the name; if it is private, {_LOGIN}.", not_found=True)
    if isinstance(error, errors.RevisionNotFoundError):
        return DownloadError(f"{handle}: {repo_id} has no revision {revision!r}.", not_found=True)
    if isinstance(error, errors.EntryNotFoundError) or status == 404:
        return DownloadError(
            f"{what} does not exist: keras_vit loads a single {WEIGHTS} (a transformers ViT or "
            "a timm ViT), not pytorch_model.bin or sharded weights.", not_found=True)
    if status in (401, 403):
        return DownloadError(f"{what}: access denied (HTTP {status}). To read it, {_LOGIN}.")
    return DownloadError(f"{what} could not be downloaded from {endpoint}: {error}")
