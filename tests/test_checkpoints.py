"""User weights: safe loading only, and a specific message for every kind of bad file."""
from __future__ import annotations

import io
import os
import pickle

import pytest
import torch
from torch import nn

from models import zoo
from models.checkpoints import CheckpointError, load_user_model, read_labels, read_state_dict

MARKER_ENV = "CNN_LENS_PWNED_MARKER"


class _Evil:
    """Unpickling this would create a file: the test asserts that it never happens."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    net = zoo.build("resnet18", weights=False)
    net.fc = nn.Linear(512, 5)
    return net.eval()


def test_resnet18_state_dict_round_trip(r18):
    h = load_user_model("resnet18", _save(r18.state_dict()), "mine.pt", b"a\nb\nc\nd\ne\n")
    assert h.num_classes == 5 and h.labels == list("abcde")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(h.net(x), r18(x))
    assert not h.net.training


def test_safetensors_and_wrapped_and_dataparallel(r18):
    from safetensors.torch import save
    x = torch.randn(1, 3, 64, 64)
    sd = r18.state_dict()
    for data in (save({k: v.contiguous() for k, v in sd.items()}), _save({"state_dict": sd}),
                 _save({"module." + k: v for k, v in sd.items()})):
        h = load_user_model("resnet18", data, "w")
        with torch.no_grad():
            torch.testing.assert_close(h.net(x), r18(x))


def test_code_executing_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    data = _save({"fc.weight": torch.zeros(2, 2), "payload": _Evil(str(marker))})
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        read_state_dict(data, "evil.pt")
    raw = pickle.dumps(_Evil(str(marker)))
    with pytest.raises(CheckpointError):
        read_state_dict(raw, "evil.pkl")
    assert not marker.exists()


def test_whole_module_is_refused(r18):
    with pytest.raises(CheckpointError, match="whole saved"):
        read_state_dict(_save(r18), "model.pt")


def test_torchscript_is_refused():
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), buf)
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_state_dict(buf.getvalue(), "scripted.pt")


@pytest.mark.parametrize("data,match", [(b"", "empty"), (os.urandom(4096), "not a PyTorch weights file"),
                                        (b"hello world, not weights", "not a PyTorch weights file")])
def test_junk_files(data, match):
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(data, "x.pt")


def test_missing_and_wrong_shape_keys_are_named(r18):
    sd = dict(r18.state_dict())
    del sd["layer1.0.conv1.weight"]
    sd["layer2.0.bn1.weight"] = torch.ones(7)
    with pytest.raises(CheckpointError) as e:
        load_user_model("resnet18", _save(sd), "w.pt")
    msg = str(e.value)
    assert "Missing keys (1): layer1.0.conv1.weight" in msg
    assert "Wrong shapes (1): layer2.0.bn1.weight: file (7,) vs model (128,)" in msg


def test_unexpected_keys_are_named(r18):
    sd = dict(r18.state_dict())
    sd["extra.head.weight"] = torch.ones(3)
    with pytest.raises(CheckpointError, match=r"Unexpected keys \(1\): extra.head.weight"):
        load_user_model("resnet18", _save(sd), "w.pt")


def test_other_architecture_is_recognised():
    sd = zoo.build("mobilenet_v2", weights=False).state_dict()
    with pytest.raises(CheckpointError, match="another architecture"):
        load_user_model("resnet18", _save(sd), "w.pt")


def test_network_without_convolution():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(CheckpointError, match="no convolution weights"):
        load_user_model("resnet18", _save(mlp.state_dict()), "mlp.pt")


def test_labels_formats():
    assert read_labels(b"cat\ndog\n", 2) == ["cat", "dog"]
    assert read_labels(b'["cat", "dog"]', 2) == ["cat", "dog"]
    assert read_labels(b'{"1": "dog", "0": "cat"}', 2) == ["cat", "dog"]
    assert read_labels(None, 2) == ["class 0", "class 1"]
    with pytest.raises(CheckpointError, match="names 3 classes but the weights have 2"):
        read_labels(b"a\nb\nc", 2)
