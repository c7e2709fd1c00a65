"""Unit ablation against oracles: zeroing channels by per-call hooks gives exactly the output of a deep copy whose
corresponding weights are zeroed; the shared network is left bit-identical with no hook on it; two threads on one
handle see their own results; the random control is seeded, without repeats and disjoint from the ablated set.

Why exact equality holds: the zeroed copy computes the ablated channel as a dot product of zero weights plus a
zero bias (±0.0 exactly, and batch norm with zero scale and shift gives ±0.0 too; ReLU(0) = 0), so every later op
receives the same values as in the hooked network (up to the sign of a zero, which changes no sum) and runs the
same deterministic kernel on them: the outputs are the same floats, not merely close.
"""
from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from torch import nn

from interpret.core.errors import InputError
from interpret.core.hooks import count_hooks
from interpret.evaluation import ablation as ab
from tests.conftest import assert_same_state, make_handle, model_state, randomize_bn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.unused = nn.Conv2d(5, 5, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture(scope="module")
def handle():
    torch.manual_seed(0)
    net = randomize_bn(Tiny()).double()
    return make_handle(net, size=12, n_classes=4, key="tiny_ablate")


def _x(n=6, seed=1):
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def zeroed_copy(net: nn.Module, units: dict[str, list[int]]) -> nn.Module:
    """The oracle: a deep copy whose parameters producing the chosen channels are zero (conv: weight rows and
    bias; batch norm: scale and shift; ReLU: the conv before it)."""
    net = copy.deepcopy(net)
    before_relu = {"relu1": "bn1", "relu2": "conv2"}
    with torch.no_grad():
        for layer, idx in units.items():
            m = getattr(net, before_relu.get(layer, layer))
            m.weight[idx] = 0
            if m.bias is not None:
                m.bias[idx] = 0
    return net


@pytest.mark.parametrize("units", [{"conv1": [1, 3]}, {"bn1": [0, 5]}, {"relu1": [2]}, {"relu2": [0, 4]},
                                   {"conv1": [1], "conv2": [0, 2, 4]}])
def test_zeroing_equals_a_copy_with_zeroed_weights(handle, units):
    x = _x()
    before = model_state(handle.net)
    got = ab.ablated_logits(handle, x, units)
    with torch.no_grad():
        want = zeroed_copy(handle.net, units)(x)
        intact = handle.net(x)
    assert torch.equal(got, want)
    assert not torch.equal(got, intact)  # the ablation did something
    assert_same_state(before, handle.net)  # bit-identical state, no hook left


def test_hand_computed_sum_of_channel_means():
    """1×1 identity conv → average pool → a linear layer of ones: the logit is the sum of the input channels'
    means; zeroing channel 1 removes exactly its mean."""
    net = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        net[3].weight.fill_(1.0)
        net[3].bias.zero_()
    h = make_handle(net.double(), size=4, n_classes=1)
    x = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    x[0, 0] = 1.0
    x[0, 1] = 2.0
    x[0, 2, :2] = 4.0  # mean 2
    assert ab.ablated_logits(h, x, None).item() == 5.0
    assert ab.ablated_logits(h, x, {"0": [1]}).item() == 3.0
    assert ab.ablated_logits(h, x, {"0": [0, 2]}).item() == 2.0


def test_accuracy_and_report_match_the_oracle(handle):
    x = _x(40, seed=2)
    with torch.no_grad():
        intact = handle.net(x).argmax(1).numpy()
    labels = intact.copy()
    labels[::3] = (labels[::3] + 1) % 4   # a third wrong on purpose: baseline accuracy is not 1
    units = {"relu1": [0, 1, 4]}

    def oracle(u):
        with torch.no_grad():
            return float((zeroed_copy(handle.net, u)(x).argmax(1).numpy() == labels).mean())

    assert ab.accuracy(handle, x, labels, None, batch_size=7) == float((intact == labels).mean())
    assert ab.accuracy(handle, x, labels, units, batch_size=7) == oracle(units)
    seen = []
    rep = ab.ablation_report(handle, {"a": (x, labels), "b": (x[:20], labels[:20])}, units, random_draws=4,
                             seed=3, image=x[:1], progress=lambda d, t: seen.append((d, t)), batch_size=16)
    assert rep.baseline["a"] == float((intact == labels).mean())
    assert rep.ablated["a"] == oracle(units)
    assert rep.control["a"].draws == [oracle(d) for d in rep.control_units]
    assert rep.n_images == {"a": 40, "b": 20}
    d = np.array(rep.control["a"].draws)
    assert rep.control["a"].mean == pytest.approx(d.mean(), abs=1e-15)
    assert rep.control["a"].std == pytest.approx(d.std(ddof=1), abs=1e-15)
    assert (rep.control["a"].min, rep.control["a"].max) == (d.min(), d.max())
    assert seen[-1] == (60 * 6, 60 * 6) and all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
    assert count_hooks(handle.net) == 0


def test_prediction_change_is_the_two_softmaxes(handle):
    x = _x(1, seed=4)
    units = {"conv2": [0, 1, 2]}
    ch = ab.prediction_change(handle, x, units, k=3)
    with torch.no_grad():
        p0 = torch.softmax(handle.net(x), 1)[0]
        p1 = torch.softmax(zeroed_copy(handle.net, units)(x), 1)[0]
    assert ch.target == int(p0.argmax())
    assert [c for c, _, _ in ch.before] == p0.argsort(descending=True)[:3].tolist()
    assert [c for c, _, _ in ch.after] == p1.argsort(descending=True)[:3].tolist()
    assert ch.p_before == pytest.approx(float(p0[ch.target]), rel=1e-12)
    assert ch.p_after == pytest.approx(float(p1[ch.target]), rel=1e-12)
    assert ab.prediction_change(handle, x, units, target=2).p_after == pytest.approx(float(p1[2]), rel=1e-12)


@pytest.mark.parametrize("units, words", [
    ({}, "at least one unit"), ({"conv1": []}, "at least one unit"), (None, "at least one unit"),
    ({"nope": [0]}, "no layer named"), ({"conv1": [6]}, "channels 0…5"), ({"conv1": [-1]}, "start at 0"),
    ({"unused": [0]}, "not used in the forward pass"), ({"conv1": ["a"]}, "channel numbers"),
])
def test_bad_unit_sets_are_messages_and_leave_no_hook(handle, units, words):
    x = _x(2)
    before = model_state(handle.net)
    with pytest.raises(InputError, match=words):
        ab.ablation_report(handle, {"a": (x, [0, 1])}, units, random_draws=1)
    if units is not None:
        with pytest.raises(InputError, match=words):
            ab.ablated_logits(handle, x, units)
    assert_same_state(before, handle.net)


def test_bad_data_is_a_message(handle):
    x = _x(3)
    with pytest.raises(InputError, match="3 images but 2 labels"):
        ab.accuracy(handle, x, [0, 1])
    with pytest.raises(InputError, match="class indices"):
        ab.accuracy(handle, x, [0, 1, 9])
    with pytest.raises(InputError, match="no images"):
        ab.accuracy(handle, x[:0], [])


def test_two_threads_see_their_own_results(handle):
    """Thread A holds the ablation hooks while thread B runs the shared network (without the lock, the worst
    case): B gets the intact output, A the ablated one."""
    x = _x(4, seed=5)
    units = {"relu1": [0, 2, 3]}
    with torch.no_grad():
        want_plain = handle.net(x)
        want_abl = zeroed_copy(handle.net, units)(x)
    hooks_on, b_done = threading.Event(), threading.Event()
    got: dict[str, torch.Tensor] = {}
    errors: list[BaseException] = []

    def thread_a():
        try:
            with ab.ablated(handle, units) as run:
                hooks_on.set()
                assert b_done.wait(30)
                got["a"] = run(x)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            hooks_on.set()

    def thread_b():
        try:
            assert hooks_on.wait(30)
            assert count_hooks(handle.net) == 1  # A's hook (one layer) is on the shared net right now
            with torch.no_grad():
                got["b"] = handle.net(x)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            b_done.set()

    ts = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    assert torch.equal(got["a"], want_abl) and torch.equal(got["b"], want_plain)
    assert count_hooks(handle.net) == 0


def test_threads_through_the_public_api(handle):
    """Many interleaved runs, ablated in one thread, intact in the other, each equal to its own oracle."""
    x = _x(24, seed=6)
    units = {"conv2": [1, 3]}
    with torch.no_grad():
        want = {"a": zeroed_copy(handle.net, units)(x), "b": handle.net(x)}
    assert not torch.equal(want["a"], want["b"])
    ok = {"a": [], "b": []}

    def work(name, u):
        for _ in range(15):
            ok[name].append(torch.equal(ab.ablated_logits(handle, x, u), want[name]))

    ts = [threading.Thread(target=work, args=("a", units)), threading.Thread(target=work, args=("b", None))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert ok["a"] == [True] * 15 and ok["b"] == [True] * 15
    assert count_hooks(handle.net) == 0


def test_random_control_is_seeded_without_repeats_and_disjoint():
    units = {"a": [0, 3, 5], "b": [7]}
    n_ch = {"a": 12, "b": 9}
    draws = [ab.random_units(units, n_ch, np.random.default_rng(11)) for _ in range(2)]
    assert draws[0] == draws[1]   # same seed, same draw
    rng = np.random.default_rng(11)
    many = [ab.random_units(units, n_ch, rng) for _ in range(300)]
    for d, disjoint in many:
        assert disjoint
        for layer, idx in units.items():
            assert len(d[layer]) == len(idx) == len(set(d[layer]))          # as many, none twice
            assert not set(d[layer]) & set(idx)                             # never an ablated unit
            assert all(0 <= c < n_ch[layer] for c in d[layer])
    # every other channel of layer a is drawn sometimes: the draw covers the complement, not a fixed subset
    assert set().union(*(d["a"] for d, _ in many)) == set(range(12)) - {0, 3, 5}
    # too few other channels: drawn from all channels, without repeats, and flagged
    d, disjoint = ab.random_units({"a": [0, 1, 2]}, {"a": 5}, np.random.default_rng(0))
    assert not disjoint and len(set(d["a"])) == 3


def test_report_draws_reproducible_with_seed(handle):
    x = _x(8, seed=7)
    labels = np.zeros(8, int)
    r1 = ab.ablation_report(handle, {"a": (x, labels)}, {"conv1": [0, 1]}, random_draws=3, seed=5)
    r2 = ab.ablation_report(handle, {"a": (x, labels)}, {"conv1": [0, 1]}, random_draws=3, seed=5)
    r3 = ab.ablation_report(handle, {"a": (x, labels)}, {"conv1": [0, 1]}, random_draws=3, seed=6)
    assert r1.control_units == r2.control_units and r1.control["a"].draws == r2.control["a"].draws
    assert r1.control_units != r3.control_units
    for d in r1.control_units:
        assert len(d["conv1"]) == 2 and not set(d["conv1"]) & {0, 1}


def test_classroom_images_as_uint8_arrays():
    """The classroom data path (uint8 HWC arrays, normalised by the model's preprocessing) gives the accuracy of
    a direct evaluation."""
    from models.classroom import generate, load

    h = load("classroom_clean")
    ds = generate("test", 24, seed=9, cue_flipped=True)
    x = h.preprocess.normalize(torch.from_numpy(ds.images).permute(0, 3, 1, 2).float() / 255)
    with torch.no_grad():
        want = float((h.net(x).argmax(1).numpy() == ds.labels).mean())
    assert ab.accuracy(h, ds.images, ds.labels, None, batch_size=10) == want
    with pytest.raises(InputError, match="uint8"):
        ab.accuracy(h, ds.images[:, :32], ds.labels)


class _FakeLayer:
    def __init__(self, det):
        self.det = det

    def detectors(self, concept, min_iou=0.04):
        return [u for u, (c, iou) in self.det.items() if c == concept and iou >= min_iou]


class _FakeDissection:
    iou_threshold = 0.04

    def __init__(self):
        self.layers = {"l1": _FakeLayer({0: ("tag", 0.2), 1: ("star", 0.3), 2: ("tag", 0.03)}),
                       "l2": _FakeLayer({5: ("star", 0.5)})}


def test_units_from_dissection():
    d = _FakeDissection()
    assert ab.units_from_dissection(d, "tag") == {"l1": [0]}
    assert ab.units_from_dissection(d, "tag", min_iou=0.01) == {"l1": [0, 2]}
    assert ab.units_from_dissection(d, "star", ["l2"]) == {"l2": [5]}
    with pytest.raises(InputError, match="not dissected"):
        ab.units_from_dissection(d, "tag", ["l3"])


def test_figure_shows_the_numbers(handle):
    x = _x(8, seed=8)
    rep = ab.ablation_report(handle, {"normal": (x, np.zeros(8, int))}, {"conv1": [0]}, random_draws=3)
    fig = ab.accuracy_figure(rep)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.y[0] for b in bars] == pytest.approx([100 * rep.baseline["normal"], 100 * rep.ablated["normal"],
                                                    100 * rep.control["normal"].mean])
    assert bars[2].error_y.array[0] == pytest.approx(100 * rep.control["normal"].std)
    assert fig.layout.yaxis.title.text and fig.layout.xaxis.title.text
