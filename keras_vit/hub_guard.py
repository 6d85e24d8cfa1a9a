"""The promises of URL downloads, kept for huggingface_hub downloads: one overall deadline,
and no answer from the endpoint that would put a file outside the huggingface_hub cache.

huggingface_hub bounds each read (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT), not a
download: a server that trickles or never ends a body, or one that fails every attempt,
is waited on for as long as it goes on. Within `guard(deadline)`, every request that
huggingface_hub sends from this thread (or task) goes through hooks on its HTTP client:

- a request is not sent once the deadline has passed, and its timeouts are cut to the
  time left; a body stops at the first chunk after the deadline; a retry that the server
  asks to wait for past the deadline is not waited for. The HTTP client is the one
  huggingface_hub builds, so proxies, certificates and the token apply as they do there.
- an `X-Linked-Etag` / `ETag` that is not a plain file name, or an `X-Repo-Commit` that is
  not a commit hash, is refused before huggingface_hub makes a path of it (it stores a
  file at `blobs/<etag>` and `snapshots/<commit>/<name>`), so nothing is written.
- a body without a length (ended by closing the connection) after metadata without a
  size is refused: huggingface_hub would take a transfer cut short as the whole file.
- the Xet headers are dropped, so the file comes over HTTP, where the above applies,
  rather than through hf_xet's own transfer, which nothing here could stop.

Each raises `Refused`, which huggingface_hub does not catch or retry, so its own clean-up
runs: the temporary `.incomplete` file is removed and nothing reaches the cache's final
location. Outside `guard`, the hooks do nothing.
"""

import contextlib
import contextvars
import re
import time

import httpx2
from huggingface_hub import constants, set_client_factory
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.utils import parse_ratelimit_headers

_GUARDED = contextvars.ContextVar("keras_vit_hub_guarded", default=None)
# What huggingface_hub makes a path of: the blob name (the etag, quotes and `W/` removed)
# and the commit (a folder under snapshots/).
_BLOB_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", re.ASCII)
_COMMIT = re.compile(r"[0-9a-f]{40}", re.ASCII)
_RETRIED_STATUS = (408, 429, 500, 502, 503, 504)  # huggingface_hub retries these
_ENDPOINT_HINT = ("Check that HF_ENDPOINT is the Hugging Face Hub or a mirror you trust; "
                  "nothing was written")


class Refused(Exception):
    """A guarded download was stopped; the message says why and what to do."""


@contextlib.contextmanager
def guard(deadline):
    """Guards the huggingface_hub downloads made inside (see the module docstring);
    `deadline` is the seconds they may take together."""
    _hook_new_clients()
    token = _GUARDED.set(_Guarded(deadline))
    try:
        yield
    finally:
        _GUARDED.reset(token)


class _Guarded:
    """The deadline of the guarded downloads, and whether the last file metadata gave a
    size (huggingface_hub then checks the body against it)."""

    def __init__(self, seconds):
        self.seconds, self.give_up_at = seconds, time.monotonic() + seconds
        self.sized = True

    def left(self):
        """The seconds left; raises Refused when none are."""
        left = self.give_up_at - time.monotonic()
        if left <= 0:
            raise Refused(
                f"the download did not finish within its {self.seconds:g} s deadline "
                "(every attempt counts). On a slow connection, set KERAS_VIT_DOWNLOAD_DEADLINE "
                "to more seconds (or pass deadline=); nothing partial was kept."
            )
        return left


def _hook_new_clients():
    """Makes huggingface_hub build its HTTP clients with the hooks: it makes a new one
    after a connection error, so hooking the current one would not last. The factory in
    use (the default one, or the user's) is wrapped, not replaced."""
    factory = hf_http._GLOBAL_CLIENT_FACTORY
    if getattr(factory, "keras_vit_hooks", False):
        return

    def hooked():
        client = factory()
        hooks = client.event_hooks
        client.event_hooks = {"request": [*hooks["request"], _on_request],
                              "response": [*hooks["response"], _on_response]}
        return client

    hooked.keras_vit_hooks = True
    set_client_factory(hooked)  # closes the current client: the next one is hooked


def _on_request(request):
    guarded = _GUARDED.get()
    if guarded is None:
        return
    left = guarded.left()
    timeouts = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        name: left if timeouts.get(name) is None else min(timeouts[name], left)
        for name in ("connect", "read", "write", "pool")
    }


def _on_response(response):
    guarded = _GUARDED.get()
    if guarded is None:
        return
    headers = response.headers
    commit = headers.get(constants.HUGGINGFACE_HEADER_X_REPO_COMMIT)
    if commit is not None and not _COMMIT.fullmatch(commit):
        raise Refused(
            f"{response.url.host} answered X-Repo-Commit: {commit!r}, which is not a commit "
            f"hash (40 hex digits), so it could name a folder outside the cache. {_ENDPOINT_HINT}."
        )
    if response.request.method == "HEAD":  # huggingface_hub reads the file's metadata here
        etag = headers.get(constants.HUGGINGFACE_HEADER_X_LINKED_ETAG) or headers.get("ETag")
        if etag is not None and not _BLOB_NAME.fullmatch(etag.lstrip("W/").strip('"')):
            raise Refused(
                f"{response.url.host} answered an ETag of {etag!r}, which is not a plain file "
                "name, so huggingface_hub could store the file outside its cache. "
                f"{_ENDPOINT_HINT}."
            )
        headers.pop(constants.HUGGINGFACE_HEADER_X_XET_HASH, None)
        guarded.sized = constants.HUGGINGFACE_HEADER_X_LINKED_SIZE in headers or (
            not response.is_redirect and "Content-Length" in headers)
    elif (response.status_code == 200 and not guarded.sized and "Content-Length" not in headers
          and headers.get("Transfer-Encoding", "").lower() != "chunked"):
        raise Refused(
            f"{response.url.host} sends a body without a length, after metadata without a "
            "size, so a transfer cut short could not be told from a whole file. "
            f"{_ENDPOINT_HINT} to the cache."
        )
    if response.status_code in _RETRIED_STATUS:
        wait, left = _asked_wait(headers), guarded.left()
        if wait is not None and wait >= left:
            raise Refused(
                f"{response.url.host} answered HTTP {response.status_code} and asks to wait "
                f"{wait} s before trying again, past the download deadline ({left:.0f} s "
                "left). Try again later, or set KERAS_VIT_DOWNLOAD_DEADLINE to more seconds."
            )
    response.stream = _DeadlineStream(response.stream, guarded)


def _asked_wait(headers):
    """The seconds a response asks to wait before a retry (Retry-After, or a RateLimit
    with none left), as huggingface_hub reads them; None when it asks nothing."""
    waits = []
    retry_after = headers.get("Retry-After", "").strip()
    if retry_after.isdigit():
        waits.append(int(retry_after))
    limit = parse_ratelimit_headers(headers)
    if limit is not None and limit.remaining == 0:
        waits.append(limit.reset_in_seconds)
    return max(waits, default=None)


class _DeadlineStream(httpx2.SyncByteStream):
    """A response body that stops at the first chunk after the deadline."""

    def __init__(self, stream, guarded):
        self._stream, self._guarded = stream, guarded

    def __iter__(self):
        try:
            for chunk in self._stream:
                self._guarded.left()
                yield chunk
        except httpx2.TimeoutException:
            self._guarded.left()  # past the deadline: say so, rather than be retried
            raise

    def close(self):
        self._stream.close()

    @property
    def elapsed(self):
        return getattr(self._stream, "elapsed", None)
