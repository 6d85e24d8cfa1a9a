"""Cached, atomic and verified downloads of checkpoint files.

Files land in `$KERAS_HOME/keras_vit/<subdir>/<file name>` (KERAS_HOME defaults to
`~/.keras`). A download is written to a temporary file in the same folder, checked
(complete, and the expected size and sha256 when they are known) and only then renamed
into place, so an interrupted or failed download never leaves a file that a later run
would take as valid.
"""

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request

import keras

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A download failed; the message names the URL and where to put the file by hand."""


def cache_dir():
    """The folder keras_vit caches files in: `$KERAS_HOME/keras_vit` (default `~/.keras`)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "keras_vit")


def cached_path(url, subdir=None):
    """Where `download(url, subdir)` keeps its file; `subdir` defaults to a hash of the URL."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    subdir = subdir or hashlib.sha256(url.encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), subdir, urllib.parse.unquote(name))


def sha256sum(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url, subdir=None, sha256=None, size=None, progress=True, timeout=60):
    """Returns the local path of `url`, downloading it once into the cache.

    Args:
        url: http(s) or file URL.
        subdir: cache sub-folder; defaults to a hash of the URL.
        sha256, size: expected hex digest and byte count, checked when given.
        progress: show a progress bar.
    Raises:
        DownloadError: the URL could not be fetched, the transfer was cut short or the
            file failed verification. Nothing is left in the cache then.
    """
    path = cached_path(url, subdir)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    hint = (
        f"If this machine is offline, download {url} elsewhere and place it at {path} "
        "(or pass its local path as `weights=`)."
    )
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".download-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            received, total = _fetch(url, out, progress, timeout, hint)
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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _fetch(url, out, progress, timeout, hint):
    """Streams `url` into the open file `out`; returns (bytes received, Content-Length)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            bar = keras.utils.Progbar(total, unit_name="byte") if progress else None
            if progress:
                print(f"Downloading {url}")
            received = 0
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(received)
            return received, total
    except urllib.error.HTTPError as e:
        raise DownloadError(f"Could not download {url}: HTTP {e.code} {e.reason}. {hint}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"Could not download {url}: {reason}. {hint}") from e
