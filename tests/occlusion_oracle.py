"""The occlusion definition evaluated exactly (float64, direct loops), with bounds on how far any float32 evaluation
of it can be (tests/roundoff.py): the oracle for every occlusion engine's tests."""
from __future__ import annotations

import math

import numpy as np
import torch

from interpret.engines.windows import baseline_image, window_grid
from roundoff import U32, U64, gamma, rounding_bound, softmax_rounding


def _window_mean(grid, per_window: np.ndarray) -> np.ndarray:
    """Each pixel's mean over the windows covering it, by a direct loop in float64 (independent of ``aggregate``)."""
    wh, ww = grid.window
    total = np.zeros(per_window.shape[:-2] + (grid.height, grid.width))
    count = np.zeros((grid.height, grid.width))
    for i, r in enumerate(grid.rows):
        for j, c in enumerate(grid.cols):
            total[..., r:r + wh, c:c + ww] += per_window[..., i, j, None, None]
            count[r:r + wh, c:c + ww] += 1
    return total / count


def exact_occlusion(net, x, targets, window, stride, baseline="zero", dtype=torch.float64, probs: bool = True,
                    u: float = U32, u_fold: float | None = None) -> dict:
    """The occlusion definition evaluated exactly (float64 copy of the net, direct loops), and how far ANY float32
    evaluation of it may be (tests/roundoff.py): per window the bounds of the two logits (the image's and the
    occluded one's) averaged like the drops, plus the final rounding of the map to float32 (u·|map|) and the
    float64 steps of our path (subtraction, aggregation: γ₆₄ of the logits). ``captum`` adds captum's float32
    steps: the difference (u) and its per-pixel sum over at most K windows and the division (γ_{K+1}).
    With ``dtype=float32`` only the bounds are meaningful (they are several times cheaper to get); ``probs=False``
    leaves out the probability map (one backward pass less). ``u``, ``u_fold``: the unit roundoff of the evaluation
    bounded (``rounding_bound``; float64 arithmetic on weights folded in float32: ``u=U64, u_fold=U32``); the final
    rounding of the map to float32 is counted whatever ``u`` is."""
    grid = window_grid(x.shape[2], x.shape[3], window, stride)
    base = baseline_image(x, baseline)
    wh, ww = grid.window
    imgs = [x]
    for r in grid.rows:
        for c in grid.cols:
            y = x.clone()
            y[:, :, r:r + wh, c:c + ww] = base[:, :, r:r + wh, c:c + ww]
            imgs.append(y)
    targets = list(targets)
    b = rounding_bound(net, torch.cat(imgs), lambda z: torch.cat(
        [z[:, targets]] + ([torch.softmax(z, 1)[:, targets]] if probs else []), 1), u=u, dtype=dtype, u_fold=u_fold)
    nt, shape = len(targets), (len(targets),) + grid.shape
    logit, prob = b.value[:, :nt].T, b.value[:, nt:].T
    lb, pb = b.bound[:, :nt].T, b.bound[:, nt:].T
    if probs:
        pb = pb + np.stack([softmax_rounding(b.logits, t, u) for t in targets])
    k = int(math.ceil(wh / grid.stride[0]) * math.ceil(ww / grid.stride[1]))  # windows covering one pixel, at most
    out = {}
    for name, v, e in (("map", logit, lb), ("prob", prob, pb))[:2 if probs else 1]:
        drops = (v[:, :1] - v[:, 1:]).reshape(shape)
        mean = _window_mean(grid, drops)
        size = _window_mean(grid, (np.abs(v[:, :1]) + np.abs(v[:, 1:])).reshape(shape))
        out[name] = mean
        out[name + "_bound"] = _window_mean(grid, (e[:, :1] + e[:, 1:]).reshape(shape)) + U32 * np.abs(mean) \
            + gamma(grid.shape[0] + grid.shape[1] + 4, U64) * size
        out[name + "_captum"] = gamma(k + 2, u) * size
    return out


def assert_within(got, want, bound, room: float = 0.05) -> None:
    """|got − want| ≤ bound elementwise, and the bound is below ``room`` × the largest value compared, so that
    any error larger than that fails the test."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.all(bound < room * np.abs(want).max()), "the rounding bound leaves nothing to test"
    excess = np.abs(got - want) - bound
    assert excess.max() <= 0, f"off by up to {np.abs(got - want).max():.3g}, bound {bound.max():.3g}"
