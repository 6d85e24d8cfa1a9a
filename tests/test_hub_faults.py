"""`hf://` downloads from an endpoint that misbehaves (tests/hub_server.py on 127.0.0.1,
reached through HF_ENDPOINT) keep the promises of URL downloads: one deadline covers
every attempt, every failure is a DownloadError that says what to do, and nothing is
written or read outside the huggingface_hub cache."""

import json
import os
import time
import types

import numpy as np
import pytest

from hub_server import StandInHub, use_stand_in_hub
from keras_vit import hub
from keras_vit.download import DownloadError

WEIGHTS = hub.WEIGHTS
# fetch does not parse the files: 60 bytes trickle for 60 * TRICKLE_SECONDS = 3 s.
FILES = {WEIGHTS: np.random.default_rng(0).bytes(60),
         "config.json": json.dumps({"num_attention_heads": 4}).encode()}
OTHER_WEIGHTS = np.random.default_rng(1).bytes(60)
DEADLINE = 1.0


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """The stand-in Hub with test/vit (weights and config.json) and test/weights-only."""
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    server = StandInHub()
    use_stand_in_hub(monkeypatch, server.url, tmp_path / "hf_home")
    server.commits = server.add("test/vit", {"main": FILES})
    server.add("test/weights-only", {"main": {WEIGHTS: OTHER_WEIGHTS}})
    yield server
    server.stop()


@pytest.fixture
def no_retry_pause(monkeypatch):
    """huggingface_hub pauses 1 s before each of its 5 retries of a failed body."""
    import huggingface_hub.file_download

    monkeypatch.setattr(huggingface_hub.file_download, "time",
                        types.SimpleNamespace(sleep=lambda seconds: None))


def _files(folder):
    """Every file and link under `folder`, relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() or p.is_symlink())


def _no_partial_or_final_weights(tmp_path):
    cache = tmp_path / "hf_home" / "hub"
    assert not list(cache.rglob("*.incomplete"))
    assert not list((cache / "models--test--vit" / "snapshots").rglob(WEIGHTS))


@pytest.mark.parametrize("fault, how", [
    ({"body": "trickle"}, "argument"),  # 3 s of bytes
    ({"body": "endless"}, "environment"),  # no end at all
    ({"body": "trickle-cut"}, "argument"),  # each attempt slow, then cut: retried
    ({"head": "stall"}, "environment"),  # no answer to the metadata request
], ids=["trickle", "endless", "retried", "stalled-head"])
def test_the_deadline_covers_every_attempt(fault, how, stand_in, monkeypatch, tmp_path):
    hub.fetch("hf://test/weights-only")  # a first connection, outside the timed fetch
    stand_in.faults[WEIGHTS] = fault
    if how == "environment":
        monkeypatch.setenv("KERAS_VIT_DOWNLOAD_DEADLINE", str(DEADLINE))
    start = time.monotonic()
    with pytest.raises(DownloadError, match=f"within its {DEADLINE:g} s deadline") as err:
        hub.fetch("hf://test/vit", **({"deadline": DEADLINE} if how == "argument" else {}))
    assert time.monotonic() - start < DEADLINE + 2.5
    assert "KERAS_VIT_DOWNLOAD_DEADLINE" in str(err.value) and not err.value.not_found
    if fault.get("body") in ("trickle", "endless"):
        assert stand_in.body_ended.wait(5), "the body went on after the deadline"
    _no_partial_or_final_weights(tmp_path)


def test_a_retry_asked_for_past_the_deadline_is_not_waited_for(stand_in, tmp_path):
    stand_in.faults[WEIGHTS] = {"body": "busy"}  # HTTP 429, Retry-After: 3600
    start = time.monotonic()
    with pytest.raises(DownloadError, match="HTTP 429 and asks to wait 3600 s before trying "
                                            "again, past the download deadline"):
        hub.fetch("hf://test/vit", deadline=60)
    assert time.monotonic() - start < 30
    _no_partial_or_final_weights(tmp_path)


def test_the_deadline_is_checked(stand_in, monkeypatch):
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        hub.fetch("hf://test/vit", deadline=0)
    monkeypatch.setenv("KERAS_VIT_DOWNLOAD_DEADLINE", "soon")
    with pytest.raises(ValueError, match="KERAS_VIT_DOWNLOAD_DEADLINE must be a number"):
        hub.fetch("hf://test/vit")
    assert stand_in.requests == []


@pytest.mark.parametrize("fault, message", [
    ({"head": "loop"}, "redirects in a loop"),
    ({"body": "loop"}, "redirects in a loop"),
    ({"body": "cut"}, "Nothing partial was kept. Try again"),
    ({"body": "close-cut"}, "Nothing partial was kept. Try again"),
    ({"body": "close-cut", "headers": {"X-Linked-Size": None}},  # no length anywhere
     "a transfer cut short could not be told from a whole file"),
], ids=["head-loop", "body-loop", "cut", "close-cut", "close-cut-unsized"])
def test_transfer_failures_are_download_errors(fault, message, stand_in, no_retry_pause,
                                               tmp_path):
    stand_in.faults[WEIGHTS] = fault
    with pytest.raises(DownloadError, match=message) as err:
        hub.fetch("hf://test/vit")
    assert f"{WEIGHTS} of test/vit" in str(err.value) and stand_in.url in str(err.value)
    assert not err.value.not_found
    _no_partial_or_final_weights(tmp_path)
    stand_in.faults.clear()  # the next try works
    assert hub.fetch("hf://test/vit").endswith(WEIGHTS)


@pytest.mark.parametrize("repo, name, headers", [
    ("vit", WEIGHTS, {"X-Linked-Etag": '"../../../../outside/evil"'}),
    ("vit", WEIGHTS, {"X-Linked-Etag": '"{outside}/evil"'}),
    ("vit", WEIGHTS, {"X-Linked-Etag": '"{outside}/secret.safetensors"'}),  # exists
    ("vit", WEIGHTS, {"X-Repo-Commit": "../../../../outside"}),
    ("vit", WEIGHTS, {"X-Repo-Commit": "{outside}"}),
    ("vit", WEIGHTS, {"X-Repo-Commit": "a/b"}),
    ("weights-only", "config.json", {"X-Repo-Commit": "../../../../outside"}),  # a 404
], ids=["etag-up", "etag-absolute", "etag-existing", "commit-up", "commit-absolute",
        "commit-nested", "commit-of-a-404"])
def test_hostile_answers_write_nothing_outside_the_cache(repo, name, headers, stand_in,
                                                         tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.safetensors"
    secret.write_bytes(b"not for keras_vit")
    stand_in.faults[name] = {"headers": {key: value.replace("{outside}", str(outside))
                                         for key, value in headers.items()}}
    with pytest.raises(DownloadError, match="HF_ENDPOINT is the Hugging Face Hub or a mirror "
                                            "you trust; nothing was written") as err:
        hub.fetch(f"hf://test/{repo}")
    assert f"{name} of test/{repo}" in str(err.value)
    assert _files(outside) == ["secret.safetensors"]
    assert secret.read_bytes() == b"not for keras_vit"
    assert set(os.listdir(tmp_path)) <= {"hf_home", "outside"}
    cache = tmp_path / "hf_home" / "hub"
    assert [p for p in (tmp_path / "hf_home").rglob("*") if cache not in (p, *p.parents)] == []
    for path in cache.rglob("*"):
        assert os.path.realpath(path).startswith(str(cache) + os.sep)


@pytest.mark.parametrize("name", [WEIGHTS, "config.json"])
def test_a_cached_file_outside_the_cache_is_not_read(name, stand_in, monkeypatch, tmp_path):
    """huggingface_hub itself (as transformers calls it) stores a file outside its cache
    when the endpoint says so; keras_vit then refuses to read it, and does not remove what
    it did not write. huggingface_hub's own calls are not guarded by keras_vit."""
    import huggingface_hub

    hub.fetch("hf://test/weights-only")  # keras_vit's hooks are on huggingface_hub's client
    outside = tmp_path / "outside"
    outside.mkdir()
    header = "X-Linked-Etag" if name == WEIGHTS else "ETag"
    stand_in.faults[name] = {"headers": {header: f'"{outside}/{name}"'}}
    plain = huggingface_hub.hf_hub_download("test/vit", name)
    assert os.path.realpath(plain) == str(outside / name)
    stand_in.faults.clear()

    for offline in (False, True):
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
        with pytest.raises(DownloadError, match="outside the huggingface_hub cache") as err:
            hub.fetch("hf://test/vit")
        message = str(err.value)
        assert plain in message and str(outside / name) in message
        assert "remove " + str(tmp_path / "hf_home" / "hub" / "models--test--vit") in message
        assert (outside / name).read_bytes() == FILES[name]


def test_a_client_factory_set_by_the_user_is_kept(stand_in):
    """keras_vit's hooks go on the clients that huggingface_hub's factory in use makes
    (the user's, with their proxies or certificates), read from a private name of
    huggingface_hub: a release that renames it fails here."""
    import httpx2
    import huggingface_hub
    from huggingface_hub.utils import _http

    previous, made = _http._GLOBAL_CLIENT_FACTORY, []

    def users_factory():
        made.append(httpx2.Client(follow_redirects=True, timeout=None))
        return made[-1]

    huggingface_hub.set_client_factory(users_factory)
    try:
        stand_in.faults[WEIGHTS] = {"headers": {"X-Linked-Etag": '"../../x"'}}
        with pytest.raises(DownloadError, match="not a plain file name"):
            hub.fetch("hf://test/vit")
        assert made and huggingface_hub.get_session() is made[-1]
    finally:
        huggingface_hub.set_client_factory(previous)
