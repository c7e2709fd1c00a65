"""The frozen inference copy used by fast LIME computes the model's function (oracle: the shared model itself),
for any batch size, from several threads at once, without touching the shared model, and falls back to the eager
folded copy when TorchScript fails. Both sides are float32 evaluations (folded or not) of one function, so they
may differ by twice the rounding bound of tests/roundoff.py, derived from the arithmetic, and no more."""
from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from interpret.engines import copies as frozen
from interpret.engines.copies import frozen_copy
from tests.conftest import assert_same_state, make_handle, model_state
from tests.roundoff import rounding_bound, softmax_rounding


def _top_bound(net: nn.Module, b: torch.Tensor, idx: torch.Tensor, probs: bool) -> np.ndarray:
    """Rounding bound of the logits (or softmax probabilities) of classes ``idx`` (B, k) of every image."""
    pick = (lambda z: torch.gather(torch.softmax(z, 1), 1, idx)) if probs else (lambda z: torch.gather(z, 1, idx))
    res = rounding_bound(net, b, pick, dtype=torch.float32)
    if not probs:
        return res.bound
    return res.bound + np.stack([softmax_rounding(res.logits, idx[:, j].numpy()) for j in range(idx.shape[1])], 1)


def _assert_close(got: torch.Tensor, want: torch.Tensor, bound: np.ndarray) -> None:
    diff = (got.double() - want.double()).abs().numpy()
    assert (diff <= 2 * bound).all(), (diff.max(), bound.min())
    assert (2 * bound < 0.05 * want.abs().max().item()).all()  # small enough for a wrong value to fail


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
    bs = [_batch(h, photos[name], n, seed=n) for n, name in ((1, "coffee"), (4, "chelsea"), (7, "astronaut"))]
    with torch.inference_mode():
        want = torch.cat([torch.softmax(h.net(b), 1) for b in bs])
        got = torch.cat([torch.softmax(fz(b.contiguous(memory_format=torch.channels_last)), 1) for b in bs])
    # the two most probable classes of every image; the images are independent, so one bound for all 12
    top = want.topk(2, dim=1).indices
    bound = _top_bound(h.net, torch.cat(bs), top, probs=True)
    _assert_close(got.gather(1, top), want.gather(1, top), bound)
    clear = (want.gather(1, top[:, :1]) - want.gather(1, top[:, 1:2]))[:, 0].numpy() > 2 * bound.sum(1)
    assert clear.any() and torch.equal(got.argmax(1)[clear], want.argmax(1)[clear])  # top-1 unless a near tie
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
    every = torch.arange(5).expand(5, 5)
    a = frozen_copy(h, x[:2])
    with torch.no_grad():
        _assert_close(a(x), net(x), _top_bound(net, x, every, probs=False))
        net[0].weight.mul_(2)  # the operator swaps weights: the cached copy must not be reused
    b = frozen_copy(h, x[:2])
    assert b is not a
    with torch.no_grad():
        _assert_close(b(x), net(x), _top_bound(net, x, every, probs=False))

    def broken(*args, **kwargs):
        raise RuntimeError("TorchScript unavailable")

    monkeypatch.setattr(frozen, "_freeze", broken)
    h2 = make_handle(_small_net(), 16)
    c = frozen_copy(h2, x[:2])
    assert not isinstance(c, torch.jit.ScriptModule)  # the eager batch-norm-folded copy
    with torch.no_grad():
        _assert_close(c(x), h2.net(x), _top_bound(h2.net, x, every, probs=False))


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
    # the same module on the same batch: equal up to rounding (the bound of the 2 largest logits of each image,
    # all 12 images at once), while another image's logits differ far more than that
    alone = torch.cat(solo)
    top = alone.topk(2, dim=1).indices
    bound = _top_bound(h.net, torch.cat(batches), top, probs=False)
    for k in range(4):
        together = torch.cat([out[k][(i - k) % 3] for i in range(3)])
        _assert_close(together.gather(1, top), alone.gather(1, top), bound)
