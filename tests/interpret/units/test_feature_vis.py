"""Activation maximization: the objective rises, the same seed gives the same image, the image is valid, every
switch works, and the shared model is left exactly as it was."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from conftest import handle_on
from interpret.units import feature_vis as fv
from interpret.plots import units as UP
from interpret.core.hooks import count_hooks
from models.handle import ModelHandle, Preprocess


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    return ModelHandle(key="tiny", name="tiny", net=net.eval(),
                       preprocess=Preprocess(resize=32, crop=32, mean=(0.5,) * 3, std=(0.25,) * 3),
                       labels=["a", "b", "c", "d"], source="test")


@pytest.fixture(scope="module")
def default_model():
    from models.default import load

    return load()


def _state(net):
    return ({k: v.clone() for k, v in net.state_dict().items()}, [p.requires_grad for p in net.parameters()],
            [p.grad is None for p in net.parameters()], count_hooks(net), [m.training for m in net.modules()])


def _same_state(a, b):
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1:] == b[1:]


@pytest.mark.slow
def test_objective_rises_on_default_model(default_model):
    """A channel of a middle block and the class "espresso" of EfficientNet-Lite0 (real weights)."""
    before = _state(default_model.net)
    for obj in [fv.channel_objective("_blocks.6", 5), fv.logit_objective("espresso")]:
        res = fv.synthesize(default_model, obj, steps=16, size=48, seed=1)
        h = np.array(res.history)
        assert h[-4:].mean() > h[:3].mean() + 0.1 * abs(h[:3].mean()) + 1e-3, obj
        assert res.image.shape == (48, 48, 3) and res.image.dtype == np.float32
        assert np.isfinite(res.image).all() and res.image.min() >= 0 and res.image.max() <= 1
    _same_state(before, _state(default_model.net))


def test_start_image_is_the_same_on_every_device(device):
    """The parameters start from the CPU's seeded draw on every device (so a seed means one start image)."""
    for param in ("pixel", "fourier"):
        s = fv.Settings(param=param)
        a = fv._Image(s, 32, torch.Generator().manual_seed(4))
        b = fv._Image(s, 32, torch.Generator().manual_seed(4), device)
        assert b.p.device.type == device.type
        assert torch.equal(a.p.detach(), b.p.detach().cpu())


def test_same_seed_same_image(tiny, device):
    tiny = handle_on(tiny, device)
    obj = fv.unit_objective("3", 2)
    a = fv.synthesize(tiny, obj, steps=10, seed=3)
    b = fv.synthesize(tiny, obj, steps=10, seed=3)
    c = fv.synthesize(tiny, obj, steps=10, seed=4)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.history == b.history
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("kw", [
    dict(param="pixel", decorrelate=False, jitter=0, scale=0, rotate=0),
    dict(param="pixel", decorrelate=True, blur_every=2, l2=1.0, tv=1.0),
    dict(param="fourier", decorrelate=False, blur_every=3, blur_sigma=1.0),
    dict(param="fourier", decorrelate=True, jitter=2, scale=0.2, rotate=30, size=40),
])
def test_every_switch(tiny, kw):
    before = _state(tiny.net)
    res = fv.synthesize(tiny, fv.channel_objective("4", 1), steps=12, seed=0, **kw)
    h = np.array(res.history)
    assert h[-3:].mean() > h[:2].mean()
    assert np.isfinite(res.image).all() and 0 <= res.image.min() and res.image.max() <= 1
    assert res.image.shape[0] == kw.get("size", 32)
    _same_state(before, _state(tiny.net))
    assert UP.feature_vis_figure(res).data


def test_blur_matches_spatial_gaussian():
    """The Fourier blur (frequency response) equals a circular spatial Gaussian blur of the same image."""
    s = fv.Settings(param="fourier", decorrelate=False)
    img = fv._Image(s, 32, torch.Generator().manual_seed(0))
    with torch.no_grad():
        img.p.mul_(100)
        x = img.raw().clone()
        img.blur(1.0)
        y = img.raw()
    k = torch.arange(-16, 16, dtype=torch.float32)
    g = torch.exp(-k ** 2 / 2)
    g = torch.roll(g / g.sum(), 16)
    want = torch.fft.ifft2(torch.fft.fft2(x) * torch.fft.fft2(g[:, None] * g[None, :])).real
    torch.testing.assert_close(y, want, atol=2e-3 * x.abs().max().item(), rtol=0)


def test_progress_cancel_and_errors(tiny):
    seen = []
    fv.synthesize(tiny, fv.logit_objective("b"), steps=9, progress_every=4,
                  progress=lambda s, v, im: seen.append((s, im.shape)))
    assert [s for s, _ in seen] == [4, 8, 9] and seen[0][1] == (32, 32, 3)
    stop = threading.Event()
    res = fv.synthesize(tiny, fv.logit_objective(1), steps=50, progress_every=1,
                        progress=lambda s, v, im: stop.set() if s == 3 else None, cancel=stop)
    assert res.cancelled and len(res.history) == 3
    with pytest.raises(ValueError, match="channel 99"):
        fv.synthesize(tiny, fv.channel_objective("0", 99), steps=1)
    with pytest.raises(ValueError, match="no layer"):
        fv.synthesize(tiny, fv.channel_objective("nope", 0), steps=1)
    with pytest.raises(ValueError, match="unknown class"):
        fv.synthesize(tiny, fv.logit_objective("zebra"), steps=1)
