"""Brush-to-test core: fills checked pixel-exactly against direct numpy/scipy computations, region shares against
hand-made maps and masks, the mask carried to the model's input by the photo's own preprocessing, and the edit's
effect on a hand-set tiny net (probabilities against a float64 formula)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

from interpret.core.errors import InputError
from interpret.evaluation.edits import (apply_edit, crop_box, edit_effect, input_mask, input_rects, mean_grey,
                                        rect_mask, region_share, segment_image)
from tests.conftest import assert_same_state, make_handle, model_state
from tests.roundoff import U32, gamma


def _photo(h=40, w=56, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- masks ---------------------------------------------------------------------------------------------------

def test_rect_mask_union_clip_and_corner_order():
    m = rect_mask((4, 6), [(1, 1, 3, 2), (5, 3, 4, 0), (-5, -5, -1, -1), (2, 2, 2, 4), (5, 3, 99, 99)])
    want = np.zeros((4, 6), bool)
    want[1, 1:3] = True           # (1,1)-(3,2)
    want[0:3, 4] = True           # corners given in reverse order
    want[3, 5] = True             # clipped at the image's corner
    np.testing.assert_array_equal(m, want)  # the outside and the zero-width rectangles add nothing


# ---- region shares ---------------------------------------------------------------------------------------------

def test_region_share_hand_made():
    a = np.array([[1.0, 2.0], [3.0, -4.0]])
    m = np.array([[True, False], [False, True]])
    assert region_share(a, m).value == pytest.approx(1 / 6, abs=1e-15)     # negatives count as zero
    assert region_share(a, ~m).value == pytest.approx(5 / 6, abs=1e-15)
    w = np.array([[0.5, 0.25], [0.0, 1.0]])                                # weights: (0.5 + 0.5) / 6
    assert region_share(a, w).value == pytest.approx(1 / 6, abs=1e-15)
    assert region_share(a, np.ones((2, 2), bool)).value == 1.0
    assert region_share(a, np.zeros((2, 2), bool)).value == 0.0


@pytest.mark.parametrize("a, why", [(np.zeros((3, 3)), "no positive mass"), (-np.ones((3, 3)), "no positive mass"),
                                    (np.array([[np.nan, 1.0, 0, 0, 0, 0, 0, 0, 0]]).reshape(3, 3), "non-finite")])
def test_region_share_without_a_value_says_why(a, why):
    s = region_share(a, np.ones((3, 3), bool))
    assert s.value is None and why in s.reason


def test_region_share_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="input_mask"):
        region_share(np.ones((4, 4)), np.ones((8, 8), bool))


# ---- fills ------------------------------------------------------------------------------------------------------

def _mask(img, rects):
    return rect_mask(img.shape[:2], rects)


def test_grey_fill_pixel_exact_and_nothing_else():
    img = _photo()
    m = _mask(img, [(3, 5, 20, 17), (30, 0, 56, 4)])
    out = apply_edit(img, m, "grey", grey=(124, 116, 104))
    np.testing.assert_array_equal(out[m], np.broadcast_to([124, 116, 104], (m.sum(), 3)))
    np.testing.assert_array_equal(out[~m], img[~m])
    np.testing.assert_array_equal(apply_edit(img, m, "grey")[m], np.full((m.sum(), 3), 128))  # the default grey
    assert out is not img and np.array_equal(img, _photo())                                 # the input is kept


@pytest.mark.parametrize("rects", [[(10, 8, 30, 20)], [(0, 0, 6, 40)], [(50, 35, 56, 40), (2, 2, 4, 4)]])
@pytest.mark.parametrize("sigma", [1.0, 3.5])
def test_blur_fill_equals_blurring_the_whole_photo(rects, sigma):
    img = _photo()
    m = _mask(img, rects)
    full = ndimage.gaussian_filter(img.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect")
    want = img.copy()
    want[m] = np.clip(np.rint(full[m]), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(apply_edit(img, m, "blur", sigma=sigma), want)


def test_segment_mean_fill_hand_made_segments():
    img = _photo(6, 8)
    seg = np.zeros((6, 8), np.int64)
    seg[:, 4:] = 1
    seg[4:, :] = 2
    m = _mask(img, [(3, 1, 6, 5)])  # touches all three segments
    out = apply_edit(img, m, "segment_mean", segments=seg)
    want = img.copy()
    for y, x in zip(*np.nonzero(m)):  # slow and obvious: the mean of the whole segment, pixel by pixel
        want[y, x] = np.rint(img[seg == seg[y, x]].astype(np.float64).mean(axis=0))
    np.testing.assert_array_equal(out, want)


def test_segment_mean_uses_lime_segmentation_seeded():
    img = np.asarray(Image.fromarray(_photo(48, 48, 3)).resize((48, 48)))
    m = _mask(img, [(10, 10, 30, 25)])
    seg = segment_image(img, "slic", seed=0)
    np.testing.assert_array_equal(apply_edit(img, m, "segment_mean", segmentation="slic", seed=0),
                                  apply_edit(img, m, "segment_mean", segments=seg))


@pytest.mark.parametrize("fill", ["grey", "blur", "segment_mean"])
def test_mask_outside_the_image_changes_nothing(fill):
    img = _photo()
    m = _mask(img, [(60, 0, 80, 10), (-10, -10, 0, 0)])
    assert not m.any()
    np.testing.assert_array_equal(apply_edit(img, m, fill), img)


def test_bad_edits_are_input_errors():
    img = _photo()
    with pytest.raises(InputError, match="unknown fill"):
        apply_edit(img, np.ones(img.shape[:2], bool), "paint")
    with pytest.raises(InputError, match="mask"):
        apply_edit(img, np.ones((3, 3), bool), "grey")
    with pytest.raises(InputError, match="σ"):
        apply_edit(img, np.ones(img.shape[:2], bool), "blur", sigma=0)


# ---- the mask at the model's input --------------------------------------------------------------------------------

def test_input_mask_identity_when_the_model_sees_the_photo_as_is():
    h = make_handle(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)), 32)
    m = rect_mask((32, 32), [(3, 4, 20, 9)])
    np.testing.assert_array_equal(input_mask(m, h), m.astype(np.float64))


def test_input_mask_is_the_share_of_each_input_pixel_that_was_painted():
    """The mask through the photo's own resize + crop: a black photo with the painted pixels made white, seen by
    the model, is the mask weight everywhere (resizing is linear); the edit of a real photo changes the model's
    input only where the weight is positive."""
    h = make_handle(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)), 32)  # resize 32 → centre crop 32²
    m = rect_mask((50, 80), [(5, 5, 33, 19), (70, 30, 80, 50)])
    w = input_mask(m, h)
    white = Image.fromarray(np.repeat(np.where(m, 255, 0).astype(np.uint8)[..., None], 3, axis=2))
    seen = np.asarray(h.preprocess.view(white), dtype=np.float64) / 255.0
    np.testing.assert_array_equal(w, seen[..., 0])
    assert w.shape == (32, 32) and w.max() == 1.0 and ((w > 0) & (w < 1)).any()  # edges are shared
    img = _photo(50, 80)
    before = np.asarray(h.preprocess.view(Image.fromarray(img)), dtype=np.int64)
    after = np.asarray(h.preprocess.view(Image.fromarray(apply_edit(img, m, "grey"))), dtype=np.int64)
    changed = (before != after).any(axis=2)
    assert changed.any() and not changed[w == 0].any()


@pytest.mark.parametrize("w, h, resize, crop", [(80, 50, 32, 32), (50, 80, 40, 32), (64, 64, 64, 64),
                                                 (600, 400, 256, 224)])
def test_crop_box_is_what_the_model_sees(w, h, resize, crop):
    """Painting outside the box (and the resize filter's reach) leaves the model's input untouched; painting
    inside it (short of that reach) covers the input's interior."""
    handle = make_handle(nn.Sequential(nn.Flatten(), nn.Linear(3 * crop * crop, 2)), crop)
    handle = type(handle)(**{**handle.__dict__, "preprocess": type(handle.preprocess)(resize, crop, (0.5,) * 3,
                                                                                       (0.25,) * 3)})
    x0, y0, x1, y1 = crop_box(handle, w, h)
    reach = int(np.ceil(2 * max(w, h) / resize)) + 1  # bilinear support: 2 output px, in photo px, and rounding
    inside = rect_mask((h, w), [(int(x0) + reach, int(y0) + reach, int(x1) - reach, int(y1) - reach)])
    outside = ~rect_mask((h, w), [(int(x0) - reach, int(y0) - reach, int(np.ceil(x1)) + reach,
                                   int(np.ceil(y1)) + reach)])
    assert input_mask(outside, handle).max() == 0.0
    m = input_mask(inside, handle)
    k = int(np.ceil(2 * reach * resize / min(w, h))) + 1  # the reach in input px
    assert m[k:-k, k:-k].min() == 1.0
    if w != h:
        assert outside.any()  # the box is narrower than the photo: the test above is not empty


def test_input_rects_outline_the_input_mask():
    """The rectangles carried to the input cover the input pixels more than half painted, up to the pixels along
    their edges; rectangles the model does not see are dropped."""
    handle = make_handle(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)), 32)  # sees x 15.7…65.9 of 80
    rects = [(5, 5, 33, 19), (40, 21, 61, 45), (70, 30, 80, 50), (0, 0, 3, 3)]        # the last two: outside
    seen = input_mask(rect_mask((50, 80), rects), handle) > 0.5
    boxes = input_rects(handle, 80, 50, rects)
    assert len(boxes) == 2
    drawn = rect_mask((32, 32), [tuple(int(round(v)) for v in b) for b in boxes])
    edges = sum(2 * ((b[2] - b[0]) + (b[3] - b[1])) for b in boxes)
    assert seen.sum() > 100 and (drawn != seen).sum() <= edges


# ---- the edit's effect on a hand-set net -------------------------------------------------------------------------

def _red_net() -> nn.Module:
    """logit 0 = mean of the normalized red channel, logit 1 = 0: p0 = sigmoid(mean red)."""
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[0, 0] = 1.0
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin)


def _p0(img: np.ndarray) -> float:
    red = (img[..., 0].astype(np.float64) / 255.0 - 0.5) / 0.25
    return float(1.0 / (1.0 + np.exp(-red.mean())))


def test_edit_effect_against_the_formula():
    h = make_handle(_red_net(), 32)
    before = model_state(h.net)
    img = _photo(32, 32, 5)
    m = rect_mask((32, 32), [(0, 0, 16, 32)])
    edited = apply_edit(img, m, "grey", grey=(0, 0, 0))             # the left half black: the red mean drops
    maps = {"left": np.where(m, 1.0, 0.0), "everywhere": np.ones((32, 32)), "none": np.zeros((32, 32))}
    eff = edit_effect(h, Image.fromarray(img), Image.fromarray(edited), m, 0, maps)
    # float32: normalization (3 roundings per pixel), a mean of 1024 values |x| ≤ 2, softmax; sigmoid' ≤ 1/4
    tol = 0.25 * (gamma(1024 + 1) * 2 + 3 * U32 * 2) + 8 * U32
    assert eff.p_before == pytest.approx(_p0(img), abs=tol)
    assert eff.p_after == pytest.approx(_p0(edited), abs=tol)
    assert eff.change < 0 and eff.change == eff.p_after - eff.p_before
    assert eff.area_share == 0.5 and eff.label == "c0"
    assert eff.shares["left"].value == 1.0 and eff.shares["everywhere"].value == 0.5
    assert eff.shares["none"].value is None
    assert [c for c, _, _ in eff.top_before] == ([0, 1] if _p0(img) > 0.5 else [1, 0])
    assert len(eff.top_after) == 2 and eff.top_after[0][2] >= eff.top_after[1][2]
    assert_same_state(before, h.net)


def test_edit_outside_the_crop_changes_nothing_and_threads_agree():
    h = make_handle(_red_net(), 32)
    img = Image.fromarray(_photo(32, 64, 7))       # resize 32 → 32×64, centre crop keeps columns 16…47
    m = rect_mask((32, 64), [(0, 0, 16, 32)])      # painted where the model never looks
    edited = Image.fromarray(apply_edit(np.asarray(img), m, "grey", grey=(0, 0, 0)))
    eff = edit_effect(h, img, edited, m, 0)
    assert eff.p_after == eff.p_before and eff.area_share == 0.0
    m2 = rect_mask((32, 64), [(16, 0, 32, 32)])
    edited2 = Image.fromarray(apply_edit(np.asarray(img), m2, "grey", grey=(0, 0, 0)))
    solo = edit_effect(h, img, edited2, m2, 0).p_after
    out: dict[int, float] = {}

    def run(i):
        out[i] = edit_effect(h, img, edited2 if i % 2 else edited, m2 if i % 2 else m, 0).p_after

    ts = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(out[i] == (solo if i % 2 else eff.p_before) for i in range(6))


def test_mean_grey_is_the_colour_of_zero_input():
    h = make_handle(_red_net(), 32, mean=(0.485, 0.456, 0.406))
    assert mean_grey(h) == (124, 116, 104)


def test_edit_effect_checks_its_inputs():
    h = make_handle(_red_net(), 32)
    img = Image.fromarray(_photo(32, 32))
    with pytest.raises(InputError, match="mask"):
        edit_effect(h, img, img, np.ones((8, 8), bool), 0)
    with pytest.raises(InputError, match="out of range"):
        edit_effect(h, img, img, np.ones((32, 32), bool), 7)
