"""LRP against oracles: a slow float64 re-implementation of the ε rule on tiny chains (conservation and where the
missing relevance went), gradient × input for ε → 0 on ReLU nets, Zennit called directly on ResNet-18, the classroom
CNN and EfficientNet-Lite0; plus shared-model hygiene under threads, the unsupported-network messages, the
registry, the CLI and the Explain page."""
from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from streamlit.testing.v1 import AppTest
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import CompositeCanonizer, SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from tests.apptest_util import navigation_only

from conftest import assert_same_state, handle_on, make_handle, model_state, randomize_bn, zoo_handle
from interpret.attribution import lrp as L
from interpret.attribution.registry import METHODS, explain
from interpret.cli.main import main
from interpret.core.errors import NotDefined
from interpret.core.hooks import count_hooks
from interpret.core.tensors import input_gradient
from models.classroom import generate, load
from models.classroom.net import ClassroomNet
from models.efficientnet_lite import efficientnet_lite0

U64 = 2.0 ** -53
SAFETY = 2.0  # second-order terms of the first-order rounding model below
ROOT = Path(__file__).resolve().parents[3]
LRP = ("lrp_epsilon_plus_flat", "lrp_epsilon_gamma_box", "lrp_alpha2_beta1")


# ---- the slow oracle: LRP-ε on a chain of linear maps, written out with explicit matrices --------------------------

def _matrix(layer: nn.Module, in_shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """A Conv2d / Linear as (W, b) on the flattened input: W's columns are the layer applied to the unit vectors."""
    n = int(np.prod(in_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        b = layer(torch.zeros(1, *in_shape, dtype=torch.float64)).reshape(-1)
        cols = layer(eye).reshape(n, -1) - b
    return cols.T.numpy(), b.numpy()


def _chain(net: nn.Sequential, x: torch.Tensor):
    """[(W, b, activation after it or None)] of a Sequential of Conv2d/Linear, ReLU/ReLU6 and Flatten."""
    out, shape = [], tuple(x.shape[1:])
    h = x.double()
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out.append([*_matrix(m, shape), None])
        elif isinstance(m, (nn.ReLU, nn.ReLU6)):
            out[-1][2] = m
        with torch.no_grad():
            h = m(h)
        shape = tuple(h.shape[1:])
    return out


def oracle(net: nn.Sequential, x: torch.Tensor, target: int, eps: float) -> dict:
    """LRP-ε written out: R_L = e_c z_c; per layer s = R / (z + ε·sign z) (sign 0 → +1, as Zennit), R_in = a ⊙ Wᵀs;
    activations pass relevance through. Also a first-order bound of the float64 rounding of every R (``err``) and
    what each layer absorbed: Σ_j R_j (b_j + ε sign z_j) / (z_j + ε sign z_j)."""
    layers = _chain(net, x)
    a = x.double().reshape(-1).numpy()
    acts, errs, zs = [a], [np.zeros_like(a)], []
    for W, b, act in layers:  # forward, with the rounding error of every pre-activation
        n = W.shape[1]
        z = W @ a + b
        ez = (n + 1) * U64 * (np.abs(W) @ np.abs(a) + np.abs(b)) + np.abs(W) @ errs[-1]
        zs.append((z, ez))
        a = act(torch.from_numpy(z)).numpy() if act is not None else z
        acts.append(a)
        errs.append(ez)
    R = np.zeros_like(acts[-1])
    R[target] = acts[-1][target]
    eR = np.zeros_like(R)
    eR[target] = errs[-1][target]
    absorbed, bound, per_layer = 0.0, 0.0, []
    for (W, b, _), (z, ez), a_in, ea_in in zip(layers[::-1], zs[::-1], acts[-2::-1], errs[-2::-1]):
        sign = (z == 0) + np.sign(z)
        d = z + eps * sign
        s = R / d
        es = eR / np.abs(d) + np.abs(R) * ez / d ** 2 + U64 * np.abs(s)
        absorbed += float(np.sum(R * (b + eps * sign) / d))
        bound += float(np.sum(np.abs(R) * (np.abs(b) + eps) / np.abs(d)))
        per_layer.append((R, z))
        m = W.shape[0]
        R_in = a_in * (W.T @ s)
        eR = (ea_in * np.abs(W.T @ s) + np.abs(a_in) * (np.abs(W).T @ es)
              + (m + 2) * U64 * np.abs(a_in) * (np.abs(W).T @ np.abs(s)))
        R = R_in
    return dict(R=R.reshape(x.shape[1:]), err=SAFETY * eR.reshape(x.shape[1:]), logit=float(acts[-1][target]),
                absorbed=absorbed, bound=bound, layers=per_layer, n_layers=len(layers))


def _chain_net(bias: bool, act=nn.ReLU, seed: int = 0, scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=bias), act(), nn.Conv2d(4, 4, 3, stride=2, bias=bias),
                        act(), nn.Flatten(), nn.Linear(4 * 2 * 2, 6, bias=bias), act(), nn.Linear(6, 3, bias=bias))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net.double().eval()


def _x(seed: int, size: int = 6, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _best(net, x) -> int:
    with torch.no_grad():
        return int(net(x).argmax())


# ---- conservation and the ε rule ----------------------------------------------------------------------------------

def _float64_on(device):
    if device.type == "mps":
        pytest.skip("Apple MPS has no float64")


@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_epsilon_rule_conserves_up_to_what_epsilon_absorbs(eps, device):
    """Bias-free ReLU chain: Σ R_in = logit − Σ_layers Σ_j R_j ε sign z_j/(z_j + ε sign z_j), and that loss is at
    most Σ_j |R_j| ε/(|z_j| + ε) per layer; the map itself equals the oracle's R within its rounding bound (on
    every device here: the relevance is computed where the model lives)."""
    _float64_on(device)
    net = _chain_net(bias=False)
    x = _x(1)
    h = handle_on(make_handle(net, 6, 3), device)
    t = _best(net, x)
    rel, logit = L.relevance(h, x, t, "epsilon", epsilon=eps)
    assert rel.device.type == device.type
    ref = oracle(net, x, t, eps)
    rel = rel[0].cpu().numpy()
    assert np.all(np.abs(rel - ref["R"]) <= ref["err"])
    total, tol = float(rel.sum()), float(ref["err"].sum())
    assert abs(total - (ref["logit"] - ref["absorbed"])) <= 2 * tol
    assert abs(ref["logit"] - total) <= ref["bound"] + 2 * tol
    if eps == 0.5:  # the loss is real, so the accounting above can fail
        assert abs(ref["absorbed"]) > 1e6 * tol


def test_biases_absorb_the_missing_relevance():
    """With biases, Σ R_in = logit − Σ_j R_j (b_j + ε sign z_j)/(z_j + ε sign z_j) over every layer."""
    net = _chain_net(bias=True, seed=2)
    x = _x(3)
    h = make_handle(net, 6, 3)
    t = _best(net, x)
    a = explain(h, x, t, "lrp_epsilon_plus_flat")  # registered path runs; the ε-only chain is the oracle's
    assert np.isfinite(a.map).all() and a.extra["logit"] == pytest.approx(float(net(x)[0, t].detach()), rel=1e-12)
    rel, _ = L.relevance(h, x, t, "epsilon", epsilon=0.01)
    ref = oracle(net, x, t, 0.01)
    tol = 2 * float(ref["err"].sum())
    assert abs(float(rel.sum()) - (ref["logit"] - ref["absorbed"])) <= tol
    assert abs(ref["absorbed"]) > 1e6 * tol  # the biases took a visible share


def test_relu6_passes_relevance_through_saturated_units():
    """ReLU6 is pass-through for relevance (Zennit's rule for activations): the oracle, whose activations pass R
    unchanged, matches; and a saturated unit (z > 6, gradient 0) still hands relevance to its inputs."""
    net = _chain_net(bias=True, act=nn.ReLU6, seed=4, scale=6.0)
    x = _x(5) * 2
    h = make_handle(net, 6, 3)
    t = _best(net, x)
    with torch.no_grad():
        z1 = net[0](x)
    assert (z1 > 6).any(), "the test needs saturated units"
    rel, _ = L.relevance(h, x, t, "epsilon", epsilon=1e-6)
    ref = oracle(net, x, t, 1e-6)
    assert np.all(np.abs(rel[0].numpy() - ref["R"]) <= ref["err"])
    # relevance at the output of the first convolution (the oracle's last backward step), i.e. at its ReLU6
    R1, z = ref["layers"][-1]
    np.testing.assert_array_equal(z > 6, z1.reshape(-1).numpy() > 6)
    assert np.abs(R1[z > 6]).sum() > 0


def test_epsilon_to_zero_is_gradient_times_input(device):
    """On a ReLU chain with biases, LRP-ε → LRP-0 = x ⊙ ∂f/∂x. Each layer scales a path by z/(z + ε) ∈ [1 − δ, 1],
    δ = ε/(min |z| + ε) over units carrying relevance, so |R^ε − x ∂f/∂x| ≤ (1 − (1 − δ)^L) |x| G (G the gradient of
    the chain with |W| and the same ReLU masks), plus float64 rounding."""
    _float64_on(device)
    net = _chain_net(bias=True, seed=6)
    x = _x(7)
    h = handle_on(make_handle(net, 6, 3), device)
    t = _best(net, x)
    eps = 1e-9
    rel, _ = L.relevance(h, x, t, "epsilon", epsilon=eps)
    rel = rel.cpu()
    gxi = (input_gradient(net, x, t) * x).numpy()[0]
    ref = oracle(net, x, t, eps)
    # |W| path sums with the ReLU masks: G_L = e_c, G_{l-1} = |W_l|ᵀ (mask_l ⊙ G_l)
    layers = _chain(net, x)
    G = np.zeros(layers[-1][0].shape[0])
    G[t] = 1.0
    zmin = np.inf
    for (W, _, act), (R, z) in zip(layers[::-1], ref["layers"]):
        mask = (z > 0) if act is not None else np.ones_like(z, dtype=bool)
        carrying = np.abs(R) > 0
        zmin = min(zmin, np.abs(z[carrying]).min())
        G = np.abs(W).T @ (mask * G)
    delta = eps / (zmin + eps)
    n_layers = ref["n_layers"]
    bound = ((1 - (1 - delta) ** n_layers) * np.abs(x.numpy()[0]) * G.reshape(x.shape[1:])
             + ref["err"]  # the oracle's own rounding; the gradient's: 4 layers of at most 36 + 2 roundings each
             + SAFETY * 4 * 38 * U64 * np.abs(x.numpy()[0]) * G.reshape(x.shape[1:]))
    diff = np.abs(rel[0].numpy() - gxi)
    assert np.all(diff <= bound)
    assert np.abs(gxi).max() > 1e3 * bound.max()  # the comparison is not vacuous


# ---- Zennit called directly ----------------------------------------------------------------------------------------

def _zennit_direct(handle, x, target, name, canonizers, epsilon=1e-6, gamma=0.25):
    net = copy.deepcopy(handle.net).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if name == "lrp_epsilon_plus_flat":
        comp = EpsilonPlusFlat(epsilon=epsilon, canonizers=canonizers)
    elif name == "lrp_alpha2_beta1":
        comp = EpsilonAlpha2Beta1(epsilon=epsilon, canonizers=canonizers)
    else:
        mean = torch.tensor(handle.preprocess.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(handle.preprocess.std, dtype=x.dtype).view(1, 3, 1, 1)
        comp = EpsilonGammaBox(low=((0 - mean) / std).expand_as(x), high=((1 - mean) / std).expand_as(x),
                               epsilon=epsilon, gamma=gamma, canonizers=canonizers)
    xg = x.clone().requires_grad_(True)

    def logit_only(out):  # output relevance: the target logit of the (canonized) forward pass
        return (torch.nn.functional.one_hot(torch.tensor([target]), out.shape[1]).to(out) * out).detach()

    with Gradient(model=net, composite=comp) as attributor:
        _, rel = attributor(xg, logit_only)
    return rel.detach()[0].sum(0).numpy()


@pytest.fixture(scope="module")
def classroom():
    h = load("classroom_clean")
    ds = generate("test", 2, 11)
    x = h.preprocess.normalize(torch.from_numpy(ds.images).permute(0, 3, 1, 2).float() / 255)
    return h, x[:1], int(ds.labels[0])


@pytest.fixture(scope="module")
def resnet18():
    """Random-weight torchvision ResNet-18 at 64² with non-trivial batch norms (shared; never modified)."""
    h = zoo_handle("resnet18", 64, seed=3)
    randomize_bn(h.net)
    return h


@pytest.mark.parametrize("name", LRP)
def test_equals_zennit_on_resnet18(resnet18, name):
    h = resnet18
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    t = 7
    got = explain(h, x, t, name)
    ref = _zennit_direct(h, x, t, name, [ResNetCanonizer()])
    np.testing.assert_array_equal(got.map, ref)  # the same computation, op for op: bit-equal
    assert count_hooks(h.net) == 0


@pytest.mark.parametrize("name", LRP)
def test_equals_zennit_on_classroom_cnn(classroom, name):
    h, x, t = classroom
    got = explain(h, x, t, name, epsilon=0.1, **({"gamma": 0.5} if name == "lrp_epsilon_gamma_box" else {}))
    ref = _zennit_direct(h, x, t, name, [SequentialMergeBatchNorm()], epsilon=0.1, gamma=0.5)
    np.testing.assert_array_equal(got.map, ref)
    assert got.extra["composite"] in L.COMPOSITES and got.params["epsilon"] == 0.1
    # extras: the rgb relevance sums to the map, the ratio is total / logit
    np.testing.assert_allclose(got.extra["rgb"].sum(2), got.map, rtol=0, atol=4 * 2 ** -24 * np.abs(
        got.extra["rgb"]).sum(2).max())
    assert got.extra["conservation"] == pytest.approx(got.extra["relevance_sum"] / got.extra["logit"])


def test_equals_zennit_on_lite0_and_the_skip_canonizer_keeps_the_forward(default_handle):
    h = default_handle
    x = h.input_tensor(Image.fromarray(data.coffee()))
    t = int(h.predict(x).argmax())
    got = explain(h, x, t, "lrp_epsilon_plus_flat")
    ref = _zennit_direct(h, x, t, "lrp_epsilon_plus_flat",
                         [CompositeCanonizer((SequentialMergeBatchNorm(), L.MBConvSkipCanonizer()))])
    np.testing.assert_array_equal(got.map, ref)
    # the MBConv skip as a Sum module computes the same forward: a sum of two terms rounds as x + y does
    net = copy.deepcopy(h.net)
    inst = L.MBConvSkipCanonizer().apply(net)
    assert len(inst) == sum(1 for m in net.modules() if getattr(m, "use_skip", False))
    with torch.no_grad():
        assert torch.equal(net(x), h.net(x))
    for i in inst:
        i.remove()
    assert all(m.forward.__func__ is type(m).forward for m in net._blocks)  # removed again


# ---- shared model hygiene ---------------------------------------------------------------------------------------

def test_two_threads_with_different_composites_see_only_their_own(resnet18):
    h = resnet18
    before = model_state(h.net)
    xs = [torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    jobs = [("lrp_epsilon_plus_flat", xs[0], 1), ("lrp_alpha2_beta1", xs[1], 2)]
    alone = [explain(h, x, t, m).map for m, x, t in jobs]
    barrier = threading.Barrier(2)
    results: dict[int, list] = {0: [], 1: []}
    errors = []

    def work(i):
        m, x, t = jobs[i]
        try:
            barrier.wait()
            for _ in range(3):
                results[i].append(explain(h, x, t, m).map)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for i in range(2):
        for m in results[i]:
            np.testing.assert_array_equal(m, alone[i])
    assert count_hooks(h.net) == 0
    assert_same_state(before, h.net)  # state_dict bit-identical, no hooks, flags unchanged


def test_shared_net_untouched_even_on_error():
    net = _chain_net(bias=True).float()
    h = make_handle(net, 6, 3)
    before = model_state(net)
    with pytest.raises(ValueError, match="out of range"):
        explain(h, _x(0, dtype=torch.float32), 9, "lrp_epsilon_plus_flat")
    with pytest.raises(ValueError, match="ε must be positive"):
        explain(h, _x(0, dtype=torch.float32), 0, "lrp_alpha2_beta1", epsilon=0.0)
    assert_same_state(before, net)


# ---- unsupported networks -----------------------------------------------------------------------------------------

class _Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc((y * torch.sigmoid(y)).mean((2, 3)))


@pytest.mark.parametrize("net, message", [
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)),
     r"layer 1 \(SiLU\) has no LRP rule"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 2)),
     r"batch norm 2 does not directly follow a convolution"),
    (lambda: _Gated(), r"applies an operation \(`sigmoid` in the top-level forward\)"),
    (lambda: zoo_handle("mobilenet_v2", 64).net, r"adds two tensors .*`add` in features\.\d+ \(InvertedResidual\)"),
    (lambda: zoo_handle("densenet121", 64).net, r"batch norm features\.denseblock1\.denselayer1\.norm1"),
])
def test_unsupported_networks_are_named(net, message):
    n = net()
    h = make_handle(n, 6 if isinstance(n, (nn.Sequential, _Gated)) else 64, 2 if isinstance(
        n, (nn.Sequential, _Gated)) else 1000)
    before = model_state(n)
    x = torch.randn(1, 3, *h.input_size)
    for name in LRP:
        with pytest.raises(NotDefined, match=message) as e:
            explain(h, x, 0, name)
        assert str(e.value).startswith(f"LRP is not supported for {h.name} because")
    assert_same_state(before, n)


def test_supported_architectures_pass_the_check():
    for net in (zoo_handle("vgg11_bn", 64).net, zoo_handle("resnet50", 64).net, zoo_handle("alexnet", 64).net,
                efficientnet_lite0(), ClassroomNet()):
        assert L.unsupported_reason(net) is None, type(net).__name__


# ---- registry, CLI, Explain page ------------------------------------------------------------------------------

def test_registered_and_listed_in_the_cli(classroom, tmp_path, capsys):
    for name in LRP:
        spec = METHODS[name]
        assert spec.signed and spec.label.startswith("LRP") and spec.details.rgb is not None
    assert METHODS["lrp_epsilon_plus_flat"].label == "LRP (ε-plus-flat)"
    assert main(["list-methods"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in LRP)
    h, x, t = classroom
    img = Image.fromarray((h.preprocess.to_display(x[0]) * 255).round().astype(np.uint8))
    path = tmp_path / "shape.png"
    img.save(path)
    out = tmp_path / "m.npy"
    assert main(["explain", str(path), "--model", "classroom_clean", "--method", "lrp_alpha2_beta1",
                 "--target", str(t), "--out", str(out), "--quiet"]) == 0
    x2 = h.input_tensor(Image.open(path))
    np.testing.assert_array_equal(np.load(out), explain(h, x2, t, "lrp_alpha2_beta1").map)


@pytest.mark.slow
def test_explain_page_renders_lrp():
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        at.switch_page(str(ROOT / "pages" / "explain.py")).run()
        for method in LRP:
            at.selectbox(key="explain_method").select(method).run()
            next(b for b in at.button if b.label == "Run").click().run()
            assert not at.exception, at.exception
            assert not at.error, [e.value for e in at.error]
            assert not at.warning, [w.value for w in at.warning]
            assert len(at.get("plotly_chart")) >= 2, method  # the map and the per-channel relevance
            assert any(m.value.startswith("Explaining **espresso**") for m in at.markdown), method
