"""Coarse-to-fine occlusion: exact when its tolerance is exact, fewer windows and a reported quality otherwise, and a
progressive sequence of maps whose last one is the exact map."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from interpret.attribution.occlusion_approx import (_fill, _local_spread, _stages, _upper_bound, approx_occlusion,
                                                    coarse_occlusion)
from interpret.evaluation.approximation import quality
from tests.conftest import assert_same_state, handle_on, make_handle, model_state
from tests.occlusion_oracle import assert_within, exact_occlusion


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    return make_handle(net, 40)


def _captum(h, x, target, window, stride):
    with torch.no_grad():
        return Occlusion(h.net).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                          strides=(3, stride, stride), baselines=0)[0, 0].numpy()


def test_stages_are_red_black_halvings_that_partition_the_grid():
    stages = _stages(28, 28, 8)  # 224², window 15, stride 8
    assert [lv for lv, _ in stages] == [0, 1, 1, 2, 2, 3, 3]
    assert [int(m.sum()) for _, m in stages] == [25, 9, 30, 49, 112, 169, 390]
    total = sum(m.astype(int) for _, m in stages)
    assert (total == 1).all()  # every window in exactly one stage
    _, centres = stages[1]
    assert sorted(map(tuple, np.argwhere(centres))) == [(i, j) for i in (4, 12, 20) for j in (4, 12, 20)]
    edges = stages[2][1]
    assert edges[0, 4] and edges[4, 0] and edges[27, 4] and not edges[4, 4]
    assert [lv for lv, _ in _stages(1, 7, 4)] == [0, 1, 2]  # a single row: no centres, edges only


def test_fill_is_exact_on_planes_and_spread_sees_the_nearest_ring():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:9, 0:11]
    plane = np.stack([2.0 * yy - 0.5 * xx + 3, -yy + 4.0 * xx], axis=-1)
    known = rng.random((9, 11)) < 0.4
    known[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    filled = _fill(known, np.where(known[..., None], plane, np.nan))
    assert np.allclose(filled, plane)  # linear over a triangulation: planes are reproduced
    row = _fill(np.array([[True, False, False, True]]), np.array([[[0.0], [9.0], [9.0], [3.0]]]))
    assert np.allclose(row[0, :, 0], [0, 1, 2, 3])
    k = np.zeros((5, 5), bool)
    k[0, 0] = k[0, 2] = k[4, 4] = True
    v = np.zeros((5, 5))
    v[0, 0], v[0, 2], v[4, 4] = 1.0, 4.0, 100.0
    sp = _local_spread(k, v, 4)
    assert sp[0, 1] == 3.0  # ring 1 holds (0,0) and (0,2)
    assert sp[2, 2] == 99.0  # ring 1 is empty; radius 2 holds (0,0), (0,2) and (4,4)
    up = _upper_bound(k, v)
    assert up[0, 1] == 2 * 4.0 - 1.0 and up[3, 3] == 100.0 and np.isinf(up[2, 0])


def test_exact_setting_equals_captum(tiny, device):
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    on = handle_on(tiny, device)
    before = model_state(on.net)
    res = approx_occlusion(on, x, 1, window=7, stride=3, tolerance=0.0, low_precision=False)
    assert res.extra["fraction"] == 1.0
    ex = exact_occlusion(tiny.net, x, (1,), 7, 3, probs=False)  # float64 oracle and float32 rounding bounds
    assert_within(_captum(tiny, x, 1, 7, 3), ex["map"][0], ex["map_bound"][0] + ex["map_captum"][0])
    assert_within(res.map, ex["map"][0], ex["map_bound"][0])
    assert_same_state(before, on.net)


def test_progressive_maps_end_at_the_exact_map(tiny, device):
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    maps = list(coarse_occlusion(handle_on(tiny, device), x, 0, window=5, stride=3, coarse_step=4))
    assert len(maps) == 3 and [m.extra["level"] for m in maps] == [0, 1, 2]
    assert [m.extra["final"] for m in maps] == [False, False, True]
    evaluated = [m.extra["evaluated"] for m in maps]
    assert evaluated[0] < evaluated[1] < evaluated[2] == maps[-1].extra["windows"]
    assert all(m.map.shape == (40, 40) for m in maps)
    ex = exact_occlusion(tiny.net, x, (0,), 5, 3, probs=False)
    assert_within(maps[-1].map, ex["map"][0], ex["map_bound"][0])


def test_approximation_spends_fewer_windows_and_reports_quality(tiny):
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    exact = _captum(tiny, x, 2, 5, 3)
    approx = approx_occlusion(tiny, x, 2, window=5, stride=3, tolerance=0.3)
    assert approx.extra["fraction"] < 1.0
    assert approx.params["tolerance"] == 0.3
    scored = approx.extra["scored"]
    assert scored.sum() == approx.extra["evaluated"]
    full = approx_occlusion(tiny, x, 2, window=5, stride=3, tolerance=0.0)
    drops, exact_drops = approx.extra["logit_drops"], full.extra["logit_drops"]
    assert np.allclose(drops[scored], exact_drops[scored], rtol=0.03, atol=1e-3 * np.abs(exact_drops).max())
    # the windows under the approximate map's peak are measured, not interpolated
    py, px = np.unravel_index(np.argmax(approx.map), approx.map.shape)
    rows = [i for i, r in enumerate(approx.extra["grid"][0]) if r <= py < r + 5]
    cols = [j for j, c in enumerate(approx.extra["grid"][1]) if c <= px < c + 5]
    assert all(scored[i, j] for i in rows for j in cols)
    q = quality(approx.map, exact)
    assert set(q) == {"ssim", "same_argmax", "argmax_dist", "max_rel_err"}
    assert -1.0 <= q["ssim"] <= 1.0 and q["max_rel_err"] > 0
    same = quality(exact, exact)
    assert same["ssim"] == pytest.approx(1.0) and same["same_argmax"] and same["max_rel_err"] == 0.0
