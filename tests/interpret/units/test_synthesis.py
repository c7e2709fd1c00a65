"""Synthesized images: the objective algebra against direct float64 computations, the diversity term, Lucent's
transforms (sizes, exact shifts and rotations), the parameterisation, seeds, every switch, and the shared model
left exactly as it was."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import handle_on
from interpret.core.errors import InputError
from interpret.core.hooks import count_hooks
from interpret.units.synthesis import objectives as O
from interpret.units.synthesis.render import PRESETS, Settings, evaluate, preset, synthesize, term_values
from interpret.units.synthesis import transforms as T
from interpret.units.synthesis.param import ImageParam, color_matrix
from models.handle import ModelHandle, Preprocess


def _tiny_net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 3, 1, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    return net.to(dtype).eval()


def _handle(net: nn.Module) -> ModelHandle:
    return ModelHandle(key=f"tiny{id(net)}", name="tiny", net=net,
                       preprocess=Preprocess(resize=32, crop=32, mean=(0.5,) * 3, std=(0.25,) * 3),
                       labels=["a", "b", "c", "d"], source="test")


@pytest.fixture(scope="module")
def tiny():
    return _handle(_tiny_net())


@pytest.fixture(scope="module")
def tiny64():
    return _handle(_tiny_net(torch.float64))


def _state(net):
    return ({k: v.clone() for k, v in net.state_dict().items()}, [p.requires_grad for p in net.parameters()],
            [p.grad is None for p in net.parameters()], count_hooks(net), [m.training for m in net.modules()])


def _same_state(a, b):
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1:] == b[1:]


# ---- objective algebra -----------------------------------------------------------------------------------------

def _direct_terms(net: nn.Sequential, x: torch.Tensor, vec: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each objective computed by slicing the Sequential by hand: the oracle."""
    a1 = net[:2](x)  # "1": the first ReLU, N×8×32×32
    a4 = net[:5](x)  # "4": the second ReLU, N×6×16×16
    logits = net(x)
    cos = (a4 * vec.reshape(1, -1, 1, 1)).sum(1) / (a4.norm(dim=1).clamp_min(1e-8) * vec.norm())
    return {"ch": a1[:, 3].mean(), "neuron": a4[:, 2, 5, 9].mean(), "neuron_c": a4[:, 1, 8, 8].mean(),
            "logit": logits[:, 2].mean(), "logit_img1": logits[1, 0], "dir": cos.mean()}


def test_objective_sum_gradient_is_the_sum_of_gradients(tiny64):
    """On a float64 net: the weighted sum's value and input gradient equal the weighted sum of each term's value
    and gradient computed directly (no hooks). Both sides are float64 sums of the same few thousand products, so
    they agree to a few ulps of the largest magnitude; 1e-10 relative is a wide margin."""
    net = tiny64.net
    vec = torch.tensor([0.3, -1.0, 0.5, 2.0, 0.0, 1.5], dtype=torch.float64)
    weights = {"ch": 2.0, "neuron": -0.5, "neuron_c": 1.0, "logit": 0.25, "logit_img1": -3.0, "dir": 1.5}
    obj = (2.0 * O.channel("1", 3) - 0.5 * O.neuron("4", 2, 5, 9) + O.neuron("4", 1) + 0.25 * O.logit("c")
           - 3.0 * O.logit(0, batch=1) + 1.5 * O.direction("4", vec.numpy()))
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    total, values = evaluate(tiny64, obj, x)
    (g_ours,) = torch.autograd.grad(total, [x])
    total, values = total.detach(), [v.detach() for v in values]

    x2 = x.detach().clone().requires_grad_(True)
    direct = _direct_terms(net, x2, vec)
    want_total = sum(weights[k] * direct[k] for k in weights)
    grads = [torch.autograd.grad(direct[k], [x2], retain_graph=True)[0] * weights[k] for k in weights]
    g_want = sum(grads)
    scale = max(float(g_want.abs().max()), 1e-30)
    want_total = want_total.detach()
    assert abs(float(total) - float(want_total)) <= 1e-10 * max(1.0, abs(float(want_total)))
    assert float((g_ours - g_want).abs().max()) <= 1e-10 * scale
    for v, k in zip(values, weights):
        assert abs(float(v) - float(direct[k])) <= 1e-10 * max(1.0, abs(float(direct[k])))
    assert count_hooks(net) == 0 and all(p.grad is None for p in net.parameters())


def test_algebra_and_description():
    a, b = O.channel("L", 3), O.channel("L", 7)
    obj = a + 0.5 * b - O.logit("espresso")
    assert [t.weight for t in obj.terms] == [1.0, 0.5, -1.0]
    assert obj.describe() == "L channel 3 + 0.5 × L channel 7 − class espresso"
    assert (-(a - b)).terms[1].weight == 1.0 and (-(a - b)).terms[0].weight == -1.0
    assert sum([a, b]).terms == (a + b).terms
    assert O.logit(2).describe(["x", "y", "zebra"]) == "class zebra"
    assert obj.layers == {("L", -1)} and obj.needs_logits


@pytest.mark.parametrize("text, weights, kinds", [
    ("channel(features.6, 3) + 0.5*channel(features.6, 7)", [1.0, 0.5], ["channel", "channel"]),
    ("logit(espresso) - logit(cup)", [1.0, -1.0], ["logit", "logit"]),
    ("-2 * neuron(layer4.1, 5, 3, 2) + 1e-3*diversity(layer4)", [-2.0, 1e-3], ["neuron", "diversity"]),
    ("logit(black-and-tan coonhound)", [1.0], ["logit"]),
    ("logit(967, image=1) - - logit(3)", [1.0, 1.0], ["logit", "logit"]),
    ("0.5 × direction(features.6, image)", [0.5], ["direction"]),
])
def test_parse(text, weights, kinds):
    obj = O.parse(text, vectors={"image": np.ones(4)})
    assert [t.weight for t in obj.terms] == pytest.approx(weights)
    assert [t.kind for t in obj.terms] == kinds
    if "coonhound" in text:
        assert obj.terms[0].target == "black-and-tan coonhound"
    if "image=1" in text:
        assert obj.terms[0].batch == 1 and obj.terms[0].target == 967
    if "neuron" in text:
        assert obj.terms[0].unit == (3, 2) and obj.terms[0].layer == "layer4.1"


@pytest.mark.parametrize("text, msg", [
    ("", "empty"), ("channel(L)", "layer and a channel"), ("channel(L, x)", "whole number"),
    ("foo(L, 1)", "unknown term"), ("channel(L, 1", "unbalanced"), ("direction(L, v)", "no vector named"),
    ("diversity(L, image=0)", "no image="), ("2 channel(L, 1)", "cannot read"),
])
def test_parse_errors(text, msg):
    with pytest.raises(InputError, match=msg):
        O.parse(text)


# ---- diversity -------------------------------------------------------------------------------------------------

def test_diversity_is_zero_for_identical_grams_and_matches_direct_formula():
    torch.manual_seed(2)
    a = torch.rand(1, 5, 4, 4, dtype=torch.float64)
    same = torch.cat([a, a, 3.0 * a])  # equal Gram matrices up to scale
    assert abs(float(O.diversity_value(same))) <= 1e-12
    # a permutation of positions keeps each Gram matrix exactly
    perm = a.flatten(2)[..., torch.randperm(16)].reshape(1, 5, 4, 4)
    assert abs(float(O.diversity_value(torch.cat([a, perm])))) <= 1e-12
    b = torch.rand(3, 5, 4, 4, dtype=torch.float64)
    grams = [bi.reshape(5, -1).numpy() @ bi.reshape(5, -1).numpy().T for bi in b]
    cos = [[(gi * gj).sum() / np.linalg.norm(gi) / np.linalg.norm(gj) for gj in grams] for gi in grams]
    want = np.mean([1 - cos[i][j] for i in range(3) for j in range(3) if i != j])
    assert abs(float(O.diversity_value(b)) - want) <= 1e-12
    assert want > 0
    with pytest.raises(InputError, match="at least 2"):
        O.diversity_value(a)


def test_diversity_term_spreads_a_batch(tiny):
    """With the diversity term, the images of a batch end up more different (in Gram terms) than without."""
    s = Settings(steps=40, size=32, batch=3, seed=5, progress_every=0)
    plain = synthesize(tiny, O.channel("4", 1), s)
    div = synthesize(tiny, O.channel("4", 1) + 2.0 * O.diversity("4"), s)
    d_plain = term_values(tiny, O.diversity("4"), plain.images)["diversity at 4"]
    d_div = term_values(tiny, O.diversity("4"), div.images)["diversity at 4"]
    assert d_div > d_plain
    assert div.terms["diversity at 4"][-1] > div.terms["diversity at 4"][0]


# ---- transforms ------------------------------------------------------------------------------------------------

def test_shift_and_rotation_keep_size_and_are_exact():
    x = torch.arange(2 * 3 * 9 * 9, dtype=torch.float64).reshape(2, 3, 9, 9)
    y = T.shift(x, 2, 3)
    assert y.shape == x.shape
    assert torch.equal(y[:, :, 3:, 2:], x[:, :, :-3, :-2]) and not y[:, :, :3].any() and not y[:, :, :, :2].any()
    r = T.rotate(x, 90.0)  # a quarter turn about the centre maps pixel centres onto pixel centres
    assert r.shape == x.shape
    want = torch.rot90(x, k=1, dims=(2, 3))
    ok = torch.allclose(r, want, atol=1e-9 * float(x.abs().max())) or torch.allclose(
        r, torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-9 * float(x.abs().max()))
    assert ok
    assert torch.equal(T.rotate(x, 0), x)


def test_rescale_matches_interpolate_and_pads_back():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    up = T.rescale(x, 1.1)
    assert up.shape[2:] == (22, 22)
    assert torch.equal(up, F.interpolate(x, size=(22, 22), mode="bilinear", align_corners=True))
    down = T.rescale(x, 0.9)
    assert down.shape[2:] == (20, 20)
    inner = F.interpolate(x, size=(18, 18), mode="bilinear", align_corners=True)
    assert torch.equal(down[:, :, 1:19, 1:19], inner) and not down[:, :, 0].any()
    assert T.scale_values(0.1) == pytest.approx([1 + (i - 5) / 50 for i in range(11)])
    assert T.rotation_angles(10) == list(range(-10, 11)) + [0] * 5


@pytest.mark.parametrize("seed", range(6))
def test_the_chain_always_ends_at_the_model_input_size(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 40, 40)
    t = T.TransformSettings()
    for out in [(64, 64), (224, 224), (40, 40)]:
        assert T.apply(x, t, gen, out).shape == (2, 3) + out
    no_up = T.apply(x, T.TransformSettings(pad=0, scale=0.0, upsample=False), gen, (64, 64))
    assert no_up.shape == x.shape  # jitter and rotation alone keep the size
    off = T.TransformSettings(pad=0, jitter=0, scale=0.0, rotate=0, jitter2=0, upsample=False)
    assert torch.equal(T.apply(x, off, gen, (64, 64)), x)


# ---- parameterisation ------------------------------------------------------------------------------------------

def test_fourier_image_equals_a_float64_inverse_fft():
    """The start image equals a direct numpy computation: spectrum × 1/f, inverse real FFT (orthonormal), /4,
    colour mixing, sigmoid. float32 vs float64 on values of order 1: 1e-5 absolute is ~100 ulps."""
    gen = torch.Generator().manual_seed(3)
    img = ImageParam("fourier", 2, 16, gen)
    with torch.no_grad():
        got = img().numpy()
    p = img.p.detach().double().numpy()
    fy = np.fft.fftfreq(16)[:, None]
    fx = np.fft.rfftfreq(16)[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1 / 16)
    spec = (p[..., 0] + 1j * p[..., 1]) * scale
    raw = np.fft.irfft2(spec, s=(16, 16), norm="ortho") / 4.0
    mixed = np.einsum("nchw,dc->ndhw", raw, color_matrix().double().numpy())
    want = 1 / (1 + np.exp(-mixed))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_blur_matches_spatial_gaussian():
    """The Fourier blur (frequency response) equals a circular spatial Gaussian blur of the same image."""
    img = ImageParam("fourier", 1, 32, torch.Generator().manual_seed(0), decorrelate=False)
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


def test_start_image_is_the_same_on_every_device(device):
    """The parameters start from the CPU's seeded draw on every device (so a seed means one start image)."""
    for kind in ("pixel", "fourier"):
        a = ImageParam(kind, 2, 32, torch.Generator().manual_seed(4))
        b = ImageParam(kind, 2, 32, torch.Generator().manual_seed(4), device)
        assert b.p.device.type == device.type
        assert torch.equal(a.p.detach(), b.p.detach().cpu())


# ---- the loop --------------------------------------------------------------------------------------------------

def test_same_seed_same_image(tiny, device):
    h = handle_on(tiny, device)
    s = preset("quick", steps=10, size=32, batch=2, seed=3)
    obj = O.neuron("3", 2) + 0.5 * O.diversity("3")
    a, b = synthesize(h, obj, s), synthesize(h, obj, s)
    c = synthesize(h, obj, s, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.history == b.history and a.terms == b.terms
    assert not np.array_equal(a.images, c.images)
    assert a.device.startswith(device.type)


@pytest.mark.parametrize("kw", [
    dict(param="pixel", decorrelate=False, pad=0, jitter=0, scale=0.0, rotate=0, jitter2=0, upsample=False),
    dict(param="pixel", decorrelate=True, blur_every=2, l2=1.0, tv=1.0),
    dict(param="fourier", decorrelate=False, blur_every=3, blur_sigma=1.0, upsample=False),
    dict(param="fourier", decorrelate=True, size=40, batch=2),
])
def test_every_switch(tiny, kw):
    before = _state(tiny.net)
    res = synthesize(tiny, O.channel("4", 1), preset("quick", steps=40, size=32, seed=0, **{
        k: v for k, v in kw.items() if k != "size"}), size=kw.get("size", 32))
    h = np.array(res.history)  # noisy step to step under the random transforms: compare the ends' means
    assert h[-8:].mean() > h[:4].mean()
    n = kw.get("batch", 1)
    assert res.images.shape == (n, kw.get("size", 32), kw.get("size", 32), 3) and res.images.dtype == np.float32
    assert np.isfinite(res.images).all() and 0 <= res.images.min() and res.images.max() <= 1
    _same_state(before, _state(tiny.net))


def test_batch_terms_optimise_their_own_image(tiny):
    """One class per image: each image's own logit rises more than the other image's does for that class."""
    res = synthesize(tiny, O.logit("a", batch=0) + O.logit("d", batch=1), preset("quick", steps=40, size=32, batch=2))
    vals = term_values(tiny, O.logit("a", batch=0) + O.logit("a", batch=1) + O.logit("d", batch=0)
                       + O.logit("d", batch=1), res.images)
    assert vals["class a [image 0]"] > vals["class a [image 1]"]
    assert vals["class d [image 1]"] > vals["class d [image 0]"]


def test_progress_cancel_and_errors(tiny):
    seen = []
    synthesize(tiny, O.logit("b"), preset("quick", steps=9, size=32, progress_every=4, batch=2),
               progress=lambda s, v, im: seen.append((s, im.shape)))
    assert [s for s, _ in seen] == [4, 8, 9] and seen[0][1] == (2, 32, 32, 3)
    stop = threading.Event()
    res = synthesize(tiny, O.logit(1), preset("quick", steps=50, size=32, progress_every=1),
                     progress=lambda s, v, im: stop.set() if s == 3 else None, cancel=stop)
    assert res.cancelled and len(res.history) == 3 and res.to_json()["steps_done"] == 3
    q = preset("quick", steps=1, size=32)
    for obj, msg in [(O.channel("0", 99), "channel 99"), (O.channel("nope", 0), "no layer"),
                     (O.logit("zebra"), "unknown class"), (O.neuron("4", 0, 99, 0), "outside"),
                     (O.diversity("4"), "batch of at least 2"), (O.logit(0, batch=3), "image 3"),
                     (O.direction("4", [1.0, 2.0]), "6 channels")]:
        with pytest.raises(ValueError, match=msg):
            synthesize(tiny, obj, q)
    with pytest.raises(InputError, match="unknown preset"):
        preset("best")
    with pytest.raises(InputError, match="unknown setting"):
        preset("quick", stepz=3)
    with pytest.raises(InputError, match="batch"):
        synthesize(tiny, O.logit(0), q, batch=99)
    assert count_hooks(tiny.net) == 0


def test_presets_are_lucents_recipe():
    q = PRESETS["quality"]
    assert (q.steps, q.lr, q.size, q.param, q.decorrelate, q.sd) == (512, 0.05, 128, "fourier", True, 0.01)
    assert (q.pad, q.jitter, q.scale, q.rotate, q.jitter2, q.upsample) == (12, 8, 0.1, 10, 4, True)
    assert (q.l2, q.tv, q.blur_every) == (0.0, 0.0, 0)
    assert PRESETS["quick"].steps < q.steps


def test_two_threads_get_their_own_results(tiny):
    """Two threads optimising different objectives on one shared net get what each gets alone."""
    s = preset("quick", steps=12, size=32, seed=1)
    alone = {k: synthesize(tiny, o, s).images for k, o in [("a", O.channel("4", 0)), ("b", O.logit("c"))]}
    out, errs = {}, []

    def run(k, o):
        try:
            out[k] = synthesize(tiny, o, s).images
        except Exception as e:  # noqa: BLE001 - reported below
            errs.append(e)

    ts = [threading.Thread(target=run, args=a) for a in [("a", O.channel("4", 0)), ("b", O.logit("c"))]]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs
    for k in alone:
        np.testing.assert_array_equal(out[k], alone[k])
    assert count_hooks(tiny.net) == 0


def test_call_index_of_a_module_called_twice():
    """A module used twice (like ResNet's relu): call 0 and call 1 are different maps, picked as asked."""
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = self.act(self.c2(self.act(self.c1(x))))
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    net = Twice().double().eval()
    h = _handle(net)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    first = torch.relu(net.c1(x))[:, 2].mean()
    second = torch.relu(net.c2(torch.relu(net.c1(x))))[:, 2].mean()
    for ci, want in [(0, first), (1, second), (-1, second)]:
        total, _ = evaluate(h, O.channel("act", 2, call_index=ci), x)
        assert abs(float(total) - float(want)) <= 1e-12
    assert count_hooks(net) == 0


@pytest.mark.slow
def test_objective_rises_on_default_model():
    """A channel of a middle block and the class "espresso" of EfficientNet-Lite0 (real weights)."""
    from models.default import load

    h = load()
    before = _state(h.net)
    for obj in [O.channel("_blocks.6", 5), O.logit("espresso")]:
        res = synthesize(h, obj, preset("quick", steps=16, size=48, seed=1))
        v = np.array(res.history)
        assert v[-4:].mean() > v[:3].mean() + 0.1 * abs(v[:3].mean()) + 1e-3, obj
        assert res.image.shape == (48, 48, 3)
    _same_state(before, _state(h.net))
