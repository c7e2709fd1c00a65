"""The warm-up builds, once per network and weights, exactly the private copies the fast methods then use (so a
click builds nothing), from any number of threads at once, without touching the shared model; a click that comes
first waits for it; a net torch.fx cannot trace ends its warm-up at once. Also: coarse-to-fine occlusion reports
its progress per batch as the share of windows scored (the Explain page's progress bar)."""
from __future__ import annotations

import copy
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from interpret.engines import copies
from interpret.engines import incremental
from interpret.engines import warmup
from interpret.attribution.lime_fast import lime_fast
from interpret.attribution.occlusion_approx import approx_occlusion, coarse_occlusion
from tests.conftest import assert_same_state, make_handle, model_state, randomize_bn


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)))


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            y = -y
        return y.mean(dim=(2, 3))


@pytest.fixture(autouse=True)
def _no_background_warm_ups():
    """Let warm-ups that earlier page tests started in the background finish: these tests patch the builders."""
    compute = sys.modules.get("pages._ui.compute")
    for t in list(getattr(compute, "_THREADS", [])):
        t.join(120)
    yield


def _x(size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _no_building(monkeypatch) -> None:
    """From here on, tracing or freezing a copy fails: whatever runs must use what the warm-up built."""
    def refuse(*a, **k):
        raise AssertionError("a private copy was built after the warm-up")

    monkeypatch.setattr(copies, "confined_trace", refuse)
    monkeypatch.setattr(copies, "_freeze", refuse)


def test_warm_up_builds_what_the_fast_methods_use(monkeypatch):
    h = make_handle(_net(), 32)
    before = model_state(h.net)
    assert not warmup.is_started(h) and not warmup.is_ready(h)
    report = warmup.warm_up(h)
    assert report.traceable and not report.errors, report.errors
    assert set(report.seconds) == {"fx copy (batch norm folded)", "occlusion engine, first pass",
                                   "frozen TorchScript copy"} | (
        {"occlusion engine, bfloat16 pass"} if incremental.bf16_pays() else set())
    assert warmup.is_ready(h) and warmup.progress_of(h) == (1.0, "done")
    assert warmup.warm_up(h) is report  # once per network and weights
    assert_same_state(before, h.net)

    gm = copies.traced_copy(h)
    fz = copies.frozen_copy(h, torch.zeros(5, 3, 32, 32))
    assert isinstance(fz, torch.jit.ScriptModule)
    _no_building(monkeypatch)
    assert copies.traced_copy(h) is gm
    assert copies.frozen_copy(h, torch.zeros(5, 3, 32, 32)) is fz
    x = _x()
    runs = lambda hh: (approx_occlusion(hh, x, 2, window=8, stride=4, tolerance=0.0, low_precision=False),
                       approx_occlusion(hh, x, 2, window=8, stride=4),
                       lime_fast(hh, x, 2, segmentation="slic", seg_params={"n_segments": 12}, num_samples=60))
    warm = runs(h)
    assert_same_state(before, h.net)
    # oracle: the same methods on a fresh handle of the same weights, which build their own copies in the call
    # (the warm-up must change where the copies are built, not what they compute: same kernels, same numbers)
    monkeypatch.undo()
    cold = runs(make_handle(copy.deepcopy(h.net), 32))
    for w, c in zip(warm, cold):
        assert np.array_equal(w.map, c.map), w.method
    assert warm[2].extra["samples_used"] == cold[2].extra["samples_used"]


def test_concurrent_warm_ups_build_once_and_share(monkeypatch):
    h = make_handle(_net(1), 32)
    calls = []
    real = copies._freeze

    def counting(gm, example):
        if example.shape[-1] == 32:  # this test's net (not a background warm-up of another test's model)
            calls.append(threading.get_ident())
        return real(gm, example)

    monkeypatch.setattr(copies, "_freeze", counting)
    reports, errors = [], []

    def go():
        try:
            reports.append(warmup.warm_up(h))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(calls) == 1
    assert len(reports) == 4 and all(r is reports[0] for r in reports)


def test_a_click_during_the_warm_up_waits_for_it(monkeypatch):
    h = make_handle(_net(2), 32)
    gate, entered = threading.Event(), threading.Event()
    real = copies._freeze

    def slow(gm, example):
        if example.shape[-1] == 32:
            entered.set()
            assert gate.wait(30)
        return real(gm, example)

    monkeypatch.setattr(copies, "_freeze", slow)
    bg = threading.Thread(target=warmup.warm_up, args=(h,))
    bg.start()
    assert entered.wait(30)
    assert warmup.is_started(h) and not warmup.is_ready(h)
    frac, step = warmup.progress_of(h)
    steps = 4 if incremental.bf16_pays() else 3
    assert frac == (steps - 1) / steps and step == "frozen TorchScript copy"  # all but the last step done
    assert not warmup.wait(h, timeout=0.05)
    seen = []
    click = threading.Thread(target=lambda: seen.append(warmup.warm_up(h, progress=lambda f: None)))
    click.start()
    click.join(0.2)
    assert click.is_alive()  # the click waits for the build instead of starting its own
    gate.set()
    click.join(30)
    bg.join(30)
    assert warmup.is_ready(h) and seen and seen[0] is warmup.warm_up(h)


def test_weights_changed_in_place_are_warmed_up_again():
    net = _net(3)
    h = make_handle(net, 32)
    first = warmup.warm_up(h)
    gm = copies.traced_copy(h)
    with torch.no_grad():
        net[0].weight.mul_(-1.5)
    assert not warmup.is_ready(h) and not warmup.is_started(h)
    second = warmup.warm_up(h)
    assert second is not first and warmup.is_ready(h)
    gm2 = copies.traced_copy(h)
    assert gm2 is not gm
    # oracle: the copy a fresh handle of the changed weights builds for itself
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    fresh = copies.traced_copy(make_handle(copy.deepcopy(net), 32))
    with torch.no_grad():
        assert torch.equal(gm2(x), fresh(x))
        assert not torch.equal(gm2(x), gm(x))


def test_untraceable_net_ends_at_once_and_methods_fall_back():
    h = make_handle(_Branchy(), 16)
    before = model_state(h.net)
    report = warmup.warm_up(h)
    assert not report.traceable and "fx copy (batch norm folded)" in report.errors
    assert list(report.seconds) == ["fx copy (batch norm folded)"]
    assert warmup.is_ready(h)
    res = approx_occlusion(h, _x(16), 1, window=8, stride=4, tolerance=0.0, low_precision=False)
    assert res.extra["engine"] == "batched"
    assert_same_state(before, h.net)


@pytest.mark.parametrize("tolerance", [0.0, 0.12])
def test_coarse_occlusion_reports_the_share_of_windows_scored(tolerance):
    h = make_handle(_net(5), 32)
    seen: list[float] = []
    maps = list(coarse_occlusion(h, _x(), 1, window=6, stride=2, coarse_step=4, tolerance=tolerance,
                                 batch_size=16, progress=seen.append))
    final = maps[-1]
    total = final.extra["windows"]
    assert total == 14 * 14
    assert seen == sorted(seen) and seen[0] > 0
    # per batch: every value is a whole number of windows out of all of them, ending at what was scored
    counts = np.array(seen) * total
    assert np.allclose(counts, np.round(counts), atol=1e-9)
    assert round(seen[-1] * total) == final.extra["evaluated"]
    assert len(seen) > len(maps)  # finer than once per level
    if tolerance == 0.0:
        assert seen[-1] == 1.0


def test_pages_start_the_warm_up_of_their_model(monkeypatch):
    """Any page that gets its model starts that model's warm-up (in the background), so the first click on a fast
    method finds the copies built."""
    from streamlit.testing.v1 import AppTest

    import pages._ui.state as state
    from models import DEFAULT_MODEL
    from tests.apptest_util import navigation_only

    started = []
    monkeypatch.setattr(state, "start_warm_up", started.append)
    with navigation_only():
        at = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "app.py"), default_timeout=300)
        at.run()
    assert not at.exception
    assert started and {h.key for h in started} == {DEFAULT_MODEL}


def test_batches_cover_every_window_once_in_few_sizes():
    from interpret.engines.incremental import _batches

    sizes = set()
    for n in range(1, 300):
        bs = _batches(n, 64)
        assert bs[0][0] == 0 and bs[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bs, bs[1:]))  # contiguous: every window exactly once
        for s, e, size in bs:
            assert e - s <= size <= 64 and size - (e - s) < 8
            sizes.add(size)
    assert sizes <= set(range(1, 9)) | set(range(16, 65, 8))  # at most 15 batch shapes, ever


def test_padded_batches_give_the_drops_of_unpadded_ones():
    """Oracle: every window scored alone (batch of 1: nothing padded, no other window in the box)."""
    from interpret.engines.windows import baseline_image

    h = make_handle(_net(6), 32)
    x = _x()
    corners = [(r, c) for r in range(0, 27, 2) for c in range(0, 27, 5)][:37]  # 37: batches 40 (3 padded)
    eng = incremental.IncrementalOcclusion(h)
    base = baseline_image(x)
    _, padded, _, p_padded = eng.scores(x, base, corners, 6, 1, batch_size=64)
    _, alone, _, p_alone = eng.scores(x, base, corners, 6, 1, batch_size=1)
    # the same function of each window, computed on boxes of other sizes (a box is the largest in its batch) with
    # other kernels: float32 rounding only. Each output sums at most 8·3·3 = 72 products, so each of the net's
    # 8 rounding layers adds at most 72·u relative to the logit scale (u = 2⁻²⁴); softmax moves a probability by
    # at most twice the largest change of a logit
    bound = 8 * 72 * 2.0 ** -24 * np.abs(alone).max()
    assert np.abs(padded - alone).max() <= bound
    assert np.abs(p_padded - p_alone).max() <= 2 * bound
