"""Weights on request (models/download.py) against a file server on 127.0.0.1 only; TORCH_HOME in tmp_path."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading

import pytest
import torch
import torchvision

from models import download, zoo

ARCH = "squeezenet1_1"  # the zoo's smallest file (5 MB)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(download.ENV_VAR, raising=False)
    return tmp_path / "torch"


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (a thread); yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/weights"
    finally:
        server.shutdown()
        server.server_close()


def _weights_file() -> tuple[bytes, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    state = torchvision.models.squeezenet1_1(num_classes=1000).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue(), state


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_url_base_is_overridable(monkeypatch):
    name = zoo.weights_status(ARCH).file_name
    assert download.weights_url(ARCH, "http://127.0.0.1:1/w/") == f"http://127.0.0.1:1/w/{name}"
    monkeypatch.setenv(download.ENV_VAR, "http://127.0.0.1:2/m")
    assert download.weights_url(ARCH) == f"http://127.0.0.1:2/m/{name}"
    monkeypatch.delenv(download.ENV_VAR)
    assert download.weights_url(ARCH) == zoo.default_weights(ARCH).url
    assert download.hash_prefix("resnet18-f37072fd.pth") == "f37072fd"


def test_download_lands_checked_and_the_model_loads(torch_home, served):
    root, base = served
    data, state = _weights_file()
    name = zoo.weights_status(ARCH).file_name
    (root / "weights").mkdir()
    (root / "weights" / name).write_bytes(data)
    assert not zoo.weights_status(ARCH).present
    seen: list[tuple[int, int | None]] = []
    # The file served is not torchvision's, so its real hash prefix is the expected one here.
    path = download.download_weights(ARCH, base_url=base, progress=lambda n, t: seen.append((n, t)),
                                     expected_prefix=hashlib.sha256(data).hexdigest()[:8])
    assert path == zoo.weights_status(ARCH).path and path.read_bytes() == data
    assert _leftovers(path.parent) == [name]  # no .partial file left
    assert seen[-1] == (len(data), len(data))
    handle = zoo.load(ARCH)
    for k, v in handle.net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_hash_mismatch_is_refused_and_nothing_is_left(torch_home, served):
    root, base = served
    data, _ = _weights_file()
    name = zoo.weights_status(ARCH).file_name
    (root / "weights").mkdir()
    (root / "weights" / name).write_bytes(data)  # torchvision's hash prefix (b8a52dc0) is not this file's
    assert not hashlib.sha256(data).hexdigest().startswith(download.hash_prefix(name))
    with pytest.raises(download.DownloadError, match="SHA-256 does not start with"):
        download.download_weights(ARCH, base_url=base)
    assert _leftovers(zoo.checkpoint_dir()) == []
    assert not zoo.weights_status(ARCH).present


def test_missing_file_on_server_says_so_with_the_manual_steps(torch_home, served):
    _, base = served
    with pytest.raises(download.DownloadError) as e:
        download.download_weights(ARCH, base_url=base)
    assert "HTTP 404" in str(e.value) and "On a machine with internet" in str(e.value)
    assert _leftovers(zoo.checkpoint_dir()) == []


def test_server_down_gives_the_message(torch_home):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(download.DownloadError) as e:
        download.download_weights(ARCH, base_url=f"http://127.0.0.1:{port}", progress=lambda n, t: None)
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "refused" in msg.lower()
    assert zoo.weights_status(ARCH).message() in msg
    assert _leftovers(zoo.checkpoint_dir()) == []
