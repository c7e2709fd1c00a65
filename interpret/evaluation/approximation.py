"""How close an approximate map (coarse-to-fine occlusion) is to the exact one: the figures its defaults were chosen
on (``python -m bench.bench_speed``) and its tests check."""
from __future__ import annotations

import numpy as np

from interpret.evaluation.metrics import ssim


def quality(approx: np.ndarray, exact: np.ndarray) -> dict[str, float | bool]:
    """SSIM (maps min–max scaled, as ``metrics.ssim``), whether the maximum is at the same pixel ("same_argmax":
    any pixel of the exact maximum counts, for ties), the distance between the two maxima in pixels and the max
    error relative to the exact map's largest magnitude."""
    a = np.unravel_index(np.argmax(approx), approx.shape)
    e = np.unravel_index(np.argmax(exact), exact.shape)
    top = exact.max()
    return {"ssim": ssim(approx, exact),
            "same_argmax": bool(exact[a] >= top - 1e-6 * abs(top)),
            "argmax_dist": float(np.hypot(a[0] - e[0], a[1] - e[1])),
            "max_rel_err": float(np.abs(approx - exact).max() / max(np.abs(exact).max(), 1e-30))}
