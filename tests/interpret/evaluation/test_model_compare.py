"""Two models on one image: the common frame (each model's own preprocessing and input size), the bilinear
resampling against scipy, alignment of two models' maps on a ramp image whose maps are known, top-5 and maps
against direct calls, difference and Spearman against their definitions, the class choice, no hook left, threads,
and real models of different input sizes."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage, stats
from torch import nn

from interpret.attribution.registry import explain
from interpret.core.errors import InputError
from interpret.core.hooks import count_hooks
from interpret.evaluation.model_compare import (common_frame, common_view, compare_models, field_fraction,
                                                resample_centre, unit_peak)
from models.handle import ModelHandle, Preprocess
from tests.conftest import assert_same_state, model_state



def linear_net() -> nn.Module:
    """logit 0 = spatial mean of (R + G + B), logit 1 = its negative: ∂logit0/∂x = 1/(H·W) everywhere, so the
    gradient × input map is (R + G + B)/(H·W) of the normalized input."""
    conv = nn.Conv2d(3, 1, 1, bias=False)
    fc = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()


def handle(pre: Preprocess, key: str, labels=("c0", "c1"), net: nn.Module | None = None) -> ModelHandle:
    return ModelHandle(key, key, net if net is not None else linear_net(), pre, list(labels), "test")


A_PRE = Preprocess(32, 32, (0.0,) * 3, (1.0,) * 3)   # sees the whole shorter side, 32² input
B_PRE = Preprocess(64, 48, (0.0,) * 3, (1.0,) * 3)   # sees 3/4 of it, 48² input


def ramp_image(w: int = 90, h: int = 60) -> Image.Image:
    """Grey, exactly linear: value 40 + x + 2y at pixel (x, y)."""
    yy, xx = np.mgrid[0:h, 0:w]
    v = (40 + xx + 2 * yy).astype(np.uint8)
    return Image.fromarray(np.stack([v] * 3, -1))


def test_field_and_common_frame_by_hand():
    assert field_fraction(A_PRE) == 1.0 and field_fraction(B_PRE) == 0.75
    assert common_frame(A_PRE, B_PRE) == (0.75, 1.0, 48)  # A's central 24 px ↔ all 48 of B
    lite0 = Preprocess(256, 224, (0.5,) * 3, (0.5,) * 3)
    classroom = Preprocess(64, 64, (0.5,) * 3, (0.25,) * 3)
    assert common_frame(classroom, lite0) == (0.875, 1.0, 224)
    assert common_frame(lite0, lite0) == (1.0, 1.0, 224)


def test_resampling_equals_scipy_bilinear():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(24, 24))
    for ratio, size in ((1.0, 24), (0.75, 48), (0.5, 37), (1.0, 61)):
        got = resample_centre(m, ratio, size)
        # the same sampling positions, written independently: output pixel centre t = (u + ½)/size of the
        # centred square [n(1 − r)/2, n(1 + r)/2] (pixel edges), minus ½ for pixel-centre coordinates
        t = (np.arange(size) + 0.5) / size
        q = 24 * (1 - ratio) / 2 + t * 24 * ratio - 0.5
        yy, xx = np.meshgrid(q, q, indexing="ij")
        want = ndimage.map_coordinates(m, [yy, xx], order=1, mode="nearest")
        # two weights summing to 1 on values |m| ≤ 4: a few roundings of each product and sum
        assert np.abs(got - want).max() <= 16 * np.finfo(float).eps * np.abs(m).max(), (ratio, size)
    np.testing.assert_allclose(resample_centre(m, 1.0, 24), m, rtol=0, atol=16 * np.finfo(float).eps * 4)


def test_resampling_keeps_a_linear_map():
    i, j = np.mgrid[0:20, 0:20].astype(float)
    m = 0.3 * i - 1.2 * j + 5
    got = resample_centre(m, 0.5, 30)
    q = 20 * 0.25 + (np.arange(30) + 0.5) / 30 * 10 - 0.5  # inside [0, 19]: no clamping
    want = 0.3 * q[:, None] - 1.2 * q[None, :] + 5
    assert np.abs(got - want).max() <= 1e-12


def test_maps_of_two_input_sizes_land_on_the_same_place():
    """Both models' gradient × input maps are the brightness of what they see; on the common frame both must
    equal the brightness of the original image at the same point. Positions agree to within a pixel of the
    original (centre-crop rounding: half a resized pixel, 60/32/2 < 1 px), so with slopes 1 and 2 levels per
    pixel and uint8 rounding (½ level) the error is at most 3·(1 + 2 + ½)/255 per pixel (three channels). Not
    cropping A to the common square would shift its edges by 7.5 px: an error of up to 0.26."""
    a, b = handle(A_PRE, "a"), handle(B_PRE, "b")
    img = ramp_image()
    res = compare_models(a, b, img, "grad_x_input")
    assert res.size == 48 and res.a.target == res.b.target == 0 and res.same_class
    s = res.size
    t = (np.arange(s) + 0.5) / s
    x = 45 + (t - 0.5) * 45 - 0.5  # the common square: 45 px centred on the 90×60 image
    y = 30 + (t - 0.5) * 45 - 0.5
    want = 3 * (40 + x[None, :] + 2 * y[:, None]) / 255
    tol = 3 * (1 + 2 + 0.5) / 255
    for side, n in ((res.a, 32), (res.b, 48)):
        assert np.abs(side.common * n * n - want).max() <= tol, side.key
    assert res.rank_correlation > 0.99
    assert np.abs(res.difference).max() <= 2 * tol / want.max()
    view = common_view(img, a.preprocess, b.preprocess)
    assert view.shape == (48, 48, 3)
    assert np.abs(view[..., 0] - (40 + x[None, :] + 2 * y[:, None]) / 255).max() <= (1.5 + 0.5) / 255


def other_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


@pytest.fixture
def pair():
    pre_a = Preprocess(40, 32, (0.5,) * 3, (0.25,) * 3)
    pre_b = Preprocess(24, 24, (0.4,) * 3, (0.3,) * 3)
    return (handle(pre_a, "na", ("cat", "dog", "owl"), other_net(1)),
            handle(pre_b, "nb", ("cat", "dog", "owl"), other_net(2)))


@pytest.fixture
def photo():
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8))


def test_parts_equal_direct_calls(pair, photo):
    a, b = pair
    before = (model_state(a.net), model_state(b.net))
    res = compare_models(a, b, photo, "gradient")
    assert_same_state(before[0], a.net)
    assert_same_state(before[1], b.net)
    for side, h in ((res.a, a), (res.b, b)):
        assert side.topk == h.topk(photo, 5)[:3]  # three classes: the top-5 is all of them
        assert side.target == side.topk[0][0]
        direct = explain(h, h.input_tensor(photo), side.target, "gradient")
        np.testing.assert_array_equal(side.attr.map, direct.map)
        ra, rb, size = common_frame(a.preprocess, b.preprocess)
        np.testing.assert_array_equal(side.common, resample_centre(direct.map, ra if h is a else rb, size))
    pa, pb = res.a.common, res.b.common
    np.testing.assert_allclose(res.difference, pb / np.abs(pb).max() - pa / np.abs(pa).max(), rtol=0, atol=1e-15)
    assert res.rank_correlation == pytest.approx(stats.spearmanr(pa.ravel(), pb.ravel()).statistic, abs=1e-12)
    assert res.signed and res.shared == ["cat", "dog", "owl"]


def test_class_choice(pair, photo):
    a, b = pair
    res = compare_models(a, b, photo, "gradient", target="owl")
    assert res.a.target == res.b.target == 2 and res.same_class and "owl" in res.note
    res = compare_models(a, b, photo, "gradient", target=1)
    assert res.a.label == res.b.label == "dog"
    # a partly shared label set: by name, whatever the index
    c = handle(b.preprocess, "nc", ("owl", "bee", "cat"), other_net(3))
    res = compare_models(a, c, photo, "gradient", target="cat")
    assert (res.a.target, res.b.target) == (0, 2) and res.shared == ["cat", "owl"]
    with pytest.raises(InputError, match="label lists"):
        compare_models(a, c, photo, "gradient", target=0)
    with pytest.raises(InputError, match="not a class of both"):
        compare_models(a, c, photo, "gradient", target="dog")
    # no shared class: each model's own top class, and the note says so
    d = handle(b.preprocess, "nd", ("x", "y", "z"), other_net(4))
    res = compare_models(a, d, photo, "gradient")
    assert "share no class" in res.note and res.shared == []
    assert res.a.target == int(np.argmax(a.predict(photo))) and res.b.target == int(np.argmax(d.predict(photo)))
    with pytest.raises(InputError, match="share no class"):
        compare_models(a, d, photo, "gradient", target="x")


def test_layer_is_left_to_each_model(pair, photo):
    a, b = pair
    with pytest.raises(InputError, match="default layer"):
        compare_models(a, b, photo, "gradcam", params={"layer": "0"})
    res = compare_models(a, b, photo, "gradcam", params={"layer": None})
    assert res.a.attr.map.shape == (32, 32) and res.b.attr.map.shape == (24, 24) and res.size == 32


def test_unit_peak():
    np.testing.assert_array_equal(unit_peak(np.array([[2.0, -4.0]])), [[0.5, -1.0]])
    np.testing.assert_array_equal(unit_peak(np.zeros((2, 2))), np.zeros((2, 2)))


def test_progress_and_threads(pair, photo):
    a, b = pair
    seen = []
    serial = compare_models(a, b, photo, "gradcam", progress=seen.append)
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen) and seen == sorted(seen)
    out, errors = {}, []

    def work(k, first, second):
        try:
            out[k] = compare_models(first, second, photo, "gradcam")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k, a, b)) for k in range(3)]
    ts.append(threading.Thread(target=work, args=("r", b, a)))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for k in range(3):
        np.testing.assert_array_equal(out[k].difference, serial.difference)
    np.testing.assert_array_equal(out["r"].a.attr.map, serial.b.attr.map)
    assert count_hooks(a.net) == 0 and count_hooks(b.net) == 0


@pytest.mark.slow
def test_classroom_and_lite0_of_different_sizes(default_handle):
    """64² classroom CNN beside 224² EfficientNet-Lite0: no shared class, each its own top class, a 224 frame."""
    from models import classroom, load_model

    clean = load_model("classroom_clean", "cpu")
    img = classroom.sample_images()["classroom: star with cue"]
    res = compare_models(clean, default_handle, img, "gradcam")
    assert res.size == 224 and "share no class" in res.note
    assert res.a.attr.map.shape == (64, 64) and res.b.attr.map.shape == (224, 224)
    assert res.a.label == "star" and np.isfinite(res.rank_correlation)
    assert res.difference.shape == (224, 224) and np.abs(res.difference).max() <= 2


def test_clean_and_clever_hans_on_the_untagged_star():
    """The star without its tag: each model explains its own top class (the Clever Hans model, which learnt the
    tag, may call it something else); asked for 'star', both explain the same class index."""
    from models import classroom, load_model

    clean, spur = load_model("classroom_clean", "cpu"), load_model("classroom_spurious", "cpu")
    img = classroom.sample_images()["classroom: star without cue"]
    res = compare_models(clean, spur, img, "gradcam")
    tops = [h.labels[int(np.argmax(h.predict(img)))] for h in (clean, spur)]
    assert [res.a.label, res.b.label] == tops and res.same_class == (tops[0] == tops[1])
    res = compare_models(clean, spur, img, "gradcam", target="star")
    star = classroom.CLASSES.index("star")
    assert res.same_class and res.a.target == res.b.target == star and res.size == 64
    assert res.a.attr.map.shape == (64, 64) and np.isfinite(res.rank_correlation)
