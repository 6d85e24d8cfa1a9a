"""Local HTTP servers on 127.0.0.1 for the download tests (not a test module).

`serve(handler, **state)` starts a server in a daemon thread (`stop` ends it), and
`trickle` writes a body a byte at a time. `StandInHub` is a stand-in for the Hugging Face
Hub: its "hub" origin answers huggingface_hub's requests as the Hub does, its "cdn"
origin serves the LFS files, and `faults` makes either misbehave for a file name.
`use_stand_in_hub` points huggingface_hub at it.
"""

import hashlib
import http.server
import re
import threading
import time
import urllib.parse

TOKEN = "hf_test_token"
TRICKLE_SECONDS = 0.05  # between the bytes of a trickled body
ENDLESS_SECONDS = 30  # how long an "endless" body or a "stall" lasts at most


def serve(handler, **state):
    """An HTTPServer on 127.0.0.1 running `handler` in a daemon thread, with `state` as
    attributes and its address as `url`."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for name, value in state.items():
        setattr(httpd, name, value)
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd


def stop(httpd):
    httpd.shutdown()
    httpd.server_close()


def trickle(wfile, body, seconds=TRICKLE_SECONDS):
    """Writes `body` a byte every `seconds`; returns False when the client hung up first."""
    try:
        for i in range(len(body)):
            wfile.write(body[i : i + 1])
            wfile.flush()
            time.sleep(seconds)
    except OSError:
        return False
    return True


class HubHandler(http.server.BaseHTTPRequestHandler):
    """Answers huggingface_hub's file requests as the Hub does.

    HEAD and GET /{owner}/{repo}/resolve/{revision}/{file} (revision: a branch, tag or
    commit) answer with X-Repo-Commit, ETag and Content-Length; a `.safetensors` file is
    stored with LFS, so it is a 302 to the "cdn" server (another origin) carrying
    X-Linked-Etag (its sha256) and X-Linked-Size, and its bytes come from GET /{sha256}
    there. Errors carry the X-Error-Code huggingface_hub maps to its exceptions:
    RepoNotFound, GatedRepo (401 without a token, 403 with another token than TOKEN),
    RevisionNotFound, EntryNotFound. A file stored as an int is answered with that status.

    `faults[file name]` makes the answers about that file misbehave: "headers" replaces
    headers of the hub's answers (e.g. a hostile X-Linked-Etag or X-Repo-Commit; None
    leaves a header out); "head"
    is "loop" (a redirect to itself) or "stall" (no answer for ENDLESS_SECONDS); "body"
    (of the GET, from the cdn for LFS files) is "trickle" (a byte every TRICKLE_SECONDS),
    "endless" (zeros without end, for ENDLESS_SECONDS), "cut" (a third of the bytes that
    Content-Length gives), "close-cut" (two thirds, no Content-Length), "trickle-cut" (10
    bytes trickled, then the connection closes), "loop" (a redirect to itself) or "busy"
    (HTTP 429 asking to retry in an hour).
    """

    def do_HEAD(self):  # noqa: N802
        state = self.server.state
        state.requests.append((self.command, self.server.origin, self.path))
        if self.server.origin == "cdn":
            sha256 = self.path[1:]
            blob = state.blobs.get(sha256)
            if blob is None:
                return self._send(404)
            return self._send(200, body=blob, fault=state.faults.get(state.names[sha256], {}))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/([^/]+)", self.path)
        repo = match and state.repos.get(match[1])
        if repo is None:
            return self._send(404, {"X-Error-Code": "RepoNotFound"})
        auth = self.headers.get("Authorization")
        if repo["gated"] and auth != f"Bearer {TOKEN}":
            message = f"Access to model {match[1]} is restricted. You must be authenticated."
            return self._send(401 if auth is None else 403,
                              {"X-Error-Code": "GatedRepo", "X-Error-Message": message})
        revision, name = urllib.parse.unquote(match[2]), urllib.parse.unquote(match[3])
        fault = state.faults.get(name, {})
        if fault.get("head") == "loop":
            return self._send(302, {"Location": self.path})
        if fault.get("head") == "stall":
            state.stopping.wait(ENDLESS_SECONDS)
            return self._send(503)
        commit = repo["refs"].get(revision, revision)
        if commit not in repo["commits"]:
            return self._send(404, {"X-Error-Code": "RevisionNotFound"})
        data = repo["commits"][commit].get(name)
        headers = {"X-Repo-Commit": commit}
        if data is None:
            return self._send(404, {**headers, "X-Error-Code": "EntryNotFound"}, fault=fault)
        if isinstance(data, int):
            return self._send(data, headers, fault=fault)
        if name.endswith(".safetensors"):
            sha256 = hashlib.sha256(data).hexdigest()
            state.blobs[sha256], state.names[sha256] = data, name
            return self._send(302, {**headers, "Location": f"{state.cdn_url}/{sha256}",
                                    "X-Linked-Etag": f'"{sha256}"',
                                    "X-Linked-Size": str(len(data))}, fault=fault)
        headers["ETag"] = f'"{hashlib.sha1(data).hexdigest()}"'
        self._send(200, headers, data, fault=fault)

    do_GET = do_HEAD  # noqa: N815

    def _send(self, status, headers=(), body=b"", fault=None):
        fault = fault or {}
        headers = {**dict(headers), **fault.get("headers", {})}
        headers = {name: value for name, value in headers.items() if value is not None}
        mode = fault.get("body") if self.command == "GET" and status == 200 else None
        if mode == "loop":
            status, headers, body = 302, {"Location": self.path}, b""
        elif mode == "busy":
            status, headers, body = 429, {"Retry-After": "3600"}, b""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if mode not in ("endless", "close-cut"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "GET":
            return
        if mode in ("trickle", "trickle-cut"):
            if not trickle(self.wfile, body if mode == "trickle" else body[:10]):
                self.server.state.body_ended.set()
        elif mode == "endless":
            self._endless()
        else:
            self.wfile.write(body[: {"cut": len(body) // 3,
                                     "close-cut": 2 * len(body) // 3}.get(mode, len(body))])

    def _endless(self):
        state, give_up_at = self.server.state, time.monotonic() + ENDLESS_SECONDS
        try:
            while time.monotonic() < give_up_at and not state.stopping.is_set():
                self.wfile.write(bytes(1000))
                self.wfile.flush()
                time.sleep(0.01)
        except OSError:  # the client hung up
            state.body_ended.set()

    def log_message(self, *args):
        pass


class StandInHub:
    """The stand-in Hub: `add(repo_id, {ref: files})`, `faults`, the `requests` it got,
    `body_ended` (set when a client hung up on a trickled or endless body), `stop()`."""

    def __init__(self):
        self.repos, self.blobs, self.names, self.faults, self.requests = {}, {}, {}, {}, []
        self.stopping, self.body_ended = threading.Event(), threading.Event()
        self._servers = [serve(HubHandler, state=self, origin=origin) for origin in ("hub", "cdn")]
        self.url, self.cdn_url = (httpd.url for httpd in self._servers)

    def add(self, repo_id, refs, gated=False):
        """Adds a repository; returns {ref: commit hash}."""
        commits = {ref: hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest() for ref in refs}
        self.repos[repo_id] = {"gated": gated, "refs": commits,
                               "commits": {commits[ref]: files for ref, files in refs.items()}}
        return commits

    def stop(self):
        self.stopping.set()
        for httpd in self._servers:
            stop(httpd)
        self._servers = []


def use_stand_in_hub(monkeypatch, endpoint, home):
    """Points huggingface_hub at `endpoint`, with its cache and token file in `home` and no
    token or offline mode from the environment.

    huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and the like
    once, when it is imported, into `huggingface_hub.constants`, which its download code
    then reads at every call. It is usually imported already (transformers imports it), so
    this sets both the environment variables and those constants, with monkeypatch, which
    restores them after each test.
    """
    from huggingface_hub import constants

    paths = {"HF_HOME": home, "HF_HUB_CACHE": home / "hub", "HF_TOKEN_PATH": home / "token"}
    for name, value in {"HF_ENDPOINT": endpoint, **paths}.items():
        monkeypatch.setenv(name, str(value))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "HF_OIDC_RESOURCE", "KERAS_VIT_DOWNLOAD_DEADLINE"):
        monkeypatch.delenv(name, raising=False)
    template = constants.HUGGINGFACE_CO_URL_TEMPLATE.replace(constants.ENDPOINT, endpoint, 1)
    settings = {
        "ENDPOINT": endpoint, "HUGGINGFACE_CO_URL_TEMPLATE": template,
        **{name: str(path) for name, path in paths.items()},
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"), "HF_HUB_OFFLINE": False,
        # Telemetry off: no agent-detection request to {ENDPOINT}/api/agent-harnesses.
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for name, value in settings.items():
        monkeypatch.setattr(constants, name, value)
