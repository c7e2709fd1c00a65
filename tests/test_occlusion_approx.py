"""Coarse-to-fine occlusion: exact when its tolerance is exact, fewer windows and a reported quality otherwise, and a
progressive sequence of maps whose last one is the exact map."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from interpret.occlusion_approx import _interp_matrix, _levels, approx_occlusion, coarse_occlusion, quality
from tests.conftest import assert_same_state, make_handle, model_state, rel_err


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


def test_levels_and_interpolation():
    assert [lv.tolist() for lv in _levels(10, 4)] == [[0, 4, 8, 9], [0, 2, 4, 6, 8, 9], list(range(10))]
    m = _interp_matrix(5, np.array([0, 2, 4]))
    assert np.allclose(m @ np.array([0.0, 2.0, 4.0]), np.arange(5))  # linear data interpolates exactly


def test_exact_setting_equals_captum(tiny):
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    before = model_state(tiny.net)
    res = approx_occlusion(tiny, x, 1, window=7, stride=3, tolerance=0.0, low_precision=False)
    assert res.extra["fraction"] == 1.0
    assert rel_err(res.map, _captum(tiny, x, 1, 7, 3)) < 1e-4
    assert_same_state(before, tiny.net)


def test_progressive_maps_end_at_the_exact_map(tiny):
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    maps = list(coarse_occlusion(tiny, x, 0, window=5, stride=3, coarse_step=4))
    assert len(maps) == 3 and [m.extra["level"] for m in maps] == [0, 1, 2]
    assert [m.extra["final"] for m in maps] == [False, False, True]
    evaluated = [m.extra["evaluated"] for m in maps]
    assert evaluated[0] < evaluated[1] < evaluated[2] == maps[-1].extra["windows"]
    assert all(m.map.shape == (40, 40) for m in maps)
    assert rel_err(maps[-1].map, _captum(tiny, x, 0, 5, 3)) < 1e-4


def test_approximation_spends_fewer_windows_and_reports_quality(tiny):
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    exact = _captum(tiny, x, 2, 5, 3)
    approx = approx_occlusion(tiny, x, 2, window=5, stride=3, tolerance=0.3)
    assert approx.extra["fraction"] < 1.0
    assert approx.params["tolerance"] == 0.3
    q = quality(approx.map, exact)
    assert set(q) == {"ssim", "same_argmax", "argmax_dist", "max_rel_err"}
    assert -1.0 <= q["ssim"] <= 1.0 and q["max_rel_err"] > 0
    same = quality(exact, exact)
    assert same["ssim"] == pytest.approx(1.0) and same["same_argmax"] and same["max_rel_err"] == 0.0
