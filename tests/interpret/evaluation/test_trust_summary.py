"""Trust summary: the random-order baseline, faithfulness on a net whose logit is a known pixel region, exact flip
stability on a symmetric net, the agreement matrix against scipy, and rows for maps that cannot rank pixels."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torch import nn

from conftest import assert_same_state, make_handle, model_state
from interpret.attribution.registry import explain
from interpret.core.errors import NotDefined
from interpret.core.result import Attribution
from interpret.evaluation.metrics import deletion_insertion
from interpret.evaluation.trust_summary import (aligned, agreement_matrix, crop_box, perturb, random_map, to_input,
                                                trust_summary, summary_records)
from interpret.plots.evaluation import agreement_figure

SIZE = 16


class RegionSum(nn.Module):
    """Two classes: logit 0 = scale · Σ over ``region`` of the normalized red channel, logit 1 = 0."""

    def __init__(self, region: np.ndarray, scale: float = 0.2):
        super().__init__()
        self.register_buffer("mask", torch.from_numpy(region.astype(np.float32)))
        self.scale = scale

    def forward(self, x):
        z = self.scale * (x[:, 0] * self.mask).sum(dim=(1, 2))
        return torch.stack([z, torch.zeros_like(z)], dim=1)


class Pointwise(nn.Module):
    """1×1 conv → ReLU → global average pool → linear: every map of it is a per-pixel function of the input, so
    explaining the flipped image gives exactly the flipped map."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, k, padding=k // 2)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.relu(self.conv(x)))))


def _image(seed: int = 0, size: int = SIZE) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def _region() -> np.ndarray:
    r = np.zeros((SIZE, SIZE), bool)
    r[3:9, 5:12] = True
    return r


def _bright_in_region() -> Image.Image:
    """Red channel high inside the region (positive normalized input there), mid-grey elsewhere."""
    a = np.full((SIZE, SIZE, 3), 128, np.uint8)
    a[_region(), 0] = 250
    return Image.fromarray(a, "RGB")


def _oracle_explainer(region: np.ndarray):
    """'perfect': the region's indicator; 'inverse': its negative; 'zero': all zero; 'undefined': NotDefined;
    anything else: the registry."""
    def fn(handle, x, target, method):
        if method == "perfect":
            return Attribution(method, target, region.astype(np.float32), signed=False)
        if method == "inverse":
            return Attribution(method, target, -region.astype(np.float32), signed=True)
        if method == "zero":
            return Attribution(method, target, np.zeros(region.shape, np.float32), signed=False)
        if method == "undefined":
            raise NotDefined("CAM is not defined here")
        return explain(handle, x, target, method)
    return fn


@pytest.fixture(scope="module")
def region_handle():
    torch.manual_seed(0)
    return make_handle(RegionSum(_region()), size=SIZE, n_classes=2, key="region")


def test_random_baseline_reproducible_and_equal_to_direct_runs(region_handle):
    h, img = region_handle, _bright_in_region()
    a = trust_summary(h, img, 0, ["perfect"], steps=8, baseline="zero", seeds=(3, 4, 5),
                      explainer=_oracle_explainer(_region()))
    b = trust_summary(h, img, 0, ["perfect"], steps=8, baseline="zero", seeds=(3, 4, 5),
                      explainer=_oracle_explainer(_region()))
    np.testing.assert_array_equal(a.random.auc_deletion, b.random.auc_deletion)
    np.testing.assert_array_equal(a.random.auc_insertion, b.random.auc_insertion)
    x = to_input(h, h.preprocess.view(img))
    for i, s in enumerate((3, 4, 5)):  # oracle: deletion_insertion called directly with that seed's random order
        d = deletion_insertion(h, x, 0, random_map((SIZE, SIZE), s), steps=8, baseline="zero")
        assert a.random.auc_deletion[i] == d.auc_deletion and a.random.auc_insertion[i] == d.auc_insertion
    assert a.random.deletion_mean == pytest.approx(np.mean(a.random.auc_deletion), abs=1e-15)
    assert a.random.deletion_std == pytest.approx(np.std(a.random.auc_deletion, ddof=1), abs=1e-15)
    c = trust_summary(h, img, 0, ["perfect"], steps=8, baseline="zero", seeds=(6, 7, 8),
                      explainer=_oracle_explainer(_region()))
    assert not np.array_equal(a.random.auc_deletion, c.random.auc_deletion)  # another seed, another order


def test_perfect_map_beats_random_and_inverse_does_not(region_handle):
    h = region_handle
    res = trust_summary(h, _bright_in_region(), 0, ["perfect", "inverse", "saliency"], steps=16, baseline="zero",
                        seeds=(0, 1, 2, 3), explainer=_oracle_explainer(_region()))
    assert res.beats_random("perfect") == (True, True)
    assert res.deletion_vs_random("perfect") < 1 < res.insertion_vs_random("perfect")
    # the negated map removes the region last: worse than every random order on both curves
    inv = res.row("inverse")
    assert inv.auc_deletion > res.random.auc_deletion.max() and inv.auc_insertion < res.random.auc_insertion.min()
    assert res.beats_random("inverse") == (False, False)
    # saliency of this net is |0.2/std| on the region and 0 elsewhere: the perfect map's ranking, same AUCs
    sal = res.row("saliency")
    assert sal.auc_deletion == pytest.approx(res.row("perfect").auc_deletion, abs=1e-12)
    assert res.agreement[0, 2] == pytest.approx(1.0, abs=1e-12)
    assert res.agreement[0, 1] == pytest.approx(-1.0, abs=1e-12)
    recs = {r["method"]: r for r in summary_records(res)}
    assert recs["perfect"]["verdict"] == "beats random on both"
    assert recs["inverse"]["verdict"] == "no better than random"


def test_zero_and_undefined_maps_get_a_row_not_a_crash(region_handle):
    res = trust_summary(region_handle, _bright_in_region(), 0, ["zero", "perfect", "undefined"], steps=4,
                        baseline="zero", seeds=(0,), explainer=_oracle_explainer(_region()))
    assert res.row("zero").problem == "map is all zero"
    assert "not defined" in res.row("undefined").problem
    assert np.isnan(res.row("zero").auc_deletion) and not res.row("zero").stability
    assert res.agreement_methods == ["perfect"]  # only usable maps are compared
    recs = {r["method"]: r for r in summary_records(res)}
    assert recs["zero"]["verdict"] == "no numbers: map is all zero"
    assert recs["zero"]["deletion AUC ↓"] is None
    assert res.deletion_vs_random("zero") != res.deletion_vs_random("zero")  # NaN


@pytest.mark.parametrize("method", ["saliency", "gradient", "cam", "grad_x_input"])
def test_flip_stability_is_one_on_a_symmetric_net(method):
    torch.manual_seed(1)
    h = make_handle(Pointwise(k=1), size=SIZE, key="pointwise")
    img = _image(2)
    target = int(np.argmax(h.predict(img)))
    before = model_state(h.net)
    res = trust_summary(h, img, target, [method], steps=4, seeds=(0,), perturbations=("flip",))
    assert_same_state(before, h.net)  # no hook left, nothing changed
    assert res.row(method).problem is None
    assert res.row(method).stability["flip"] == pytest.approx(1.0, abs=1e-12)
    # the map is not symmetric itself: without flipping it back the comparison would fail
    m = res.maps[method]
    assert abs(stats.spearmanr(m.ravel(), m[:, ::-1].ravel()).statistic) < 0.9


def test_flip_stability_below_one_on_an_asymmetric_net():
    torch.manual_seed(3)
    net = Pointwise(k=3)
    with torch.no_grad():
        net.conv.weight[:, :, :, 0] = 0.0  # left column zero, right column random: not flip-symmetric
    h = make_handle(net, size=SIZE, key="asym")
    img = _image(4)
    res = trust_summary(h, img, 0, ["saliency"], steps=4, seeds=(0,), perturbations=("flip",))
    assert res.row("saliency").stability["flip"] < 0.99


def test_agreement_matrix_equals_scipy(region_handle):
    torch.manual_seed(2)
    h = make_handle(Pointwise(k=3), size=SIZE, key="pw3")
    methods = ["saliency", "gradient", "grad_x_input", "gradcam", "guided_backprop"]
    res = trust_summary(h, _image(5), 1, methods, steps=4, seeds=(0,), perturbations=())
    names = res.agreement_methods
    assert names == methods
    A = res.agreement
    np.testing.assert_array_equal(A, A.T)
    np.testing.assert_array_equal(np.diag(A), np.ones(len(names)))
    oracle = stats.spearmanr(np.column_stack([res.maps[n].ravel() for n in names])).statistic
    np.testing.assert_allclose(A, oracle, rtol=0, atol=1e-12)  # float64 ranks: only rounding of the last bits
    fig = agreement_figure(A, names, "c1 (#1)")
    hm = fig.data[0]
    assert (hm.zmin, hm.zmax, hm.zmid, hm.colorscale[0][1]) == (-1.0, 1.0, 0.0, "rgb(5,48,97)")  # RdBu_r, centred
    assert "c1" in fig.layout.title.text


def test_agreement_matrix_constant_map_is_nan():
    a = np.arange(16.0).reshape(4, 4)
    A = agreement_matrix([a, np.zeros((4, 4)), -a])
    assert A[0, 2] == pytest.approx(-1.0) and np.isnan(A[0, 1]) and np.isnan(A[1, 1])


def test_crop_alignment_brings_the_map_back_onto_the_same_pixels():
    # an "explanation" that is the image's own red channel: the crop's map resized back must match the crop region
    yy, xx = np.mgrid[0:32, 0:32]
    red = np.rint(127.5 + 120 * np.sin(xx / 3.0) * np.cos(yy / 4.0)).astype(np.uint8)  # smooth, not monotone
    view = Image.fromarray(np.stack([red, red, red], -1), "RGB")
    left, top, right, bottom = crop_box(view.size, 0.75)
    assert (left, top, right, bottom) == (4, 4, 28, 28)
    original = np.asarray(view, np.float32)[..., 0]
    perturbed = np.asarray(perturb(view, "crop", 0.75), np.float32)[..., 0]
    a, b = aligned(original, perturbed, "crop", 0.75)
    assert a.shape == b.shape == (24, 24)
    np.testing.assert_array_equal(a, original[4:28, 4:28])
    assert stats.spearmanr(a.ravel(), b.ravel()).statistic > 0.99
    # comparing without alignment (whole map against the resized crop) does not match
    assert stats.spearmanr(original.ravel(), perturbed.ravel()).statistic < 0.8
    flip_a, flip_b = aligned(original, original[:, ::-1], "flip")
    np.testing.assert_array_equal(flip_a, flip_b)


def test_jpeg_perturbation_is_a_quality_75_reencode():
    img = _image(7, 32)
    out = perturb(img, "jpeg", jpeg_quality=75)
    assert out.size == img.size and out.mode == "RGB"
    diff = np.abs(np.asarray(out, np.int16) - np.asarray(img, np.int16))
    assert diff.max() > 0  # lossy: random noise does not survive JPEG unchanged


def test_progress_reaches_one_and_never_goes_back(region_handle):
    seen: list[float] = []
    trust_summary(region_handle, _bright_in_region(), 0, ["perfect", "zero"], steps=4, baseline="zero",
                  seeds=(0, 1), explainer=_oracle_explainer(_region()), progress=seen.append)
    assert seen and seen[-1] == pytest.approx(1.0)
    assert all(b >= a - 1e-12 for a, b in zip(seen, seen[1:]))


def test_two_threads_get_their_own_results():
    torch.manual_seed(4)
    h = make_handle(Pointwise(k=3), size=SIZE, key="threads")
    img = _image(8)
    serial = {t: trust_summary(h, img, t, ["saliency", "gradcam"], steps=4, seeds=(0,)) for t in (0, 2)}
    out: dict = {}

    def run(t):
        out[t] = trust_summary(h, img, t, ["saliency", "gradcam"], steps=4, seeds=(0,))

    threads = [threading.Thread(target=run, args=(t,)) for t in (0, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in (0, 2):
        for m in ("saliency", "gradcam"):
            np.testing.assert_array_equal(out[t].maps[m], serial[t].maps[m])
            assert out[t].row(m).stability == serial[t].row(m).stability
