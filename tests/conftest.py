"""Shared fixtures: tiny handles, random-weight torchvision handles, the default model, real test photos.

Add fixtures freely; keep the expensive ones session-scoped.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from models.device import available_devices, exact_float32
from models.handle import ModelHandle, Preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_handle(net: nn.Module, size: int = 32, n_classes: int | None = None, key: str = "tiny",
                mean=(0.5,) * 3, std=(0.25,) * 3) -> ModelHandle:
    """A handle around ``net`` (put in eval mode) with a size×size preprocess and labels c0, c1, …"""
    if n_classes is None:
        with torch.no_grad():
            n_classes = net.eval()(torch.zeros(1, 3, size, size)).shape[1]
    return ModelHandle(key=key, name=key, net=net.eval(), preprocess=Preprocess(size, size, mean, std),
                       labels=[f"c{i}" for i in range(n_classes)], source="test")


def randomize_bn(net: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding batch norm is really exercised."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))  # negative scales too
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net


def zoo_handle(arch: str, size: int = 64, seed: int = 0) -> ModelHandle:
    """A torchvision architecture with random weights (weights=None, seeded) at size×size."""
    from models import zoo

    torch.manual_seed(seed)
    return make_handle(zoo.build(arch, weights=False), size, 1000, key=arch, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def model_state(net: nn.Module) -> dict:
    """Everything a method must leave untouched: tensors, train flags, requires_grad, .grad, hooks."""
    from interpret.core.hooks import count_hooks

    return {
        "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "grads": [p.grad is None for p in net.parameters()],
        "hooks": count_hooks(net),
        "modules": [(n, type(m).__name__) for n, m in net.named_modules()],
    }


def assert_same_state(before: dict, net: nn.Module) -> None:
    after = model_state(net)
    assert after["hooks"] == before["hooks"], "a hook was left on the model"
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["grads"] == before["grads"], "the method wrote .grad of the model's parameters"
    assert after["modules"] == before["modules"]
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k
    assert torch._C._len_torch_function_stack() == 0, "a torch-function mode was left active"


@pytest.fixture(params=available_devices(), ids=str)
def device(request, monkeypatch) -> torch.device:
    """Each device present here ("cpu" always; "cuda", "mps" where available): oracle tests take it, move the
    handle there (``handle_on``) and compare with the CPU / float64 oracle.

    On CUDA float32 is made IEEE float32 (no TF32) and cuDNN is switched off for the test, so convolutions are
    torch's own sums of products: the order-free rounding bounds of ``tests/roundoff.py`` then hold on the GPU as
    on any CPU (cuDNN's Winograd/FFT algorithms are outside that model). The benchmark runs with cuDNN on."""
    dev = torch.device(request.param)
    if dev.type == "cuda":
        exact_float32(dev)
        monkeypatch.setattr(torch.backends.cudnn, "enabled", False)
    return dev


_MOVED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def handle_on(handle: ModelHandle, device: torch.device | str) -> ModelHandle:
    """``handle`` itself when it is on ``device`` already (the CPU run costs nothing extra), else a handle around
    a copy of its network on ``device`` with its own lock (cached per network and device; the session-scoped
    fixtures stay on the CPU for the other tests)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if handle.device == device:
        return handle
    per_net = _MOVED.setdefault(handle.net, {})
    hit = per_net.get(device)
    if hit is None:
        hit = per_net[device] = dataclasses.replace(handle, net=copy.deepcopy(handle.net).to(device),
                                                    lock=threading.RLock())
    return hit


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Real offline photos from scikit-image."""
    return {name: Image.fromarray(getattr(data, name)()).convert("RGB")
            for name in ("chelsea", "coffee", "astronaut", "rocket")}


@pytest.fixture(scope="session")
def default_handle() -> ModelHandle:
    """The default model (EfficientNet-Lite0, real ImageNet weights)."""
    from models import default

    return default.load()


@pytest.fixture(scope="session")
def resnet18_handle() -> ModelHandle:
    return zoo_handle("resnet18", 64)


@pytest.fixture(scope="session")
def vgg16_handle() -> ModelHandle:
    return zoo_handle("vgg16", 64)


@pytest.fixture
def tiny_handle():
    """Factory: tiny_handle(net, size=32) → ModelHandle."""
    return make_handle


@pytest.fixture(scope="session")
def make_zoo_handle():
    """Factory: make_zoo_handle(arch, size=64) → random-weight torchvision handle."""
    return zoo_handle


def deepcopy_net(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net)


def rel_err(a, b) -> float:
    """max |a − b| / max |b| (0 when both are zero)."""
    a = np.asarray(a.detach() if torch.is_tensor(a) else a, dtype=np.float64)
    b = np.asarray(b.detach() if torch.is_tensor(b) else b, dtype=np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())
