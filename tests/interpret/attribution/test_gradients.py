"""Gradient methods against oracles: captum on random-weight ResNet-18 / VGG16 and on the default model, a slow
layer-by-layer re-implementation of the ReLU rules on tiny nets, and hygiene (hooks, parameters, threads)."""
from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Deconvolution, GuidedBackprop, InputXGradient, IntegratedGradients, Saliency
from torch import nn

from conftest import assert_same_state, handle_on, make_handle, model_state, rel_err
from interpret.attribution import guided_backprop as gb
from interpret.attribution.integrated_gradients import integrated_gradients, make_baseline
from interpret.attribution.registry import METHODS, explain
from interpret.attribution.gradients import grad_x_input, gradient, saliency
from interpret.attribution.smoothgrad import noise_batch, smoothgrad
from interpret.core.tensors import input_gradient

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TOL = 1e-5


def _ch(t):  # captum (1,3,H,W) → H×W×3
    return t.detach()[0].permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- captum agreement
def _captum_maps(net, x, target, method):
    """Our result's comparable array and captum's, for one method."""
    x = x.clone()
    if method == "saliency":
        return Saliency(net).attribute(x, target=target, abs=True)[0].amax(0)
    if method == "gradient":
        return Saliency(net).attribute(x, target=target, abs=False)[0].sum(0)
    if method == "grad_x_input":
        return InputXGradient(net).attribute(x, target=target)[0].sum(0)
    if method == "guided_backprop":
        return _ch(GuidedBackprop(net).attribute(x, target=target))
    if method == "deconvnet":
        return _ch(Deconvolution(net).attribute(x, target=target))
    raise KeyError(method)


OURS = {"saliency": lambda h, x, t: saliency(h, x, t).map,
        "gradient": lambda h, x, t: gradient(h, x, t).map,
        "grad_x_input": lambda h, x, t: grad_x_input(h, x, t).map,
        "guided_backprop": lambda h, x, t: gb.guided_backprop(h, x, t).extra["rgb"],
        "deconvnet": lambda h, x, t: gb.deconvnet(h, x, t).extra["rgb"]}


@pytest.mark.parametrize("arch", ["resnet18_handle", "vgg16_handle"])
@pytest.mark.parametrize("method", list(OURS))
def test_agrees_with_captum_on_zoo(arch, method, request, photos, device):
    """On each device, against captum run on the same device (the same float32 arithmetic as ours)."""
    h = handle_on(request.getfixturevalue(arch), device)
    x = h.input_tensor(photos["chelsea"])
    ours = OURS[method](h, x, 281)
    theirs = _captum_maps(h.net, x, 281, method)
    assert np.abs(ours).max() > 0
    assert rel_err(ours, theirs) <= TOL


@pytest.mark.parametrize("arch", ["resnet18_handle", "vgg16_handle"])
def test_integrated_gradients_agrees_with_captum(arch, request, photos, device):
    h = handle_on(request.getfixturevalue(arch), device)
    x = h.input_tensor(photos["coffee"])
    baseline = "blur" if arch.startswith("resnet") else "black"
    ours = integrated_gradients(h, x, 967, steps=8, baseline=baseline, batch_size=8)
    b = make_baseline(h, x, baseline)
    theirs = IntegratedGradients(h.net).attribute(x.clone(), baselines=b, target=967, n_steps=8)
    assert rel_err(ours.extra["rgb"], _ch(theirs)) <= TOL
    assert rel_err(ours.map, theirs[0].sum(0)) <= TOL


def test_plain_backprop_is_the_gradient(resnet18_handle, photos):
    h = resnet18_handle
    x = h.input_tensor(photos["rocket"])
    g = Saliency(h.net).attribute(x.clone(), target=5, abs=False)
    assert rel_err(gb.backprop(h, x, 5).extra["rgb"], _ch(g)) <= TOL


class _ReLU6AsReLU(nn.ReLU):
    """ReLU6 disguised as nn.ReLU so that captum's module hooks see it (captum only hooks nn.ReLU)."""

    def forward(self, x):
        return F.hardtanh(x, 0.0, 6.0)


def _captum_friendly_lite(net):
    net = copy.deepcopy(net)
    for name, m in list(net.named_modules()):
        for cname, child in list(m.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(m, cname, _ReLU6AsReLU())
    return net


@pytest.mark.slow
def test_default_model_agrees_with_captum(default_handle, photos, device):
    """Saliency / gradient / grad×input vs captum directly; guided backprop and deconvnet vs captum on a copy
    whose ReLU6 modules are visible to captum (captum ignores ReLU6, see the next test)."""
    h = handle_on(default_handle, device)
    x = h.input_tensor(photos["coffee"])
    target = 967  # espresso
    for method in ("saliency", "gradient", "grad_x_input"):
        assert rel_err(OURS[method](h, x, target), _captum_maps(h.net, x, target, method)) <= TOL, method
    adapted = _captum_friendly_lite(h.net)
    for method in ("guided_backprop", "deconvnet"):
        assert rel_err(OURS[method](h, x, target), _captum_maps(adapted, x, target, method)) <= TOL, method


@pytest.mark.slow
def test_captum_misses_relu6_on_default_model(default_handle, photos):
    """Why captum is not the oracle as-is there: its GuidedBackprop on EfficientNet-Lite (ReLU6 only) is just
    the plain gradient, while ours applies the guided rule at every ReLU6."""
    h = default_handle
    x = h.input_tensor(photos["chelsea"])
    captum_gb = _ch(GuidedBackprop(h.net).attribute(x.clone(), target=281))
    assert rel_err(captum_gb, gb.backprop(h, x, 281).extra["rgb"]) <= TOL
    assert rel_err(gb.guided_backprop(h, x, 281).extra["rgb"], captum_gb) > 0.1


@pytest.mark.slow
def test_default_model_integrated_gradients_agrees_with_captum(default_handle, photos, device):
    h = handle_on(default_handle, device)
    x = h.input_tensor(photos["chelsea"])
    ours = integrated_gradients(h, x, 281, steps=4, baseline="black", batch_size=4)
    theirs = IntegratedGradients(h.net).attribute(x.clone(), baselines=make_baseline(h, x, "black"),
                                                  target=281, n_steps=4)
    assert rel_err(ours.extra["rgb"], _ch(theirs)) <= TOL


# ---------------------------------------------------------------- slow oracle for the ReLU rules
class TinyNet(nn.Module):
    """conv → act → conv(stride 2) → act → maxpool → conv → act → GAP → fc, with the activations written in
    one of four styles. ``stages`` lists the same computation as (kind, op) for the slow oracle."""

    def __init__(self, style: str, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.style = style
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, 2, 1), nn.Conv2d(8, 8, 3,
                                                                                                       padding=1)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8, 5)
        with torch.no_grad():  # large weights so ReLU6 saturates for some units
            for c in (self.c1, self.c2, self.c3):
                c.weight.mul_(4.0)
        if style == "inplace":
            self.a1, self.a2, self.a3 = nn.ReLU(inplace=True), nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        elif style == "reused":
            self.relu = nn.ReLU(inplace=True)
        elif style == "relu6":
            self.a1 = nn.ReLU6(inplace=True)

    def act(self, i, x):
        s = self.style
        if s == "inplace":
            return (self.a1, self.a2, self.a3)[i](x)
        if s == "reused":
            return self.relu(x)
        if s == "functional":
            return (lambda t: F.relu(t), lambda t: torch.relu_(t), lambda t: t.clamp(min=0))[i](x)
        if s == "relu6":
            return (self.a1, lambda t: F.relu6(t), lambda t: F.hardtanh(t, 0.0, 6.0))[i](x)
        raise ValueError(s)

    def forward(self, x):
        x = self.act(0, self.c1(x))
        x = self.act(1, self.c2(x))
        x = self.act(2, self.c3(self.pool(x)))
        return self.fc(x.mean((2, 3)))

    def stages(self):
        hi = 6.0 if self.style == "relu6" else None
        return [("lin", self.c1), ("relu", hi), ("lin", self.c2), ("relu", hi),
                ("lin", lambda t: self.c3(self.pool(t))), ("relu", hi), ("lin", lambda t: self.fc(t.mean((2, 3))))]


def slow_rule_gradient(net: TinyNet, x: torch.Tensor, target: int, rule: str) -> torch.Tensor:
    """Layer by layer: forward storing every stage input, then backward by hand — vector-Jacobian products of
    the linear stages via autograd, and the ReLU rule written out explicitly at each activation."""
    acts = [x]
    with torch.no_grad():
        for kind, op in net.stages():
            a = acts[-1]
            acts.append(op(a) if kind == "lin" else a.clamp(0, op) if op else a.clamp(min=0))
    g = torch.zeros_like(acts[-1])
    g[0, target] = 1.0
    for i in reversed(range(len(net.stages()))):
        kind, op = net.stages()[i]
        a = acts[i]
        if kind == "relu":
            mask = (a > 0) & (a < op) if op else (a > 0)
            g = {"plain": g * mask, "guided": g.clamp(min=0) * mask, "deconvnet": g.clamp(min=0)}[rule]
        else:
            a = a.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(op(a), a, g)
    return g


@pytest.mark.parametrize("style", ["inplace", "functional", "relu6", "reused"])
@pytest.mark.parametrize("rule", ["plain", "guided", "deconvnet"])
def test_relu_rules_equal_slow_oracle(style, rule):
    net = TinyNet(style).eval()
    h = make_handle(net, 16)
    torch.manual_seed(1)
    x = torch.randn(1, 3, 16, 16)
    before = model_state(net)
    ours = gb.rule_gradient(h, x, 2, None if rule == "plain" else rule)
    oracle = slow_rule_gradient(net, x, 2, rule)
    assert rel_err(ours, oracle) <= TOL
    assert_same_state(before, net)
    if rule != "plain":  # the rule really changed something
        assert rel_err(ours, slow_rule_gradient(net, x, 2, "plain")) > 1e-2
    if style == "relu6" and rule == "guided":  # and the ceiling at 6 was respected
        with torch.no_grad():
            pre = net.c1(x)
        assert (pre > 6).any()


def test_captum_misses_functional_relu():
    """captum hooks only nn.ReLU modules, so on functional ReLUs its guided backprop is the plain gradient;
    ours follows the oracle (this is why the slow oracle, not captum, judges functional ReLU)."""
    net = TinyNet("functional").eval()
    x = torch.randn(1, 3, 16, 16)
    captum_gb = GuidedBackprop(net).attribute(x.clone(), target=1)
    assert rel_err(captum_gb, slow_rule_gradient(net, x, 1, "plain")) <= TOL
    ours = gb.rule_gradient(make_handle(net, 16), x, 1, "guided")
    assert rel_err(ours, slow_rule_gradient(net, x, 1, "guided")) <= TOL


def test_rule_does_not_leak_to_other_threads():
    """While one thread is inside relu_rule, another thread's gradient is the plain one."""
    net = TinyNet("inplace").eval()
    x = torch.randn(1, 3, 16, 16)
    plain = slow_rule_gradient(net, x, 0, "plain")
    inside, done = threading.Event(), threading.Event()
    out = {}

    def other():
        inside.wait(5)
        out["g"] = input_gradient(net, x, 0)
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with gb.relu_rule("guided"):
        inside.set()
        done.wait(5)
    t.join()
    assert rel_err(out["g"], plain) <= TOL


# ---------------------------------------------------------------- SmoothGrad, IG
def test_smoothgrad_is_mean_of_gradients_at_the_same_noise(device):
    """On each device against per-sample CPU gradients at the same noise (drawn on the CPU for every device)."""
    net = TinyNet("reused").eval()
    h = handle_on(make_handle(net, 16), device)
    x = torch.randn(1, 3, 16, 16)
    res = smoothgrad(h, x, 3, samples=7, noise=0.2, batch_size=3, seed=5)
    xs = noise_batch(x, 7, 0.2, 5)
    mean = torch.stack([input_gradient(net, xs[i:i + 1], 3)[0] for i in range(7)]).mean(0)
    assert rel_err(res.extra["rgb"], mean.permute(1, 2, 0)) <= TOL
    sq = smoothgrad(h, x, 3, samples=7, noise=0.2, batch_size=3, seed=5, squared=True)
    mean_sq = torch.stack([input_gradient(net, xs[i:i + 1], 3)[0] ** 2 for i in range(7)]).mean(0)
    assert rel_err(sq.extra["rgb"], mean_sq.permute(1, 2, 0)) <= TOL
    # same seed → same map; another seed → another map; no noise → the plain gradient
    assert np.array_equal(res.map, smoothgrad(h, x, 3, samples=7, noise=0.2, batch_size=7, seed=5).map) or \
        rel_err(res.map, smoothgrad(h, x, 3, samples=7, noise=0.2, batch_size=7, seed=5).map) <= TOL
    assert rel_err(res.map, smoothgrad(h, x, 3, samples=7, noise=0.2, seed=6).map) > 1e-3
    assert rel_err(smoothgrad(h, x, 3, samples=2, noise=0.0).map, saliency(h, x, 3).map) <= TOL


def test_integrated_gradients_completeness():
    """Σ attribution = logit(x) − logit(baseline) up to the quadrature error, which shrinks with steps."""
    net = GapNet().eval()
    h = make_handle(net, 16)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    b = make_baseline(h, x, "black")
    with torch.no_grad():
        gap = float(net(x)[0, 3] - net(b)[0, 3])
    coarse = integrated_gradients(h, x, 3, steps=4, baseline="black", rule="riemann_trapezoid")
    fine = integrated_gradients(h, x, 3, steps=400, baseline="black", rule="riemann_trapezoid",
                                batch_size=200)
    assert abs(fine.map.sum() - gap) < 0.02 * abs(gap) + 1e-4
    assert abs(fine.extra["delta"]) <= abs(coarse.extra["delta"]) + 1e-6
    assert fine.extra["delta"] == pytest.approx(fine.extra["rgb"].sum() - gap, abs=1e-3 * abs(gap) + 1e-5)


def test_baselines(resnet18_handle, photos):
    h = resnet18_handle
    x = h.input_tensor(photos["rocket"])
    assert np.allclose(h.preprocess.to_display(make_baseline(h, x, "black")[0]), 0, atol=1e-6)
    assert np.allclose(h.preprocess.to_display(make_baseline(h, x, "white")[0]), 1, atol=1e-6)
    assert torch.equal(make_baseline(h, x, "noise", 3), make_baseline(h, x, "noise", 3))
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline(h, x, "purple")


# ---------------------------------------------------------------- registry, hygiene, threads
MINE = ["saliency", "gradient", "grad_x_input", "backprop", "guided_backprop", "deconvnet", "cam", "gradcam",
        "gradcam_pp", "guided_gradcam", "smoothgrad", "integrated_gradients"]
FAST = {"smoothgrad": {"samples": 4}, "integrated_gradients": {"steps": 4}}


class Bomb(nn.Module):
    """Identity that raises in forward or in backward when armed (error injection mid-method)."""

    def __init__(self):
        super().__init__()
        self.mode = None

    def forward(self, x):
        if self.mode == "forward":
            raise RuntimeError("boom forward")
        if self.mode == "backward":
            return _Explode.apply(x)
        return x


class _Explode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("boom backward")


class GapNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU6())
        self.bomb = Bomb()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.bomb(self.features(x))), 1))


def test_registry_contract():
    for name in MINE:
        spec = METHODS[name]
        assert spec.name == name and spec.label and callable(spec.fn)
    assert METHODS["gradient"].signed and not METHODS["saliency"].signed
    net = GapNet().eval()
    h = make_handle(net, 16)
    x = torch.randn(1, 3, 16, 16)
    for name in MINE:
        res = explain(h, x, 1, name, **FAST.get(name, {}))
        assert res.method == name and res.target == 1 and res.map.shape == (16, 16)
        assert np.isfinite(res.map).all() and res.seconds > 0 and res.signed == METHODS[name].signed
        assert set(p.name for p in METHODS[name].params) <= set(res.params)
        if name in ("backprop", "guided_backprop", "deconvnet", "guided_gradcam", "smoothgrad",
                    "integrated_gradients", "saliency"):
            assert res.extra["rgb"].shape == (16, 16, 3)
    with pytest.raises(ValueError, match="unknown method"):
        explain(h, x, 1, "nope")
    with pytest.raises(ValueError, match="no parameter"):
        explain(h, x, 1, "saliency", window=3)


@pytest.mark.parametrize("name", MINE)
def test_no_trace_left_even_on_error(name):
    net = GapNet().eval()
    h = make_handle(net, 16)
    x = torch.randn(1, 3, 16, 16)
    kw = dict(FAST.get(name, {}))
    if "layer" in {p.name for p in METHODS[name].params}:
        kw["layer"] = "features"  # before the bomb, so the backward pass goes through it
    before = model_state(net)
    explain(h, x, 1, name, **kw)
    assert_same_state(before, net)
    for mode in ("forward", "backward"):
        if mode == "backward" and name == "cam":
            continue  # CAM needs no backward pass
        net.bomb.mode = mode
        before = model_state(net)
        with pytest.raises(RuntimeError, match="boom"):
            explain(h, x, 1, name, **kw)
        net.bomb.mode = None
        assert_same_state(before, net)
    with pytest.raises(ValueError, match="out of range"):  # bad target: raises after the forward pass
        explain(h, x, 99, name, **kw)
    assert_same_state(before, net)


# One method per thread (Grad-CAM++ shares Grad-CAM's hooked pass); hooks, the ReLU-rule mode and seeded noise
# must all stay within their own thread.
THREAD_METHODS = ["saliency", "guided_backprop", "deconvnet", "gradcam", "cam", "guided_gradcam", "smoothgrad",
                  "integrated_gradients"]


def test_threads_give_the_same_results_as_alone(resnet18_handle, photos):
    """Bit-identical maps. Both runs use one intra-op thread (8 Python threads on a small CI machine must not
    oversubscribe it, and float reductions depend on the intra-op thread count)."""
    h = resnet18_handle
    imgs = list(photos.values())
    xs = [h.input_tensor(im) for im in imgs] + [h.input_tensor(im).flip(-1) for im in imgs]
    targets = [281, 967, 1, 500, 3, 77, 404, 812]
    jobs = list(zip(xs, THREAD_METHODS, targets))
    barrier = threading.Barrier(len(jobs))

    def run(job):
        barrier.wait(30)
        x, m, t = job
        return explain(h, x, t, m, **FAST.get(m, {}))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = [explain(h, x, t, m, **FAST.get(m, {})) for x, m, t in jobs]
        before = model_state(h.net)
        with ThreadPoolExecutor(len(jobs)) as pool:
            together = list(pool.map(run, jobs))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(alone, together):
        assert a.method == b.method
        np.testing.assert_array_equal(a.map, b.map)
    assert_same_state(before, h.net)


# ---------------------------------------------------------------- figures (pure plotly)
def go_scale(pc, name):
    import plotly.graph_objects as go
    return go.Heatmap(colorscale=name).colorscale


def test_figures():
    from interpret.plots.attribution import grid_figure, overlay_figure, rgb_image, topk_figure
    from interpret.core.result import Attribution

    img = np.full((8, 8, 3), 0.5, np.float32)
    signed = Attribution("gradient", 3, np.linspace(-2, 1, 64).reshape(8, 8), True, seconds=0.25)
    unsigned = Attribution("gradcam", 3, np.linspace(0, 4, 64).reshape(8, 8), False, seconds=1.5)
    hm = [t for t in overlay_figure(img, signed).data if t.type == "heatmap"][0]
    assert hm.zmid == 0 and hm.zmin == -hm.zmax
    assert np.array_equal(np.asarray(hm.customdata), signed.map) and "value" in hm.hovertemplate
    assert hm.zmax == pytest.approx(np.percentile(np.abs(signed.map), 99.5))
    hu = [t for t in overlay_figure(img, unsigned, zmax=2.0).data if t.type == "heatmap"][0]
    assert hu.zmin == 0 and hu.zmax == 2.0 and hu.zmid is None
    import plotly.colors as pc
    assert hm.colorscale == go_scale(pc, "RdBu_r") and hu.colorscale == go_scale(pc, "Inferno")
    g = grid_figure(img, [signed, unsigned], method_labels={"gradient": "Gradient (signed)", "gradcam": "Grad-CAM"})
    titles = [a.text for a in g.layout.annotations]
    assert titles == ["Gradient<br>(signed)<br>0.25 s", "Grad-CAM<br>1.50 s"]
    hs = [t for t in g.data if t.type == "heatmap"]
    assert [h.coloraxis for h in hs] == ["coloraxis", "coloraxis2"]
    assert np.abs(np.asarray(hs[0].z)).max() <= 1 and g.layout.coloraxis.cmid == 0
    grid_figure(img, [signed, unsigned], common_norm=False)
    rgb = rgb_image(np.stack([np.zeros((4, 4)), np.ones((4, 4)), -np.ones((4, 4))], -1))
    assert np.allclose(rgb[..., 0], 0.5) and np.allclose(rgb[..., 1], 1) and np.allclose(rgb[..., 2], 0)
    bars = topk_figure([(281, "tabby", 0.6), (282, "tiger cat", 0.3)]).data[0]
    assert list(bars.x) == [0.6, 0.3] and list(bars.y) == ["tabby (281)", "tiger cat (282)"]
