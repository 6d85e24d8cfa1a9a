"""Cached, atomic and verified downloads of checkpoint files.

Files land in `$KERAS_HOME/keras_vit/<subdir>/<file name>` (KERAS_HOME defaults to
`~/.keras`), and only there: a URL whose decoded file name or a `subdir` that would put the
file anywhere else (through `%2F`, `..`, an absolute path or a symbolic link) is refused.
A download is written to a temporary file in the same folder, checked (complete, and the
expected size and sha256 when they are known) and only then renamed into place, so an
interrupted, stalled or failed download never leaves a file that a later run would take
as valid.
"""

import hashlib
import http.client
import json
import os
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import keras

_CHUNK = 1 << 20
DEFAULT_DEADLINE = 4 * 3600  # seconds; KERAS_VIT_DOWNLOAD_DEADLINE overrides it
_MAX_NAME_BYTES = 255  # the longest file name common file systems allow


class DownloadError(OSError):
    """A download failed; the message names the URL and where to put the file by hand.

    `not_found` is True when the server (HTTP 404) or the file system has no such file.
    """

    def __init__(self, message, not_found=False):
        super().__init__(message)
        self.not_found = not_found


def cache_dir():
    """The folder keras_vit caches files in: `$KERAS_HOME/keras_vit` (default `~/.keras`)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "keras_vit")


def _is_plain_name(name):
    """True for one file or folder name: not '.' or '..', no '/', '\\' or control
    characters, at most 255 bytes."""
    return (
        name not in ("", ".", "..")
        and not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name)
        and len(name.encode("utf-8", "surrogatepass")) <= _MAX_NAME_BYTES
    )


def _url_hash(url):
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def cached_path(url, subdir=None):
    """Where `download(url, subdir)` keeps its file; `subdir` defaults to a hash of the URL.

    The file name is the percent-decoded last segment of the URL's path. Raises ValueError
    when that name or `subdir` is unsafe, or the path resolves (through a symbolic link)
    outside `cache_dir()`.
    """
    segment = urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]
    name = urllib.parse.unquote(segment) or "download"
    if not _is_plain_name(name):
        raise ValueError(
            f"Refusing to download {url}: its file name {name!r} is not a plain file name "
            "(it has '/', '\\', control characters, is '.' or '..', or is too long), so it "
            "could be written outside the cache. Download it by hand and pass its local path."
        )
    subdir = subdir or _url_hash(url)
    parts = re.split(r"[/\\]", subdir)
    if not all(_is_plain_name(part) for part in parts):
        raise ValueError(
            f"Refusing to download {url} into subdir {subdir!r}: it must be a relative path "
            "of plain folder names (no absolute path, '..', '.' or empty parts)."
        )
    path = os.path.join(cache_dir(), *parts, name)
    root = os.path.realpath(cache_dir())
    real = os.path.realpath(path)
    if not real.startswith(root + os.sep):
        raise ValueError(
            f"Refusing to use {path} for {url}: it resolves to {real}, outside the cache "
            f"folder {root}, through a symbolic link. Remove the link."
        )
    return path


def sha256sum(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url, subdir=None, sha256=None, size=None, progress=True, timeout=60,
             deadline=None):
    """Returns the local path of `url`, downloading it once into the cache.

    When neither the server (Content-Length) nor the caller (`size`, `sha256`) gives
    anything to check the file against, a body cut short cannot be told from a whole one
    by the transfer, so the content is checked: a `.npz`, `.zip` or `.keras` must open
    as a zip file (its end record is the last thing in it), a `.safetensors` must have a
    header whose tensors end exactly at the end of the file, and a `.json` must parse.
    Files of other kinds are taken as they come.

    Args:
        url: http(s) or file URL.
        subdir: cache sub-folder (relative); defaults to a hash of the URL.
        sha256, size: expected hex digest and byte count, checked when given.
        progress: show a progress bar.
        timeout: seconds to connect, and that each read may wait for data.
        deadline: seconds the whole download may take; defaults to the environment
            variable KERAS_VIT_DOWNLOAD_DEADLINE, else 4 hours. It is checked after each
            read, so a stalled or trickling server is given up on within about
            `deadline + timeout` seconds.
    Raises:
        DownloadError: the URL could not be fetched, the transfer was cut short or took
            longer than `deadline`, or the file failed verification. Nothing is left in
            the cache then.
        ValueError: the URL's file name or `subdir` would put the file outside the cache
            (see `cached_path`), or the deadline is not a positive number.
    """
    path = cached_path(url, subdir)
    if os.path.isfile(path):
        return path
    deadline = deadline_seconds(deadline)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    hint = (
        f"If this machine is offline, download {url} elsewhere and place it at {path} "
        "(or pass its local path as `weights=`)."
    )
    # Unlike tempfile.mkstemp (0o600), os.open gives the mode a new file normally gets,
    # 0o666 less the umask; os.replace keeps it.
    tmp = os.path.join(folder, f".download-{secrets.token_hex(8)}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            received, total = _fetch(url, out, progress, timeout, deadline, hint)
        if total is not None and received != total:
            raise DownloadError(
                f"Download of {url} was cut short: got {received} of {total} bytes. {hint}"
            )
        if size is not None and received != size:
            raise DownloadError(
                f"Downloaded {url} has {received} bytes, expected {size}: the file is "
                f"truncated or not the expected one. {hint}"
            )
        if sha256 is not None:
            actual = sha256sum(tmp)
            if actual != sha256.lower():
                raise DownloadError(
                    f"Downloaded {url} has sha256 {actual}, expected {sha256}: the file is "
                    f"corrupt or not the expected one. {hint}"
                )
        if total is None and size is None and sha256 is None:
            try:
                _check_whole(tmp, path)
            except (ValueError, zipfile.BadZipFile) as e:
                raise DownloadError(
                    f"Downloaded {url} ({received} bytes, no length given by the server) is "
                    f"not a whole {os.path.splitext(path)[1]} file: {e}. The transfer was "
                    f"probably cut short; try again. {hint}"
                ) from e
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def download_checkpoint(url, subdir=None, progress=True):
    """`download(url, subdir)`, plus for a `.safetensors` URL the `config.json` beside it.

    The config is fetched from the same URL folder into the same cache folder as the
    checkpoint, where `keras_vit.weights.load_checkpoint` reads a Hugging Face config.
    It is fetched (first) only while the checkpoint is not cached, so a cached checkpoint
    still loads offline. A config that is not found means the checkpoint has none; any
    other failure raises DownloadError.
    """
    subdir = subdir or _url_hash(url)
    path = cached_path(url, subdir)
    if urllib.parse.urlparse(url).path.endswith(".safetensors") and not os.path.isfile(path):
        try:
            download(urllib.parse.urljoin(url, "config.json"), subdir, progress=progress)
        except DownloadError as e:
            if not e.not_found:
                raise
    return download(url, subdir, progress=progress)


def deadline_seconds(deadline):
    """`deadline`, else $KERAS_VIT_DOWNLOAD_DEADLINE, else DEFAULT_DEADLINE, checked > 0."""
    if deadline is None:
        value = os.environ.get("KERAS_VIT_DOWNLOAD_DEADLINE")
        if not value:
            return DEFAULT_DEADLINE
        try:
            deadline = float(value)
        except ValueError:
            raise ValueError(
                f"KERAS_VIT_DOWNLOAD_DEADLINE must be a number of seconds, got {value!r}."
            ) from None
    if not deadline > 0:
        raise ValueError(
            f"The download deadline must be a positive number of seconds, got {deadline!r}."
        )
    return deadline


def _check_whole(tmp, path):
    """Raises ValueError (or BadZipFile) when `tmp` is not a whole file of the kind that
    `path`'s extension names; see `download`."""
    if path.endswith((".npz", ".zip", ".keras")):
        with zipfile.ZipFile(tmp):
            pass
    elif path.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:  # checks that the tensors cover the file exactly
            with safe_open(tmp, framework="numpy"):
                pass
        except SafetensorError as e:
            raise ValueError(str(e)) from e
    elif path.endswith(".json"):
        with open(tmp, encoding="utf-8") as f:
            json.load(f)


def _fetch(url, out, progress, timeout, deadline, hint):
    """Streams `url` into the open file `out` within `deadline` seconds; returns
    (bytes received, Content-Length or None)."""
    give_up_at = time.monotonic() + deadline
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            bar = keras.utils.Progbar(total, unit_name="byte") if progress else None
            if progress:
                print(f"Downloading {url}")
            received = 0
            while time.monotonic() < give_up_at:
                # read1 returns what one read of the socket gives: read(n) would wait for
                # all n bytes, which a trickling server can make take forever.
                chunk = response.read1(_CHUNK)
                if not chunk:
                    return received, total
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(received)
    except urllib.error.HTTPError as e:
        message = f"Could not download {url}: HTTP {e.code} {e.reason}. {hint}"
        raise DownloadError(message, not_found=e.code == 404) from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"Could not download {url}: {reason}. {hint}",
            not_found=isinstance(reason, FileNotFoundError),
        ) from e
    of_total = f" of {total}" if total is not None else ""
    raise DownloadError(
        f"Download of {url} did not finish within its {deadline:g} s deadline: got "
        f"{received}{of_total} bytes. On a slow connection, set KERAS_VIT_DOWNLOAD_DEADLINE "
        f"to more seconds. {hint}"
    )
