"""The frozen inference copy used by fast LIME computes the model's function (oracle: the shared model itself),
for any batch size, from several threads at once, without touching the shared model, and falls back to the eager
folded copy when TorchScript fails."""
from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from interpret import frozen
from interpret.frozen import frozen_copy
from tests.conftest import assert_same_state, make_handle, model_state


def _batch(handle, photo, n: int, seed: int = 0) -> torch.Tensor:
    """n versions of the photo with random blocks greyed out, as LIME's perturbations."""
    g = torch.Generator().manual_seed(seed)
    x = handle.input_tensor(photo)
    keep = (torch.rand(n, 1, 7, 7, generator=g) > 0.5).float()
    keep = torch.nn.functional.interpolate(keep, size=x.shape[-2:], mode="nearest")
    return x * keep


def test_frozen_default_model_matches_the_model(default_handle, photos):
    h = default_handle
    before = model_state(h.net)
    fz = frozen_copy(h, torch.zeros(4, 3, 224, 224))
    assert isinstance(fz, torch.jit.ScriptModule)  # TorchScript is available here: the fast path is the one tested
    for n, name in ((1, "coffee"), (4, "chelsea"), (7, "astronaut")):
        b = _batch(h, photos[name], n, seed=n)
        with torch.inference_mode():
            want = torch.softmax(h.net(b), 1)
            got = torch.softmax(fz(b.contiguous(memory_format=torch.channels_last)), 1)
        assert (got - want).abs().max().item() <= 1e-5
        assert torch.equal(got.argmax(1), want.argmax(1))
    assert frozen_copy(h, torch.zeros(4, 3, 224, 224)) is fz  # cached per network
    assert_same_state(before, h.net)


def _small_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 8, 3, groups=8),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def test_rebuilt_when_weights_change_and_fallback_when_torchscript_fails(monkeypatch):
    net = _small_net()
    for m in net.modules():  # non-trivial batch-norm statistics, so folding is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    h = make_handle(net, 16)
    x = torch.randn(5, 3, 16, 16)
    a = frozen_copy(h, x[:2])
    with torch.no_grad():
        assert torch.allclose(a(x), net(x), atol=1e-5)
        net[0].weight.mul_(2)  # the operator swaps weights: the cached copy must not be reused
    b = frozen_copy(h, x[:2])
    assert b is not a
    with torch.no_grad():
        assert torch.allclose(b(x), net(x), atol=1e-5)

    def broken(*args, **kwargs):
        raise RuntimeError("TorchScript unavailable")

    monkeypatch.setattr(frozen, "_freeze", broken)
    h2 = make_handle(_small_net(), 16)
    c = frozen_copy(h2, x[:2])
    assert not isinstance(c, torch.jit.ScriptModule)  # the eager batch-norm-folded copy
    with torch.no_grad():
        assert torch.allclose(c(x), h2.net(x), atol=1e-5)


def test_frozen_copy_from_several_threads(default_handle, photos):
    h = default_handle
    fz = frozen_copy(h, torch.zeros(4, 3, 224, 224))
    batches = [_batch(h, photos[name], 4, seed=i) for i, name in enumerate(("coffee", "chelsea", "rocket"))]
    with torch.inference_mode():
        solo = [fz(b.contiguous(memory_format=torch.channels_last)) for b in batches]
    out: dict[int, list[torch.Tensor]] = {}

    def work(k: int) -> None:
        with torch.inference_mode():
            out[k] = [fz(batches[(k + r) % 3].contiguous(memory_format=torch.channels_last)) for r in range(3)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for k in range(4):
        for r in range(3):
            assert np.allclose(out[k][r].numpy(), solo[(k + r) % 3].numpy(), atol=1e-5)
