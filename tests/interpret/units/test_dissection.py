"""Network Dissection against oracles: a hand-made net whose units are exact indicators of known masks (IoU 1 for
that concept, the exact set-overlap IoU for the others, 0 for disjoint ones); a downsampling net against a direct
re-implementation (np.quantile over every collected activation, torch's bilinear resize called directly, numpy
set counts); thresholds equal np.quantile on the classroom model's activations; two halves merge to one pass bit
for bit; no hook is left and concurrent threads do not disturb each other."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interpret.core.errors import InputError
from interpret.core.hooks import count_hooks
from interpret.units import dissection as DS
from models.registry import load_model
from tests.conftest import make_handle

EPS64 = np.finfo(np.float64).eps


def _indicator_data(n=6, size=16, seed=0):
    """Images whose red channel is concept A's mask (0/255) and green channel concept B's; C overlaps A; D is
    disjoint from A and B. Blue is noise (read by no unit)."""
    rng = np.random.default_rng(seed)
    A = np.zeros((n, size, size), bool)
    B = np.zeros((n, size, size), bool)
    for i in range(n):
        r, c = rng.integers(0, size - 6, 2)
        A[i, r:r + 5, c:c + 4] = True
        if i % 2 == 0:
            B[i, :2, :3] = True
            A[i, :2, :3] = False
    C = np.zeros_like(A)
    C[:, :, : size // 2] = True  # half the image: overlaps A partly
    D = ~(A | B)
    D[:, 8:, :] = False
    images = np.zeros((n, size, size, 3), np.uint8)
    images[..., 0] = A * 255
    images[..., 1] = B * 255
    images[..., 2] = rng.integers(0, 256, (n, size, size))
    masks = np.stack([A, B, C, D], 1)
    return DS.ConceptData(images, masks, ["A", "B", "C", "D"], "indicator test")


def _indicator_net(pool: bool = False) -> nn.Module:
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0  # unit 0 = red = mask A (exactly 0 or 1: x = u8/255 with mean 0, std 1)
        conv.weight[1, 1] = 1.0  # unit 1 = green = mask B
    return nn.Sequential(nn.AvgPool2d(2), conv) if pool else nn.Sequential(conv)


def _exact_iou(a: np.ndarray, m: np.ndarray) -> float:
    return (a & m).sum() / (a | m).sum()


def test_indicator_unit_has_iou_one_with_its_concept():
    data = _indicator_data()
    handle = make_handle(_indicator_net(), 16, 2, mean=(0.0,) * 3, std=(1.0,) * 3)
    M = data.masks[:, 0].size
    F_A = int(data.masks[:, 0].sum())
    # q such that the (1 − q) quantile falls between the 0s and the 1s of both indicators (F_B < F_A)
    q = (F_A + 1) / M
    d = DS.dissect(handle, data, ["0"], quantile=q, batch_size=4)
    ld = d.layers["0"]
    assert 0.0 <= ld.thresholds[0] < 1.0 and 0.0 <= ld.thresholds[1] < 1.0
    A, B, C, Dm = (data.masks[:, k] for k in range(4))
    assert ld.iou[0, 0] == 1.0 and ld.iou[1, 1] == 1.0
    assert ld.iou[0, 1] == 0.0 and ld.iou[1, 0] == 0.0 and ld.iou[0, 3] == 0.0 and ld.iou[1, 3] == 0.0  # disjoint
    assert ld.iou[0, 2] == _exact_iou(A, C) and ld.iou[1, 2] == _exact_iou(B, C)
    assert ld.best() == [(0, "A", 1.0), (1, "B", 1.0)]
    assert ld.detectors("A") == [0] and ld.detectors("B") == [1] and ld.detectors("C") == []
    assert ld.counts() == {"A": 1, "B": 1, "C": 0, "D": 0}
    assert d.n_images == 6 and d.source == "indicator test"
    assert count_hooks(handle.net) == 0


def _oracle(net, data, q):
    """Direct: every activation collected (no hooks: the net called plainly), np.quantile per unit, torch's bilinear
    resize per image, numpy set counts."""
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        a = net(x)
    thr = np.quantile(a.permute(1, 0, 2, 3).reshape(a.shape[1], -1).double().numpy(), 1 - q, axis=1)
    up = F.interpolate(a, size=data.images.shape[1:3], mode="bilinear", align_corners=False).numpy()
    C, K = a.shape[1], data.masks.shape[1]
    inter = np.zeros((C, K), np.int64)
    union = np.zeros((C, K), np.int64)
    for c in range(C):
        act = up[:, c].astype(np.float64) > thr[c]
        for k in range(K):
            inter[c, k] = (act & data.masks[:, k]).sum()
            union[c, k] = (act | data.masks[:, k]).sum()
    return thr, inter, union


def test_downsampled_layer_against_direct_reimplementation():
    data = _indicator_data(n=8, seed=3)
    net = _indicator_net(pool=True)
    with torch.no_grad():
        net[1].weight[0, 2] = 0.3  # mix in the noise channel: values are no longer two-level
    handle = make_handle(net, 16, 2, mean=(0.0,) * 3, std=(1.0,) * 3)
    q = 0.05
    d = DS.dissect(handle, data, ["1"], quantile=q, batch_size=8)  # one batch, as the oracle's forward pass
    thr, inter, union = _oracle(net, data, q)
    ld = d.layers["1"]
    # the threshold is the same linear interpolation of the same two order statistics: a few float64 roundings
    assert np.all(np.abs(ld.thresholds - thr) <= 4 * EPS64 * np.abs(thr))
    assert np.array_equal(ld.intersections, inter) and np.array_equal(ld.unions, union)
    np.testing.assert_array_equal(ld.iou, inter / union)
    assert ld.map_size == (8, 8)


def test_thresholds_from_kept_top_values_equal_np_quantile():
    rng = np.random.default_rng(1)
    for M, q in [(1, 0.5), (2, 0.005), (7, 0.3), (1000, 0.005), (4097, 0.005), (999, 0.9)]:
        vals = rng.normal(size=(3, M)).astype(np.float32)
        vals[0, : M // 2] = 0.0  # ties
        keep = DS.keep_count(M, q)
        top = -np.sort(-vals, axis=1)[:, :keep]
        st = DS.QuantileState(q, M, {"l": top}, {"l": M}, {"l": keep})
        got = DS.thresholds_of(st)["l"]
        ref = np.quantile(vals.astype(np.float64), 1 - q, axis=1)
        assert np.all(np.abs(got - ref) <= 4 * EPS64 * np.abs(vals).max()), (M, q)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the shared 2-core machine runs several test processes (results do not depend on it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def classroom():
    return load_model("classroom_clean")


@pytest.fixture(scope="module")
def small_data():
    return DS.classroom_dissection_data("test", 24, seed=11)


def test_thresholds_equal_np_quantile_on_collected_activations(classroom, small_data):
    layers = ["features.2", "features.9"]
    q = 0.01
    st = DS.quantile_pass(classroom, small_data, layers, q, batch_size=8)
    thr = DS.thresholds_of(st)
    pre = classroom.preprocess
    x = pre.normalize(torch.from_numpy(small_data.images).permute(0, 3, 1, 2).float() / 255.0)
    got: dict[str, torch.Tensor] = {}
    hooks = [classroom.net.features[int(n.split(".")[1])].register_forward_hook(
        lambda m, i, o, n=n: got.__setitem__(n, o.clone())) for n in layers]
    parts: dict[str, list] = {n: [] for n in layers}
    try:
        with torch.no_grad():
            for s in range(0, len(x), 8):  # the batches of the pass (float32 rounding may depend on them)
                classroom.net(x[s:s + 8])
                for n in layers:
                    parts[n].append(got[n])
    finally:
        for h in hooks:
            h.remove()
    for n in layers:
        full = torch.cat(parts[n])
        a = full.permute(1, 0, 2, 3).reshape(full.shape[1], -1).double().numpy()
        ref = np.quantile(a, 1 - q, axis=1)
        assert np.all(np.abs(thr[n] - ref) <= 4 * EPS64 * np.abs(a).max()), n
        assert st.seen[n] == a.shape[1]
        assert st.top[n].shape[1] == DS.keep_count(a.shape[1], q)
    assert count_hooks(classroom.net) == 0


def test_two_halves_merge_to_one_pass_exactly(classroom, small_data):
    layers = ["features.6", "features.16"]
    one = DS.dissect(classroom, small_data, layers, batch_size=8)
    halves = [range(0, 16), range(16, 24)]  # whole batches of 8
    qs = [DS.quantile_pass(classroom, small_data, layers, indices=h, n_total=24, batch_size=8) for h in halves]
    q = DS.merge_quantiles(qs)
    thr = DS.thresholds_of(q)
    ss = [DS.iou_pass(classroom, small_data, thr, indices=h, batch_size=8) for h in halves[::-1]]  # any order
    merged = DS.finish(q, DS.merge_iou(ss))
    for n in layers:
        a, b = one.layers[n], merged.layers[n]
        assert np.array_equal(a.thresholds, b.thresholds)
        assert np.array_equal(a.intersections, b.intersections) and np.array_equal(a.unions, b.unions)
        assert np.array_equal(a.iou, b.iou)
        # tallies are consistent: union = |A| + |M| − |A∩M|, and |M| is the masks' own pixel count
        mask_px = small_data.masks.sum(axis=(0, 2, 3))
        assert np.all(b.unions >= mask_px[None, :]) and np.all(b.intersections <= mask_px[None, :])
    assert merged.n_images == 24


def test_lazy_classroom_source_equals_the_generated_arrays(small_data):
    lazy = DS.ClassroomConcepts("test", 24, seed=11)
    idx = [0, 5, 23, 7]
    im, mk = lazy.batch(idx)
    im2, mk2 = small_data.batch(idx)
    assert np.array_equal(im, im2) and np.array_equal(mk, mk2)
    assert lazy.concepts == small_data.concepts and lazy.source == small_data.source


def test_layers_without_spatial_maps_are_refused(classroom, small_data):
    with pytest.raises(InputError, match="not a spatial map"):
        DS.dissect(classroom, small_data, ["fc"])
    with pytest.raises(InputError, match="not a spatial map"):
        DS.dissect(classroom, small_data, ["pool"])  # (96, 1, 1): one position only
    with pytest.raises(InputError, match="no layer named"):
        DS.dissect(classroom, small_data, ["features.99"])
    with pytest.raises(InputError, match="quantile"):
        DS.dissect(classroom, small_data, ["features.2"], quantile=0.0)
    with pytest.raises(InputError, match="unknown concept"):
        DS.LayerDissection("l", ["a"], np.zeros(1), np.zeros((1, 1))).detectors("dog")
    assert count_hooks(classroom.net) == 0


def test_images_at_another_size_are_refused():
    data = _indicator_data()
    handle = make_handle(_indicator_net(), 32, 2)
    with pytest.raises(InputError, match="input size"):
        DS.dissect(handle, data, ["0"])


def test_best_detectors_counts_on_a_given_iou_matrix():
    iou = np.array([[0.01, 0.20, 0.05], [0.30, 0.10, 0.00], [0.02, 0.03, 0.039], [0.10, 0.10, 0.0]])
    ld = DS.LayerDissection("l", ["a", "b", "c"], np.zeros(4), iou)
    assert ld.best() == [(1, "a", 0.30), (0, "b", 0.20), (3, "a", 0.10), (2, "c", 0.039)]  # ties: first concept
    assert ld.detectors("a") == [1, 3] and ld.detectors("b") == [0] and ld.detectors("c") == []
    assert ld.detectors("c", min_iou=0.03) == [2]
    assert ld.counts() == {"a": 2, "b": 1, "c": 0}


def test_concurrent_dissections_do_not_see_each_other(classroom, small_data):
    serial = {n: DS.dissect(classroom, small_data, [n], batch_size=8).layers[n] for n in ("features.2", "features.13")}
    out: dict[str, DS.LayerDissection] = {}
    errors: list[BaseException] = []

    def work(n):
        try:
            out[n] = DS.dissect(classroom, small_data, [n], batch_size=8).layers[n]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(n,)) for n in serial]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for n, ld in serial.items():
        assert np.array_equal(out[n].iou, ld.iou) and np.array_equal(out[n].thresholds, ld.thresholds)
    assert count_hooks(classroom.net) == 0


def test_keep_count_is_enough_and_small():
    for M in (1, 2, 3, 100, 12345, 2_457_600):
        for q in (0.005, 0.1, 0.5):
            keep = DS.keep_count(M, q)
            lo = math.floor((1 - q) * (M - 1))
            assert M - lo <= keep <= M
            assert keep <= q * M + 4


# ---------------------------------------------------------------------------------------------------------
# Class selectivity (interpret.units.selectivity)

from PIL import Image  # noqa: E402

from interpret.units import selectivity as SE  # noqa: E402
from models.collections import from_folder  # noqa: E402


def _labelled_folder(root, per_class=(3, 2, 4), size=16, seed=0):
    rng = np.random.default_rng(seed)
    arrays, labels = [], []
    for c, n in enumerate(per_class):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            a[..., c] = np.clip(a[..., c].astype(int) + 80 * c, 0, 255)  # class c: more of channel c
            Image.fromarray(a).save(root / f"class{c}" / f"{i:03d}.png")
            arrays.append(a)
            labels.append(c)
    return arrays, labels


def _sel_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(5, 4, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 64, 3))


def _abs_net(net: nn.Module) -> nn.Module:
    """|W|, |b| and ReLU → identity, in float64: on |x| it gives Σ|w||x| through the layers, the scale of the
    float32 rounding error of the real forward pass."""
    import copy

    a = copy.deepcopy(net).double()
    for i, m in enumerate(a):
        if isinstance(m, nn.ReLU):
            a[i] = nn.Identity()
        for p in m.parameters(recurse=False):
            p.data.abs_()
    return a


def test_selectivity_against_direct_numpy(tmp_path):
    arrays, labels = _labelled_folder(tmp_path)
    net = _sel_net()
    handle = make_handle(net, 16, 3)
    sel = SE.selectivity_of_collection(handle, from_folder(tmp_path), ["1", "4"], batch_size=4)
    assert sel.classes == ["class0", "class1", "class2"] and sel.n_images == 9
    x = torch.stack([handle.preprocess(Image.fromarray(a)) for a in arrays]).double()
    ref, absn = copy_double(net), _abs_net(net)
    with torch.no_grad():
        maps = {"1": (ref[:2](x), absn[:2](x.abs()), 27), "4": (ref[:5](x), absn[:5](x.abs()), 27 + 5)}
    y = np.array(labels)
    for name, (a, scale, depth) in maps.items():
        m = a.numpy().mean(axis=(2, 3))  # (N, C) per-image unit means, float64 oracle
        # float32 forward: per value ≤ (terms summed + a few) · eps32 · Σ|w||x|, averaged like the values
        err = (depth + 4) * np.finfo(np.float32).eps * scale.numpy().mean(axis=(2, 3))
        mu = np.stack([m[y == c].mean(0) for c in range(3)])
        tol = np.stack([err[y == c].mean(0) for c in range(3)])
        top = mu.max(0)
        rest = (mu.sum(0) - top) / 2
        den = top + rest
        si = np.divide(top - rest, den, out=np.zeros_like(den), where=den > 0)  # a dead unit: 0 by definition
        ls = sel.layers[name]
        assert np.all(np.abs(ls.means - mu) <= tol)
        t = tol.max(0)  # SI = f(top, rest): |∂SI/∂top|, |∂SI/∂rest| ≤ 2·rest/(top+rest)², 2·top/(top+rest)²
        live = den > 4 * t
        assert np.all(ls.index()[~live] == 0) and (~live).sum() < len(den)
        assert np.all(np.abs(ls.index() - si)[live] <= (4 * t * den / (den - 2 * t) ** 2)[live])
        assert list(ls.counts) == [3, 2, 4]
        gap = np.sort(mu, 0)
        for u in range(mu.shape[1]):
            if np.min(np.diff(gap[:, u])) > 2 * t[u]:  # order decided beyond rounding
                assert [c for c, _ in ls.top_classes(u, 3)] == \
                    [f"class{c}" for c in np.argsort(-mu[:, u], kind="stable")]
    assert count_hooks(net) == 0


def copy_double(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net).double()


def test_selectivity_needs_labels_and_two_classes(tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "flat.png")
    handle = make_handle(_sel_net(), 16, 3)
    with pytest.raises(InputError, match="no class labels"):
        SE.selectivity_of_collection(handle, from_folder(tmp_path), ["1"])
    (tmp_path / "flat.png").unlink()
    (tmp_path / "only").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(InputError, match="at least two classes"):
        SE.selectivity_of_collection(handle, from_folder(tmp_path), ["1"])
    with pytest.raises(InputError, match="no layer named"):
        SE.selectivity_of_collection(handle, from_folder(tmp_path), ["zz"])


def test_selectivity_halves_merge_and_arrays_path(tmp_path):
    arrays, labels = _labelled_folder(tmp_path)
    handle = make_handle(_sel_net(), 16, 3)
    images, y = np.stack(arrays), np.array(labels)
    classes = ["class0", "class1", "class2"]
    pre = handle.preprocess

    def batches(*cuts):
        for s, e in zip(cuts[:-1], cuts[1:]):
            u8 = torch.from_numpy(images[s:e]).permute(0, 3, 1, 2)
            yield pre.normalize(u8.float() / 255.0), y[s:e]

    # the same batches (a float32 forward pass may round differently in another batch composition)
    whole = SE.finish(SE.selectivity_pass(handle, batches(0, 4, 9), classes, ["4"]))
    parts = SE.finish(SE.merge_selectivity([SE.selectivity_pass(handle, batches(0, 4), classes, ["4"]),
                                            SE.selectivity_pass(handle, batches(4, 9), classes, ["4"])]))
    arr = SE.selectivity_of_arrays(handle, images[:8], y[:8], classes, ["4"], batch_size=4)
    first8 = SE.finish(SE.selectivity_pass(handle, batches(0, 4, 8), classes, ["4"]))
    a, b = whole.layers["4"], parts.layers["4"]
    assert np.array_equal(a.counts, b.counts)
    tol = 8 * EPS64 * np.abs(a.means).max()  # float64 sums, another addition order at most
    assert np.all(np.abs(a.means - b.means) <= tol)
    assert np.all(np.abs(arr.layers["4"].means - first8.layers["4"].means) <= tol)
    assert list(arr.layers["4"].counts) == [3, 2, 3]


def test_selectivity_index_on_given_means():
    means = np.array([[4.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # unit 0: one class; 1: all alike
    ls = SE.LayerSelectivity("l", ["a", "b", "c"], means, np.array([2, 1, 1]))
    np.testing.assert_array_equal(ls.index(), [1.0, 0.0, 0.0])
    assert ls.top_classes(0, 2) == [("a", 4.0), ("b", 0.0)]
    assert ls.ranking() == [(0, "a", 1.0), (1, "a", 0.0), (2, "a", 0.0)]
    half = SE.LayerSelectivity("l", ["a", "b", "c"], np.array([[3.0], [1.0], [1.0]]), np.array([1, 1, 1]))
    assert half.index()[0] == (3 - 1) / (3 + 1)


def test_selectivity_index_is_nan_for_units_with_negative_means():
    """(μ_max − μ_rest)/(μ_max + μ_rest) with a negative mean is unbounded (here 1.9 / 0.1 = 19): no SI, ranked last."""
    means = np.array([[1.0, 2.0], [-0.9, 0.0]])
    ls = SE.LayerSelectivity("l", ["a", "b"], means, np.array([1, 1]))
    si = ls.index()
    assert np.isnan(si[0]) and si[1] == 1.0
    assert [u for u, _, _ in ls.ranking()] == [1, 0]
