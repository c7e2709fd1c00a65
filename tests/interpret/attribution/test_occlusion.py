"""Occlusion against captum's Occlusion, a float64 direct-loop oracle and hand-computed drops. Float32 results are
compared under rounding bounds derived from the arithmetic (tests/roundoff.py), not tolerances seen on one CPU."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from conftest import assert_same_state, handle_on, make_handle, model_state, randomize_bn
from interpret.attribution.registry import explain
from interpret.attribution.occlusion import occlusion
from interpret.engines.copies import fast_copy
from interpret.engines.windows import aggregate, baseline_image, window_grid
from occlusion_oracle import assert_within, exact_occlusion
from roundoff import U32, U64, gamma


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


def captum_map(net, x, target, window, stride, baseline) -> np.ndarray:
    base = 0 if isinstance(baseline, str) and baseline == "zero" else baseline_image(x, baseline)
    with torch.no_grad():
        a = Occlusion(net).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                     strides=(3, stride, stride), baselines=base, perturbations_per_eval=8)
    assert torch.allclose(a[0, 0], a[0, 1]) and torch.allclose(a[0, 0], a[0, 2])  # one window over all channels
    return a[0, 0].numpy()


@pytest.fixture(scope="module")
def tiny():
    return make_handle(randomize_bn(tiny_net()), size=20)


def test_grid_follows_captum_counts():
    g = window_grid(224, 224, 15, 8)
    assert g.shape == (28, 28) and len(g) == 784
    assert g.rows[-1] == 216  # last window [216, 231) is clipped to the image
    g = window_grid(20, 17, 7, (3, 5))
    assert g.rows == (0, 3, 6, 9, 12, 15) and g.cols == (0, 5, 10)  # 17 − 7 = 10 = 2 strides
    assert window_grid(32, 32, 32, 99).shape == (1, 1)  # stride irrelevant when the window is the image
    with pytest.raises(ValueError):
        window_grid(32, 32, 8, 9)
    with pytest.raises(ValueError):
        window_grid(32, 32, 33, 1)


def test_aggregate_equals_direct_loop():
    rng = np.random.default_rng(0)
    g = window_grid(23, 19, 6, 4)
    drops = rng.normal(size=g.shape)
    total, count = np.zeros((23, 19)), np.zeros((23, 19))
    for i, r in enumerate(g.rows):
        for j, c in enumerate(g.cols):
            total[r:r + 6, c:c + 6] += drops[i, j]
            count[r:r + 6, c:c + 6] += 1
    assert count.min() >= 1
    # float64 sums of at most 23 + 19 terms, then one rounding to float32 (u relative)
    np.testing.assert_allclose(aggregate(g, drops), total / count, rtol=U32,
                               atol=2 * gamma(23 + 19, U64) * np.abs(drops).max())


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
@pytest.mark.parametrize("window,stride", [(7, 3), (5, 5), (20, 4)])
def test_tiny_equals_captum(tiny, baseline, window, stride, device):
    """captum's map, ours and ours on the BN-folded copy (ours on each device): each within the float32 rounding
    bound of the exact (CPU, float64) map."""
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    ex = exact_occlusion(tiny.net, x, (0, 3), window, stride, baseline)
    for i, target in enumerate((0, 3)):
        want, bound = ex["map"][i], ex["map_bound"][i]
        assert_within(captum_map(tiny.net, x, target, window, stride, baseline), want, bound + ex["map_captum"][i])
        for fast in (False, True):
            got = occlusion(handle_on(tiny, device), x, target, window=window, stride=stride, baseline=baseline,
                            engine="batched", fast=fast)
            assert_within(got.map, want, bound)


def test_resnet18_equals_captum(resnet18_handle, device):
    """Random-weight resnet18 at 64² (residuals, BN, borders, stride 12 not dividing 64 − 15); ours on each device,
    captum and the bound on the CPU."""
    h = resnet18_handle
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    target = int(h.predict(x).argmax())
    ref = captum_map(h.net, x, target, 15, 12, "zero")
    # both sides are float32 evaluations of one definition: each within the bound of the exact map
    ex = exact_occlusion(h.net, x, (target,), 15, 12, dtype=torch.float32, probs=False)
    tol = 2 * ex["map_bound"][0] + ex["map_captum"][0]
    h = handle_on(h, device)
    before = model_state(h.net)
    exact = occlusion(h, x, target, window=15, stride=12, baseline="zero", engine="batched", fast=False, batch_size=16)
    assert_within(exact.map, ref, tol)
    fast = occlusion(h, x, target, window=15, stride=12, baseline="zero", engine="batched", fast=True)
    assert_within(fast.map, ref, tol)
    assert_same_state(before, h.net)


def test_vgg16_equals_captum(vgg16_handle, device):
    """Random-weight VGG16 at 64² (in-place ReLUs, max-pooling, a window and stride that do not divide 64)."""
    h = vgg16_handle
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    target = int(h.predict(x).argmax())
    ref = captum_map(h.net, x, target, 20, 14, "zero")
    ex = exact_occlusion(h.net, x, (target,), 20, 14, dtype=torch.float32, probs=False)
    h = handle_on(h, device)
    before = model_state(h.net)
    exact = occlusion(h, x, target, window=20, stride=14, baseline="zero", engine="batched", fast=False, batch_size=16)
    # VGG's 25088-wide classifier makes the bound ~15 % of the largest drop (random weights): still far below a
    # misplaced or miscounted window
    assert_within(exact.map, ref, 2 * ex["map_bound"][0] + ex["map_captum"][0], room=0.25)
    assert_same_state(before, h.net)


@pytest.mark.slow
def test_default_model_equals_captum(default_handle, photos, device):
    """The default model (real weights) on a real photo at 80² — its global pooling takes any input size."""
    h = default_handle
    x = h.input_tensor(photos["chelsea"])
    x = torch.nn.functional.interpolate(x, size=(80, 80), mode="bilinear", align_corners=False)
    target = int(h.predict(x).argmax())
    ref = captum_map(h.net, x, target, 15, 10, "zero")
    ex = exact_occlusion(h.net, x, (target,), 15, 10, dtype=torch.float32, probs=False)
    tol = 2 * ex["map_bound"][0] + ex["map_captum"][0]
    h = handle_on(h, device)
    before = model_state(h.net)
    assert_within(occlusion(h, x, target, window=15, stride=10, engine="batched").map, ref, tol)
    assert_within(occlusion(h, x, target, window=15, stride=10, engine="batched", fast=True).map, ref, tol)
    assert_same_state(before, h.net)


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
def test_whole_image_window_is_the_drop_to_the_baseline(tiny, baseline):
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    base = baseline_image(x, baseline)
    net64 = copy.deepcopy(tiny.net).double()
    with torch.no_grad():
        z = net64(torch.cat([x, base]).double())  # the oracle: f(x) − f(baseline), in float64
    ex = exact_occlusion(tiny.net, x, range(5), 20, 20, baseline)  # for its bounds
    for target in range(5):
        a = occlusion(tiny, x, target, window=20, stride=20, baseline=baseline, engine="batched", fast=False)
        assert_within(a.map, np.full((20, 20), float(z[0, target] - z[1, target])), ex["map_bound"][target])
        p_drop = float(torch.softmax(z[0], 0)[target] - torch.softmax(z[1], 0)[target])
        assert_within(a.extra["prob_drop"], np.full((20, 20), p_drop), ex["prob_bound"][target])


def test_baselines():
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(baseline_image(x, "zero"), torch.zeros_like(x))
    m = baseline_image(x, "mean")
    assert torch.allclose(m[0, :, 3, 7], x.mean(dim=(2, 3))[0])
    b = baseline_image(x, "blur", blur_sigma=1.0)
    assert torch.allclose(b.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.05) and b.std() < x.std()
    c = torch.ones(1, 3, 16, 16)
    # A constant image is its own blur, up to rounding (reflect padding; k = 15 taps per axis here): the float32
    # kernel sums to 1 within 2γ_k + u (each axis normalised by its sum, then an outer product) and the k² products
    # are summed within γ_{k²}: |blur(1) − 1| ≤ γ_{(k+1)²}.
    assert (baseline_image(c, "blur") - c).abs().max().item() <= gamma(16 ** 2)
    with pytest.raises(ValueError):
        baseline_image(x, "grey")


def test_prob_drop_progress_batches_and_registry(tiny):
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(6))
    seen: list[float] = []
    a = occlusion(tiny, x, 1, window=6, stride=3, batch_size=7, engine="batched", fast=False, progress=seen.append)
    n = len(window_grid(20, 20, 6, 3))
    assert len(seen) == math.ceil(n / 7) and seen == sorted(seen) and seen[-1] == 1.0
    # Batches of 7 and of 1 (another conv algorithm may run), and the registry's default (the incremental engine
    # on a BN-folded copy) round differently; each is within the float32 bound of the exact float64 map, and the
    # probability map is the same aggregation of the probability drops.
    ex = exact_occlusion(tiny.net, x, (1,), 6, 3)
    b = occlusion(tiny, x, 1, window=6, stride=3, batch_size=1, engine="batched", fast=False)
    r = explain(tiny, x, 1, "occlusion", window=6, stride=3)
    assert a.method == "occlusion" and a.signed and a.map.shape == (20, 20) and r.params["window"] == 6
    for res in (a, b, r):
        assert_within(res.map, ex["map"][0], ex["map_bound"][0])
        assert_within(res.extra["prob_drop"], ex["prob"][0], ex["prob_bound"][0])


def test_fast_copy_is_private_and_refreshed():
    net = randomize_bn(tiny_net())
    h = make_handle(net, size=20)
    before = model_state(net)
    f1 = fast_copy(h)
    assert fast_copy(h) is f1
    assert f1 is not net and not any(p is q for p in f1.parameters() for q in net.parameters())
    assert_same_state(before, net)
    with torch.no_grad():
        net[0].weight.mul_(2)  # the test owns this net: an in-place change must invalidate the cache
    assert fast_copy(h) is not f1


@pytest.mark.parametrize("fast", [False, True])
def test_threads_share_one_model(tiny, fast):
    """Several threads explaining different images on one handle get what each gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    xs = [torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(10 + i)) for i in range(6)]
    alone = [occlusion(tiny, x, i % 5, window=6, stride=4, engine="batched", fast=fast).map for i, x in enumerate(xs)]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda i: occlusion(tiny, xs[i], i % 5, window=6, stride=4, engine="batched",
                                                     fast=fast).map,
                                 range(6)))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
