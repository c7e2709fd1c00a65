"""Incremental occlusion equals captum's Occlusion: hand-made nets (batch norm in eval mode, padding at the borders,
max/avg pooling, depthwise and strided convs, ReLU6, residual adds with in-place ops, channel concat, gating) and
real architectures with random weights; hand-made nets in float64 (so any difference is the algorithm, not
rounding), architectures in float32."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from torch import nn

from interpret.attribution.occlusion import occlusion, occlusion_incremental
from interpret.engines.incremental import IncrementalOcclusion
from interpret.engines.windows import aggregate, window_grid
from tests.conftest import (assert_same_state, handle_on, make_handle, model_state, randomize_bn, rel_err,
                            zoo_handle)
from tests.occlusion_oracle import assert_within, exact_occlusion
from tests.roundoff import U32, U64


class Residual(nn.Module):
    """ResNet-style blocks: in-place ReLU, ``out += identity``, a strided 1×1 shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.d1, self.db1 = nn.Conv2d(8, 12, 3, 2, 1, bias=False), nn.BatchNorm2d(12)
        self.down = nn.Sequential(nn.Conv2d(8, 12, 1, 2, bias=False), nn.BatchNorm2d(12))
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.stem(x)
        out = self.b2(self.c2(self.relu(self.b1(self.c1(x)))))
        out += x
        x = self.relu(out)
        x = self.relu(self.db1(self.d1(x)) + self.down(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Mixed(nn.Module):
    """Functional ReLU, channel concat, squeeze-excite gating (global pooling inside the net), max pool with
    padding (−inf borders), count-include-pad average pooling, depthwise stride-2 conv with ReLU6."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 5, 1, 2)
        self.b = nn.Conv2d(3, 4, 3, 1, 1)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.dw = nn.Conv2d(10, 10, 5, 2, 2, groups=10)
        self.bn = nn.BatchNorm2d(10)
        self.act = nn.ReLU6()
        self.se = nn.Conv2d(10, 10, 1)
        self.avg = nn.AvgPool2d(3, 1, 1)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        y = self.act(self.bn(self.dw(self.pool(y))))
        y = y * torch.sigmoid(self.se(y.mean((2, 3), keepdim=True)))
        y = self.avg(y)
        return self.fc(F.adaptive_max_pool2d(y, 1).flatten(1))


def _plain() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.ReLU6(), nn.Conv2d(8, 6, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def _captum(net, x, target, window, stride):
    return Occlusion(net).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                    strides=(3, stride, stride), baselines=0, perturbations_per_eval=16)[0, 0].numpy()


def _ours64(handle, x, target, window, stride, **kw):
    """Our map in the input's dtype (the engine runs float64 when given float64, float32 otherwise)."""
    grid = window_grid(x.shape[2], x.shape[3], window, stride)
    eng = IncrementalOcclusion(handle, **kw)
    l0, logits, _, _ = eng.scores(x, torch.zeros_like(x), [(r, c) for r in grid.rows for c in grid.cols], window,
                                  target, batch_size=5)
    return aggregate(grid, l0 - logits.reshape(grid.shape))


@pytest.mark.parametrize("make,size,window,stride", [
    (_plain, 29, 6, 4),      # 4 does not divide 29 − 6: clipped last windows
    (_plain, 24, 5, 5),
    (Residual, 21, 4, 3),
    (Mixed, 27, 7, 5),
])
def test_hand_made_nets_equal_captum_float64(make, size, window, stride, device):
    if device.type == "mps":
        pytest.skip("Apple MPS has no float64")
    torch.manual_seed(0)
    net = randomize_bn(make()).eval()
    h = handle_on(make_handle(net, size), device)
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    ref = _captum(copy.deepcopy(net).double(), x, 1, window, stride)
    # float64 arithmetic on batch norm folded in float32: the bound of exactly that (tests/roundoff.py)
    ex = exact_occlusion(net, x, (1,), window, stride, probs=False, u=U64, u_fold=U32)
    assert_within(ref, ex["map"][0], ex["map_bound"][0] + ex["map_captum"][0])
    assert_within(_ours64(h, x, 1, window, stride), ex["map"][0], ex["map_bound"][0])


@pytest.mark.parametrize("make,size,window,stride", [
    (_plain, 29, 6, 4), (Residual, 21, 4, 3), (Residual, 12, 12, 12), (Mixed, 27, 7, 5)])
def test_change_propagation_is_exact_algebra(make, size, window, stride):
    """The low-precision path (output = cached output + conv of the input's change, whole maps convolved with their
    own padding, changes placed by one pad) in float64 instead of bfloat16: nothing is rounded, so it must equal
    captum's map (window 12 on 12²: every box is the whole map)."""
    torch.manual_seed(0)
    net = randomize_bn(make()).eval()
    h = make_handle(net, size)
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    ex = exact_occlusion(net, x, (1,), window, stride, probs=False, u=U64, u_fold=U32)
    assert_within(_ours64(h, x, 1, window, stride, delta_dtype=torch.float64), ex["map"][0], ex["map_bound"][0])


def _well_conditioned(net: nn.Module) -> nn.Module:
    """Fan-in scaled random weights: torchvision's init (fan-out convs, a 0.01 classifier) gives logits ~1e-9 on
    mobilenet_v2, whose occlusion drops are then pure float32 rounding noise."""
    g = torch.Generator().manual_seed(5)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5
        elif isinstance(m, nn.Linear):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * m.in_features ** -0.5
        elif isinstance(m, nn.BatchNorm2d):
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
    return net


@pytest.mark.parametrize("arch,size,window,stride", [
    ("resnet18", 48, 11, 6), ("vgg11", 32, 7, 5),
    pytest.param("mobilenet_v2", 40, 9, 7, marks=pytest.mark.slow),
    pytest.param("efficientnet_lite0", 40, 9, 7, marks=pytest.mark.slow)])
def test_architectures_equal_captum(arch, size, window, stride, device):
    """float32, as used (float64 depthwise convolutions are very slow on CPU): ours and captum's within the float32
    rounding bound of the exact map, each (computed in float32, tests/roundoff.py)."""
    if arch == "efficientnet_lite0":
        from models.efficientnet_lite import efficientnet_lite0

        h = make_handle(efficientnet_lite0().eval(), size, 1000)
    else:
        h = zoo_handle(arch, size)
    _well_conditioned(h.net)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = _captum(h.net, x, 7, window, stride)
    assert np.abs(ref).max() > 1e-2
    ex = exact_occlusion(h.net, x, (7,), window, stride, dtype=torch.float32, probs=False)
    # VGG's 25088-term classifier makes the order-free bound ~10⁴ × the real error there (~20 % of the largest
    # drop): still far below a misplaced window or a dropped change
    room = 0.25 if arch.startswith("vgg") else 0.05
    assert_within(_ours64(handle_on(h, device), x, 7, window, stride), ref, 2 * ex["map_bound"][0] + ex["map_captum"][0],
                  room)


def test_resnet18_float32_equals_captum_and_occlusion(device):
    h = zoo_handle("resnet18", 64)
    on = handle_on(h, device)
    before = model_state(on.net)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ours = occlusion_incremental(on, x, 5, window=15, stride=8)
    assert ours.extra["engine"] == "incremental"
    with torch.no_grad():
        ref = _captum(h.net, x, 5, 15, 8)
    ex = exact_occlusion(h.net, x, (5,), 15, 8, dtype=torch.float32)
    assert_within(ours.map, ref, 2 * ex["map_bound"][0] + ex["map_captum"][0])
    plain = occlusion(h, x, 5, window=15, stride=8, engine="batched")
    assert_within(ours.extra["prob_drop"], plain.extra["prob_drop"], 2 * ex["prob_bound"][0])
    assert ours.extra["logit_drops"].shape == plain.extra["logit_drops"].shape
    assert_same_state(before, on.net)


def test_low_precision_and_tau_are_close_but_not_exact():
    h = zoo_handle("resnet18", 64)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    exact = occlusion_incremental(h, x, 2, window=15, stride=8).map
    low = occlusion_incremental(h, x, 2, window=15, stride=8, low_precision=True).map
    assert 0 < rel_err(low, exact) < 3e-2
    cut = occlusion_incremental(h, x, 2, window=15, stride=8, tau=0.3).map
    assert rel_err(cut, exact) > 1e-4  # the approximation really drops changes


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # data-dependent control flow: fx cannot trace it
            y = y * 2
        return self.fc(y.mean((2, 3)))


def test_untraceable_net_falls_back_to_the_batched_scorer():
    torch.manual_seed(0)
    h = make_handle(Untraceable(), 16)
    x = torch.randn(1, 3, 16, 16)
    res = occlusion_incremental(h, x, 0, window=5, stride=3)
    assert res.extra["engine"] == "batched"
    ex = exact_occlusion(h.net, x, (0,), 5, 3, probs=False)
    for got in (res.map, occlusion(h, x, 0, window=5, stride=3, engine="batched").map):
        assert_within(got, ex["map"][0], ex["map_bound"][0])


def test_registered_as_the_occlusion_engine_option():
    from interpret.attribution.registry import defaults, explain

    assert defaults("occlusion")["engine"] == "incremental"  # the app's default; "batched" stays selectable
    torch.manual_seed(0)
    h = make_handle(randomize_bn(_plain()).eval(), 24)
    x = torch.randn(1, 3, 24, 24)
    inc = explain(h, x, 1, "occlusion", window=5, stride=3)
    ref = explain(h, x, 1, "occlusion", window=5, stride=3, engine="batched")
    assert inc.params["engine"] == "incremental" and inc.extra["engine"] == "incremental"
    ex = exact_occlusion(h.net, x, (1,), 5, 3, probs=False)
    for got in (inc.map, ref.map):
        assert_within(got, ex["map"][0], ex["map_bound"][0])
    with pytest.raises(ValueError):
        explain(h, x, 1, "occlusion", engine="nope")
