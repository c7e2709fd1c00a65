"""Cascading model randomisation: runs on a copy, step 0 reproduces the original, full randomisation changes
gradient maps, the shared model is untouched, a ReLU6 + batch-norm network stays alive when randomised, and a map
without a ranking is reported as degenerate, not as ρ = 0."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_same_state, handle_on, make_handle, model_state
from interpret.core.hooks import count_hooks
from interpret.evaluation.sanity import (SanityResult, cascading_randomization, default_blocks, execution_order, randomize_,
                                        recalibrate_)
from interpret.plots.evaluation import rank_corr_figure


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return make_handle(SmallNet(), size=32)


def test_blocks_and_order(small):
    # containers with several parameterised children are split (stem = conv + BN)
    assert default_blocks(small.net) == ["stem.0", "stem.1", "blocks.0", "blocks.1", "fc"]
    order = execution_order(small.net, torch.zeros(1, 3, 32, 32))
    assert order["stem"] < order["blocks.0"] < order["blocks.1"] < order["fc"]
    assert count_hooks(small.net) == 0


def test_cascade_on_a_copy(small, device):
    small = handle_on(small, device)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = model_state(small.net)
    seen: list[float] = []
    res = cascading_randomization(small, x, 2, ["saliency", "gradient"], seed=0, progress=seen.append)
    assert_same_state(before, small.net)
    assert res.steps == ["none", "fc", "blocks.1", "blocks.0", "stem.1", "stem.0"]  # top layer first
    assert seen[-1] == 1.0 and len(seen) == 12
    for m in ("saliency", "gradient"):
        assert len(res.maps[m]) == 6
        assert res.rank_corr[m][0] == pytest.approx(1.0) and res.ssim[m][0] == pytest.approx(1.0)
        np.testing.assert_array_equal(res.maps[m][0], res.original[m])
        assert res.rank_corr[m][-1] < 0.5  # everything randomised: the map is another one
    assert res.signed == {"saliency": False, "gradient": True}


def test_layers_are_sorted_top_first_and_validated(small):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    res = cascading_randomization(small, x, 0, ["saliency"], layers=["stem", "fc"])
    assert res.steps == ["none", "fc", "stem"]
    with pytest.raises(ValueError, match="blocks.0"):
        cascading_randomization(small, x, 0, ["saliency"], layers=["nope"])


def test_callable_method_and_determinism(small, device):
    """Any function with the method contract works; the same seed randomises identically (on every device the
    random weights are drawn on the CPU: test_randomisation_is_the_same_on_every_device)."""
    from interpret.attribution.gradients import saliency

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    on = handle_on(small, device)
    a = cascading_randomization(on, x, 1, [saliency], layers=["fc", "blocks.1"], seed=5)
    b = cascading_randomization(on, x, 1, ["saliency"], layers=["fc", "blocks.1"], seed=5)
    for u, v in zip(a.maps["saliency"], b.maps["saliency"]):
        np.testing.assert_array_equal(u, v)


def test_randomisation_is_the_same_on_every_device(device):
    """Random weights are drawn on the CPU from the seeded generator and copied: bit-identical on any device."""
    torch.manual_seed(0)
    a = SmallNet()
    b = copy.deepcopy(a).to(device)
    randomize_(a, torch.Generator().manual_seed(7))
    randomize_(b, torch.Generator().manual_seed(7))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert q.device.type == device.type
        assert torch.equal(p, q.cpu()), n


def test_randomize_changes_every_parameter():
    torch.manual_seed(0)
    net = SmallNet()
    old = [p.detach().clone() for p in net.parameters()]
    randomize_(net, torch.Generator().manual_seed(1))
    for p, q in zip(old, net.parameters()):
        assert not torch.equal(p, q)
    bn = net.stem[1]
    assert 0 <= bn.weight.min() and bn.weight.max() <= 1


# --- a small EfficientNet-Lite-like net: conv → batch norm → ReLU6, trained-looking statistics ---------------------

def _cbr(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())


class LiteNet(nn.Module):
    def __init__(self, depth: int = 6, width: int = 8):
        super().__init__()
        self.stem = _cbr(3, width, s=2)
        self.blocks = nn.Sequential(*[_cbr(width, width) for _ in range(depth)])
        self.head = _cbr(width, 16, k=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.pool(self.head(self.blocks(self.stem(x)))).flatten(1))


def _trained_like(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Each batch norm's statistics measured on x, γ = 3 and a negative shift β = −1: sparse ReLU6 units tuned to
    the scale of the trained activations, as in EfficientNet-Lite0 (whose head shift is negative in every
    channel)."""
    def pre(m, inputs):
        z = inputs[0]
        m.running_mean.copy_(z.mean((0, 2, 3)))
        m.running_var.copy_(z.var((0, 2, 3)))
        m.weight.fill_(3.0)
        m.bias.fill_(-1.0)

    handles = [m.register_forward_pre_hook(pre) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        net.eval()(x)
    for h in handles:
        h.remove()
    return net


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return make_handle(_trained_like(LiteNet(), x), size=32), x


@pytest.mark.parametrize("layers", [["fc", "blocks.5", "blocks.2", "stem.0"], None],
                         ids=["spread-steps", "every-block"])
def test_relu6_batchnorm_net_stays_alive(lite, layers):
    """The old randomisation left Grad-CAM all zero from the middle down (on EfficientNet-Lite0 every map, from
    _blocks.15 down): no map may die, and each is flagged non-degenerate with a finite ρ."""
    h, x = lite
    res = cascading_randomization(h, x, 0, ["saliency", "guided_backprop", "gradcam"], layers=layers, seed=0)
    for m in res.methods:
        for step, mp in zip(res.steps, res.maps[m]):
            assert np.abs(mp).max() > 0, f"{m} all zero after {step}"
    for m in res.methods:
        assert res.degenerate[m] == [False] * len(res.steps)
        assert res.problems[m] == [None] * len(res.steps)
        assert np.isfinite(res.rank_corr[m]).all() and np.isfinite(res.ssim[m]).all()
    assert res.rank_corr["saliency"][-1] < 0.5  # the knowledge is destroyed all the same


def test_a_step_randomises_everything_above_its_block(lite):
    """Step "blocks.2" randomises blocks.2 … fc, the blocks between the listed steps included; below stays trained."""
    h, x = lite
    trained = {n: [p.detach().clone() for p in m.parameters(recurse=False)] for n, m in h.net.named_modules()}
    seen: list[set[str]] = []

    def changed(handle, x, target):
        mods = dict(handle.net.named_modules())
        seen.append({n for n, ps in trained.items() if ps and any(not torch.equal(p, q) for p, q in
                                                               zip(ps, mods[n].parameters(recurse=False)))})
        from interpret.attribution.gradients import saliency
        return saliency(handle, x, target)

    cascading_randomization(h, x, 0, [changed], layers=["fc", "blocks.2"])
    above = {"blocks.2.0", "blocks.2.1", "blocks.3.0", "blocks.3.1", "blocks.4.0", "blocks.4.1", "blocks.5.0",
             "blocks.5.1", "head.0", "head.1", "fc"}
    assert seen[1:] == [set(), {"fc"}, above]  # seen[0]: the shared model itself


def test_recalibrated_norms_standardise_their_input(device):
    """After recalibrate_, each batch norm's running mean / variance is the float64 mean / biased variance of its
    input on x (stored in float32: one rounding, relative error ≤ 2⁻²⁴), so it normalises to unit variance."""
    if device.type == "mps":
        pytest.skip("the float64 oracle needs float64 on the device; MPS has none")
    torch.manual_seed(0)
    net = LiteNet().eval().to(device)
    randomize_(net, torch.Generator().manual_seed(3))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4)).to(device)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    recalibrate_(net, x, bns)
    seen = {}

    def keep(m, inputs):
        seen.setdefault(m, inputs[0].detach().double())  # returns None: a return value would replace the input

    handles = [m.register_forward_pre_hook(keep) for m in bns]
    with torch.no_grad():
        net(x)
    for hd in handles:
        hd.remove()
    assert count_hooks(net) == 0
    for m in bns:
        z = seen[m]
        torch.testing.assert_close(m.running_mean.double(), z.mean((0, 2, 3)), rtol=2**-23, atol=0)
        torch.testing.assert_close(m.running_var.double(), z.var((0, 2, 3), unbiased=False), rtol=2**-23, atol=0)


# --- degenerate maps ---------------------------------------------------------------------------------------------

def test_constant_and_non_finite_maps_are_degenerate_not_zero_correlation(small):
    """A map with no ranking gets NaN similarity and a degenerate flag naming the problem (it used to be ρ = 0)."""
    from interpret.attribution.gradients import saliency

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    calls = {"zero": 0, "nan": 0}

    def dies(kind, value):
        def fn(handle, x, target):
            calls[kind] += 1
            a = saliency(handle, x, target)
            if calls[kind] > 3:  # original, step 0 and step 1 fine; from the second randomised step on: broken
                a.map = np.full_like(a.map, value)
            return a
        fn.__name__ = kind
        return fn

    res = cascading_randomization(small, x, 0, [dies("zero", 0.0), dies("nan", np.nan)],
                                  layers=["fc", "blocks.1", "blocks.0"])
    for m, problem in (("zero", "map is constant (all zero)"), ("nan", "map has non-finite values")):
        assert res.degenerate[m] == [False, False, True, True]
        assert res.problems[m] == [None, None, problem, problem]
        assert res.rank_corr[m][0] == pytest.approx(1.0) and np.isfinite(res.rank_corr[m][1])
        assert np.isnan(res.rank_corr[m][2:]).all() and np.isnan(res.ssim[m][2:]).all()


def test_an_all_zero_original_leaves_every_step_degenerate(small):
    from interpret.attribution.gradients import saliency

    def zero_first(handle, x, target):
        a = saliency(handle, x, target)
        if "#randomized" not in handle.key:
            a.map = np.zeros_like(a.map)
        return a

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    res = cascading_randomization(small, x, 0, [zero_first], layers=["fc"])
    assert res.degenerate["zero_first"] == [True, True]
    assert res.problems["zero_first"] == ["the original map is constant (all zero)"] * 2
    assert np.isnan(res.rank_corr["zero_first"]).all()


def _result(rank: dict[str, list[float]], degenerate: dict[str, list[bool]]) -> SanityResult:
    steps = ["none", "fc", "blocks.1", "blocks.0"]
    problems = {m: ["map is constant (all zero)" if d else None for d in ds] for m, ds in degenerate.items()}
    return SanityResult(3, list(rank), steps, {}, {}, rank, rank, 0.0, {}, degenerate, problems)


def test_figure_shows_rho_down_to_minus_one_and_no_rho_for_degenerate_steps():
    """ρ can reach −1 (Grad-CAM on EfficientNet-Lite0 goes to −0.57): no line may be cut off. Degenerate steps
    draw no ρ: a gap in the line and an open marker in the strip above, with the problem in the hover."""
    nan = float("nan")
    res = _result({"gradcam": [1.0, -0.2, -0.95, -0.6], "guided_backprop": [1.0, 0.99, nan, nan]},
                  {"gradcam": [False] * 4, "guided_backprop": [False, False, True, True]})
    fig = rank_corr_figure(res, {"gradcam": "Grad-CAM", "guided_backprop": "Guided backprop"}, "star")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    lo, hi = fig.layout[lines[0].yaxis.replace("y", "yaxis")].range
    assert lo <= -1 and hi >= 1
    for t in lines:
        assert all(v is None or lo <= v <= hi for v in t.y)
    gb = next(t for t in lines if t.name == "Guided backprop")
    assert list(gb.y) == [1.0, 0.99, None, None]
    strip = [t for t in fig.data if t.mode == "markers"]
    assert len(strip) == 1 and list(strip[0].x) == [2, 3] and strip[0].marker.symbol == "circle-open"
    assert "all zero" in strip[0].text[0] and "blocks.1" in strip[0].text[0]
    assert "star" in fig.layout.title.text
    assert fig.layout[lines[0].xaxis.replace("x", "xaxis")].title.text


@pytest.mark.slow
def test_efficientnet_lite0_maps_stay_alive():
    """The default model, at the steps the Trust page spreads over it: no map is all zero or degenerate."""
    from models.images import sample_images
    from models.registry import load_model

    h = load_model("efficientnet_lite0")
    x = h.input_tensor(sample_images()["coffee"])
    res = cascading_randomization(h, x, 967, ["saliency", "guided_backprop", "gradcam"],
                                  layers=["_fc", "_blocks.15", "_conv_stem"])
    for m in res.methods:
        assert all(np.abs(mp).max() > 0 for mp in res.maps[m]), m
    for m in res.methods:
        assert res.degenerate[m] == [False] * 4, res.problems[m]
