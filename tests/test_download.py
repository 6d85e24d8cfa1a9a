"""Downloads against a local HTTP server on 127.0.0.1: first fetch, cached reuse offline,
an interrupted, stalled or unverifiable transfer, a corrupt file, an HTTP error, URLs that
try to write outside the cache, and a Hugging Face checkpoint with its config.json."""

import hashlib
import http.server
import io
import json
import os
import threading
import time
import urllib.parse

import numpy as np
import pytest
from keras import ops

from hub_server import serve, stop, trickle
from keras_vit import ViT, presets
from keras_vit.download import (
    DownloadError, cache_dir, cached_path, download, download_checkpoint,
)

PAYLOAD = np.random.default_rng(0).bytes(300_000)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files[name]` (404 for other names, `server.errors[name]` codes).

    The first path segment says how: files (Content-Length), cut (Content-Length, a third
    of the body), chunked-cut / chunked-mid (chunked, closed at or inside a chunk), close
    / close-cut (no length: the whole body or two thirds, then the connection closes),
    trickle (a byte every hub_server.TRICKLE_SECONDS).
    """

    def do_GET(self):  # noqa: N802
        name = urllib.parse.unquote(self.path).rsplit("/", 1)[-1]
        body = self.server.files.get(name)
        if name in self.server.errors:
            self.send_error(self.server.errors[name])
            return
        if self.path.startswith("/missing") or body is None:
            self.send_error(404, "Not Found")
            return
        mode = self.path.split("/")[1]
        self.close_connection = True
        if mode.startswith("chunked"):
            self._send_chunked_cut_short(body, inside_a_chunk=mode == "chunked-mid")
            return
        self.send_response(200)
        if not mode.startswith("close"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "cut":
            self.wfile.write(body[: len(body) // 3])
        elif mode == "close-cut":
            self.wfile.write(body[: 2 * len(body) // 3])
        elif mode == "trickle":
            self._trickle(body)
        else:
            self.wfile.write(body)

    def _send_chunked_cut_short(self, body, inside_a_chunk):
        self.protocol_version = "HTTP/1.1"  # chunked encoding needs HTTP/1.1
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        half = len(body) // 2
        self.wfile.write(b"%x\r\n%s\r\n" % (half, body[:half]))
        if inside_a_chunk:
            self.wfile.write(b"%x\r\n%s" % (len(body) - half, body[half : half + 10]))
        # ... and no final zero-length chunk

    def _trickle(self, body):
        try:
            trickle(self.wfile, body)
        finally:
            self.server.trickle_done.set()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    """An HTTP server on 127.0.0.1; `server.files` maps file names to bytes."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    httpd = serve(_Handler, files={"weights.npz": PAYLOAD}, errors={},
                  trickle_done=threading.Event())
    yield httpd
    stop(httpd)


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
    stop(server)
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
    from checkpoint_files import CLASSES, D, HEADS, LAYERS, MLP, PATCH, google_params

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
    stop(server)
    second = ViT.from_preset("tiny")
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert _cache_files(tmp_path) == [os.path.join("keras_vit", "tiny", "test", "ckpt.npz")]


def _files_outside_keras_home(tmp_path):
    root = tmp_path / "keras_home"
    return [str(p) for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents]


@pytest.mark.parametrize("name", [
    "%2Fetc%2Fcron.d%2Fjob",  # an absolute path
    "..%2F..%2F..%2Fevil.npz",  # out of KERAS_HOME
    "..", "%2E%2E", "a%5C..%5Cb.npz", "a%00b.npz", "a%0Ab.npz", "a" * 300,
])
def test_url_file_name_cannot_leave_the_cache(name, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    url = f"http://h/x/{name}"
    with pytest.raises(ValueError, match="not a plain file name") as err:
        cached_path(url)
    assert url in str(err.value)


@pytest.mark.parametrize("subdir", ["/tmp/x", "../../x", "a/../../b", "a\\..\\..\\b", "a//b"])
def test_subdir_cannot_leave_the_cache(subdir, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="relative path of plain folder names"):
        cached_path("http://h/x/weights.npz", subdir)


def test_existing_file_outside_the_cache_is_no_cache_hit(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    secret = tmp_path / "secret.npz"
    secret.write_bytes(b"not for keras_vit")
    url = f"http://127.0.0.1:9/x/{urllib.parse.quote(str(secret), safe='')}"
    with pytest.raises(ValueError, match="not a plain file name"):
        download(url, progress=False)


def test_symbolic_link_out_of_the_cache_is_not_followed(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.npz").write_bytes(b"not for keras_vit")
    os.makedirs(os.path.join(cache_dir(), "files"))
    os.symlink(outside, os.path.join(cache_dir(), "folder"))
    os.symlink(outside / "weights.npz", os.path.join(cache_dir(), "files", "weights.npz"))
    for subdir in ("folder", "files"):
        with pytest.raises(ValueError, match="symbolic link"):
            download("http://127.0.0.1:9/x/weights.npz", subdir=subdir, progress=False)


@pytest.mark.parametrize("escape", ["absolute", "dot-dot"])
def test_from_preset_url_writes_nothing_outside_keras_home(escape, server, tmp_path):
    server.files["evil.npz"] = PAYLOAD
    target = tmp_path / "outside" / "evil.npz"
    name = str(target) if escape == "absolute" else "../../../evil.npz"
    url = f"{server.url}/files/{urllib.parse.quote(name, safe='')}"
    with pytest.raises(ValueError) as err:
        ViT.from_preset(url)
    assert _files_outside_keras_home(tmp_path) == []
    assert _cache_files(tmp_path) == []
    assert "Refusing to download" in str(err.value) and url in str(err.value)


def test_a_stalled_download_gives_up_at_its_deadline(server, monkeypatch, tmp_path):
    """A server trickling bytes (well within the per-read timeout) hits the deadline."""
    server.files["slow.npz"] = bytes(40)  # 2 s to send it all, a byte at a time
    url = f"{server.url}/trickle/slow.npz"
    monkeypatch.setenv("KERAS_VIT_DOWNLOAD_DEADLINE", "0.2")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"within its 0.2 s deadline: got \d+ of 40 bytes"):
        download(url, progress=False)
    assert time.monotonic() - start < 0.6
    assert server.trickle_done.wait(2), "the server kept trickling to a closed connection"
    assert _cache_files(tmp_path) == []
    monkeypatch.setenv("KERAS_VIT_DOWNLOAD_DEADLINE", "soon")
    with pytest.raises(ValueError, match="KERAS_VIT_DOWNLOAD_DEADLINE must be a number"):
        download(url, progress=False)


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=oct)
def test_downloaded_file_gets_the_usual_mode(umask, server):
    old = os.umask(umask)
    try:
        path = download(f"{server.url}/files/weights.npz", progress=False)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("mode", ["chunked-cut", "chunked-mid"])
def test_chunked_transfer_cut_short_is_not_cached(mode, server, tmp_path):
    url = f"{server.url}/{mode}/weights.npz"
    with pytest.raises(DownloadError, match="IncompleteRead"):
        download(url, progress=False)
    assert _cache_files(tmp_path) == []


def _npz_bytes():
    out = io.BytesIO()
    np.savez(out, w=np.arange(300, dtype="float32"))
    return out.getvalue()


def _safetensors_bytes():
    header = json.dumps({"w": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}})
    return len(header).to_bytes(8, "little") + header.encode() + bytes(256)


@pytest.mark.parametrize("name, body", [
    ("w.npz", _npz_bytes()),
    ("model.safetensors", _safetensors_bytes()),
    ("config.json", json.dumps({"hidden_size": 32, "num_attention_heads": 4}).encode()),
])
def test_body_without_length_is_verified_before_caching(name, body, server, tmp_path):
    """A connection-close-delimited body cut short looks complete to the transfer."""
    server.files[name] = body
    url = f"{server.url}/close-cut/{name}"
    with pytest.raises(DownloadError, match="no length given by the server.* not a whole") as err:
        download(url, progress=False)
    assert url in str(err.value) and cached_path(url) in str(err.value)
    assert _cache_files(tmp_path) == []
    with open(download(f"{server.url}/close/{name}", progress=False), "rb") as f:
        assert f.read() == body


def _hugging_face_vit(folder):
    """A transformers ViTForImageClassification with random weights, saved in `folder`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, num_labels=3,
    )
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            scale = 1.0 if "layernorm" in name and name.endswith("weight") else 0.0
            param.copy_(scale + 0.2 * torch.randn_like(param))
    hf.save_pretrained(folder, safe_serialization=True)
    return hf


def test_hugging_face_url_fetches_its_config_json(server, tmp_path, images):
    import torch

    hf = _hugging_face_vit(tmp_path / "hf")
    for name in ("model.safetensors", "config.json"):
        server.files[name] = (tmp_path / "hf" / name).read_bytes()
    url = f"{server.url}/files/org/vit/model.safetensors"
    model = ViT.from_preset(url)
    assert model.num_heads == 4  # from config.json: the width alone would give 1
    pixels = torch.from_numpy((images / 127.5 - 1.0).transpose(0, 3, 1, 2))
    with torch.no_grad():
        expected = hf(pixel_values=pixels).logits.numpy()
    np.testing.assert_allclose(ops.convert_to_numpy(model(images)), expected, rtol=0, atol=1e-4)
    folder = os.path.dirname(cached_path(url))
    assert _cache_files(tmp_path) == [
        os.path.relpath(os.path.join(folder, name), tmp_path / "keras_home")
        for name in ("config.json", "model.safetensors")
    ]
    stop(server)
    assert download_checkpoint(url) == cached_path(url)  # offline: the config is not refetched


def test_hugging_face_url_without_config_json(server, tmp_path):
    _hugging_face_vit(tmp_path / "hf")
    server.files["model.safetensors"] = (tmp_path / "hf" / "model.safetensors").read_bytes()
    url = f"{server.url}/files/org/vit/model.safetensors"
    server.errors["config.json"] = 500
    with pytest.raises(DownloadError, match="config.json: HTTP 500"):
        ViT.from_preset(url)
    assert _cache_files(tmp_path) == []
    del server.errors["config.json"]  # now a 404: the checkpoint has no config
    with pytest.raises(ValueError, match="does not say how many attention heads"):
        ViT.from_preset(url)
