"""Trust metrics against hand-computed values on a linear model, and the similarity / localisation helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import handle_on, make_handle
from interpret.evaluation.metrics import (auc, deletion_insertion, energy_in_mask, pixel_order, pointing_game, spearman,
                               ssim)
from interpret.engines.windows import baseline_image


class Linear2(nn.Module):
    """Two classes: logit 0 = Σ W · (channel 0 of the normalized input), logit 1 = 0, so p0 = sigmoid(logit 0)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x):
        z = (x[:, 0] * self.w).sum(dim=(1, 2))
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_deletion_insertion_by_hand(device):
    w = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    h = handle_on(make_handle(Linear2(w), size=2, n_classes=2), device)
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    contrib = np.array([[1.0, -2.0], [6.0, 2.0]])  # W · x: the order is (1,0), (1,1), (0,0), (0,1)
    r = deletion_insertion(h, x, 0, contrib, steps=4, baseline="zero")
    np.testing.assert_allclose(r.fractions, [0, 0.25, 0.5, 0.75, 1])
    # deletion: 7 → remove 6 → 1 → remove 2 → −1 → remove 1 → −2 → remove −2 → 0
    dele = [sig(7), sig(1), sig(-1), sig(-2), sig(0)]
    ins = [sig(0), sig(6), sig(8), sig(9), sig(7)]
    np.testing.assert_allclose(r.deletion, dele, rtol=1e-6)
    np.testing.assert_allclose(r.insertion, ins, rtol=1e-6)
    trap = lambda v: sum(0.25 * (a + b) / 2 for a, b in zip(v[:-1], v[1:]))  # noqa: E731
    assert r.auc_deletion == pytest.approx(trap(dele), rel=1e-6)
    assert r.auc_insertion == pytest.approx(trap(ins), rel=1e-6)
    # reversed map: the least important pixels go first, deletion stays high longer
    worse = deletion_insertion(h, x, 0, -contrib, steps=4, baseline="zero")
    assert worse.auc_deletion > r.auc_deletion and worse.auc_insertion < r.auc_insertion


@pytest.mark.parametrize("baseline", ["blur", "zero", "mean"])
def test_curve_ends_and_batching(baseline):
    torch.manual_seed(0)
    h = make_handle(Linear2(torch.randn(12, 12) * 0.3), size=12, n_classes=2)
    x = torch.randn(1, 3, 12, 12)
    m = np.random.default_rng(0).normal(size=(12, 12))
    seen: list[float] = []
    r = deletion_insertion(h, x, 0, m, steps=7, baseline=baseline, blur_sigma=1.5, batch_size=5,
                           progress=seen.append)
    with torch.no_grad():
        px = float(torch.softmax(h.net(x), 1)[0, 0])
        pb = float(torch.softmax(h.net(baseline_image(x, baseline, 1.5)), 1)[0, 0])
    assert r.deletion[0] == pytest.approx(px, rel=1e-5) and r.deletion[-1] == pytest.approx(pb, rel=1e-5)
    assert r.insertion[0] == pytest.approx(pb, rel=1e-5) and r.insertion[-1] == pytest.approx(px, rel=1e-5)
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) == math.ceil(16 / 5)
    one = deletion_insertion(h, x, 0, m, steps=7, baseline=baseline, blur_sigma=1.5, batch_size=64)
    np.testing.assert_allclose(one.deletion, r.deletion, rtol=1e-5)
    # middle point by hand: the top round(3/7 · 144) = 62 pixels replaced
    k = round(3 / 7 * 144)
    order = pixel_order(m)[:k]
    xd = x.clone().view(1, 3, -1)
    xd[..., order] = baseline_image(x, baseline, 1.5).view(1, 3, -1)[..., order]
    with torch.no_grad():
        p = float(torch.softmax(h.net(xd.view(1, 3, 12, 12)), 1)[0, 0])
    assert r.deletion[3] == pytest.approx(p, rel=1e-5)


def test_pixel_order_ties_are_stable_and_auc():
    assert pixel_order(np.array([[1, 3], [3, 0]])).tolist() == [1, 2, 0, 3]
    assert auc(np.array([0, 0.5, 1]), np.array([1, 1, 1])) == pytest.approx(1.0)
    assert auc(np.array([0, 1]), np.array([0, 1])) == pytest.approx(0.5)


def test_spearman_and_ssim():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16))
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)  # any increasing transform keeps the ranks
    assert spearman(a, -a) == pytest.approx(-1.0)
    # hand example: ranks (1,2,3,4) vs (2,1,4,3): ρ = 1 − 6·Σd²/(n(n²−1)) = 1 − 6·4/60 = 0.6
    assert spearman(np.array([1, 2, 3, 4]), np.array([2, 1, 4, 3])) == pytest.approx(0.6)
    assert math.isnan(spearman(a, np.zeros_like(a)))
    assert ssim(a, a * 3 + 1) == pytest.approx(1.0)  # min–max scaling first
    assert ssim(a, rng.normal(size=(16, 16))) < 0.5


def test_localisation():
    m = np.zeros((10, 10))
    m[2, 3] = 5.0
    m[7, 7] = 1.0
    mask = np.zeros((10, 10), bool)
    mask[6:9, 6:9] = True
    assert not pointing_game(m, mask)
    assert pointing_game(m, mask, tolerance=5)  # (2,3) is √(16+9) = 5 from (6,6)
    assert not pointing_game(m, mask, tolerance=4)
    mask[2, 3] = True
    assert pointing_game(m, mask)
    m[0, 0] = -4.0  # negative mass is not energy
    assert energy_in_mask(m, mask) == pytest.approx(1.0)
    mask[2, 3] = False
    assert energy_in_mask(m, mask) == pytest.approx(1 / 6)
    assert math.isnan(energy_in_mask(-np.ones((3, 3)), np.ones((3, 3), bool)))
