"""Downloads against a local HTTP server on 127.0.0.1: first fetch, cached reuse offline,
an interrupted transfer, a corrupt file and an HTTP error."""

import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from keras_vit import ViT, presets
from keras_vit.download import DownloadError, cached_path, download

PAYLOAD = np.random.default_rng(0).bytes(300_000)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path.startswith("/missing"):
            self.send_error(404, "Not Found")
            return
        body = self.server.files.get(self.path.rsplit("/", 1)[-1], PAYLOAD)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.startswith("/cut/"):
            self.wfile.write(body[: len(body) // 3])  # then the connection closes
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    """An HTTP server on 127.0.0.1; `server.files` maps file names to bytes."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _cache_files(tmp_path):
    root = tmp_path / "keras_home"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_first_download_then_cached_reuse_offline(server, tmp_path, capsys):
    url = f"{server.url}/files/weights.npz"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    path = download(url, subdir="b16/test", sha256=sha, size=len(PAYLOAD))
    assert path == cached_path(url, "b16/test")
    assert path.startswith(str(tmp_path / "keras_home" / "keras_vit" / "b16" / "test"))
    with open(path, "rb") as f:
        assert f.read() == PAYLOAD
    assert "Downloading" in capsys.readouterr().out
    server.shutdown()
    server.server_close()
    assert download(url, subdir="b16/test", sha256=sha) == path  # no server needed now


def test_interrupted_transfer_leaves_nothing(server, tmp_path):
    url = f"{server.url}/cut/weights.npz"
    with pytest.raises(DownloadError, match="cut short|IncompleteRead|Could not download") as err:
        download(url, progress=False)
    assert url in str(err.value) and cached_path(url) in str(err.value)
    assert _cache_files(tmp_path) == []


def test_corrupt_file_is_rejected_and_not_cached(server, tmp_path):
    url = f"{server.url}/files/weights.npz"
    with pytest.raises(DownloadError, match="sha256 .* expected"):
        download(url, sha256="0" * 64, progress=False)
    with pytest.raises(DownloadError, match="expected 12"):
        download(url, size=12, progress=False)
    assert _cache_files(tmp_path) == []


def test_http_error_says_which_url_and_where_to_put_the_file(server, tmp_path):
    url = f"{server.url}/missing/weights.npz"
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download(url, subdir="b16/augreg", progress=False)
    message = str(err.value)
    assert url in message and cached_path(url, "b16/augreg") in message
    assert _cache_files(tmp_path) == []


def test_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DownloadError, match="offline.*place it at"):
        download("http://127.0.0.1:9/nothing.npz", progress=False, timeout=5)


def test_from_preset_downloads_once_and_works_offline(server, monkeypatch, tmp_path):
    """A preset's named weights come from the server once, then from the cache."""
    from test_weights import CLASSES, D, HEADS, LAYERS, MLP, PATCH, google_params

    checkpoint = tmp_path / "ckpt.npz"
    np.savez(checkpoint, **google_params())
    data = checkpoint.read_bytes()
    server.files["ckpt.npz"] = data
    spec = {"url": f"{server.url}/files/ckpt.npz", "format": "vit_jax", "image_size": 32,
            "num_classes": CLASSES, "top1": None, "top1_source": None,
            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    monkeypatch.setitem(presets.PRESETS, "tiny", {
        "description": "tiny", "weights": {"test": spec}, "default_weights": "test",
        "config": dict(patch_size=PATCH, hidden_dim=D, mlp_dim=MLP, num_heads=HEADS, num_layers=LAYERS),
    })
    first = ViT.from_preset("tiny")
    server.shutdown()
    server.server_close()
    second = ViT.from_preset("tiny")
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert _cache_files(tmp_path) == [os.path.join("keras_vit", "tiny", "test", "ckpt.npz")]
