"""Device choice: explicit name, $CNN_LENS_DEVICE, else CUDA, else MPS, else CPU; bad names are refused with the
devices that exist; a handle knows and changes its device; ``load_model`` moves what it loads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import make_handle
from models import device as dv
from models import registry
from models.device import DeviceError, available_devices, module_device, resolve_device


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_available_devices_lists_cpu_first_and_only_present_ones():
    names = available_devices()
    assert names[0] == "cpu"
    assert ("cuda" in names) == torch.cuda.is_available()
    assert ("mps" in names) == bool(torch.backends.mps.is_available())


def test_explicit_names(monkeypatch):
    monkeypatch.setenv(dv.ENV_VAR, "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_default_order(monkeypatch):
    monkeypatch.delenv(dv.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dv, "_mps_available", lambda: False)
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(dv, "_mps_available", lambda: True)
    assert resolve_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device() == torch.device("cuda")  # CUDA before MPS


def test_env_overrides_the_default_and_an_explicit_name_overrides_env(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(dv.ENV_VAR, "cpu")
    assert resolve_device() == torch.device("cpu")  # the env var beats "CUDA when available"
    monkeypatch.setenv(dv.ENV_VAR, "no-such-device")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit name beats the env var
    with pytest.raises(DeviceError, match="no-such-device"):
        resolve_device()


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", "12"])
def test_unknown_names_are_refused_with_what_is_available(name):
    with pytest.raises(DeviceError) as err:
        resolve_device(name)
    msg = str(err.value)
    assert repr(name) in msg and "available here: cpu" in msg
    assert isinstance(err.value, ValueError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")


@pytest.mark.skipif(bool(torch.backends.mps.is_available()), reason="needs a machine without MPS")
def test_mps_without_apple_gpu_is_refused():
    with pytest.raises(DeviceError, match="no Apple MPS"):
        resolve_device("mps")


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match="1 CUDA GPU"):
        resolve_device("cuda:3")


def test_handle_device_and_to(device):
    h = make_handle(_tiny(), 16)
    assert h.device == torch.device("cpu")
    assert module_device(nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU
    p_cpu = h.predict(torch.zeros(1, 3, 16, 16))
    assert h.to(device) is h
    assert h.device.type == device.type
    x = h.input_tensor(Image.new("RGB", (20, 20), (120, 30, 200)))
    assert x.device.type == device.type
    p = h.predict(torch.zeros(1, 3, 16, 16))  # a CPU tensor is moved to the net
    assert isinstance(p, np.ndarray)
    np.testing.assert_allclose(p, p_cpu, rtol=0, atol=1e-5)  # float32 softmax of the same tiny net


def test_load_model_moves_the_handle_and_checks_the_device_first(monkeypatch):
    built = []

    def fake_build(key):
        built.append(key)
        return make_handle(_tiny(), 16)

    monkeypatch.setattr(registry, "_build", fake_build)
    with pytest.raises(DeviceError):
        registry.load_model("anything", device="warp-drive")
    assert built == []  # refused before any weights were read
    h = registry.load_model("anything", device="cpu")
    assert built == ["anything"] and h.device == torch.device("cpu")
