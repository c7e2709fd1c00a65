"""Figures and images for the details of a result beyond its map: LIME's superpixels and weights, and the stability
of an adaptive sampler. Pure functions of arrays (the page passes the entries its method's details view names)."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from skimage.segmentation import mark_boundaries

FOR_CLASS = "#b2182b"      # bar colour of a superpixel that speaks for the class
AGAINST_CLASS = "#2166ac"  # ... and against it
AGAINST_TINT = np.array([0.2, 0.3, 1.0])  # the blue that marks superpixels against the class in the image
DIMMED = 0.35              # grey level of the superpixels that are not among the top ones


def segment_boundaries(image: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """The image (H×W×3 in [0, 1]) with the superpixel borders drawn in yellow."""
    return mark_boundaries(image, segments, color=(1, 1, 0))


def top_superpixels_image(image: np.ndarray, segments: np.ndarray, positive: Iterable[int],
                          negative: Iterable[int]) -> np.ndarray:
    """The ``positive`` superpixels as they are, the ``negative`` ones tinted blue, the rest dimmed to grey."""
    show = np.full_like(image, DIMMED)
    for s in positive:
        show[segments == s] = image[segments == s]
    for s in negative:
        show[segments == s] = 0.5 * image[segments == s] + 0.5 * AGAINST_TINT
    return np.clip(show, 0, 1)


def superpixel_weights_figure(weights: Mapping[int, float], top: int = 20) -> go.Figure:
    """Horizontal bars of the ``top`` largest |weight| superpixels, the strongest on top; red for the class, blue
    against it."""
    items = sorted(weights.items(), key=lambda kv: -abs(kv[1]))[:top][::-1]
    fig = go.Figure(go.Bar(x=[w for _, w in items], y=[f"superpixel {k}" for k, _ in items], orientation="h",
                           marker_color=[FOR_CLASS if w > 0 else AGAINST_CLASS for _, w in items]))
    fig.update_layout(height=40 + 18 * len(items), margin=dict(l=10, r=10, t=30, b=10),
                      title="Per-superpixel weights (largest |w|)")
    return fig


def stability_figure(history: Sequence[tuple[int, float]]) -> go.Figure:
    """The overlap of the top-5 superpixels with the previous check, per check (samples drawn so far on x)."""
    fig = go.Figure(go.Scatter(x=[n for n, _ in history], y=[o for _, o in history], mode="lines+markers"))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=30, b=10), title="Top-5 overlap per check",
                      xaxis_title="samples", yaxis=dict(range=[0, 1.05], title="overlap"))
    return fig
