"""Figures for a synthesis result (``interpret.units.synthesis.render.Synthesis``): the batch as a row of images,
titled with what each image maximises, and the objective's curve (total and each term) over the steps.

Pure plotly; reads only ``images``, ``history``, ``terms`` and, for the titles, ``objective`` and ``settings``."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["image_titles", "batch_row_figure", "objective_curve_figure", "synthesis_figure"]


def _u8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return (np.clip(img.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)


def image_titles(result, titles: Sequence[str] | None = None) -> list[str]:
    """One title per image: ``titles`` when given, else the objective's description (class names, not indices,
    come from the core's ``describe(labels)``), numbered when the batch holds several images."""
    n = len(result.images)
    if titles is not None:
        if len(titles) != n:
            raise ValueError(f"{len(titles)} titles for {n} images")
        return [str(t) for t in titles]
    what = str(getattr(result, "objective", "") or "synthesized image")
    return [what] if n == 1 else [f"image {i}: {what}" for i in range(n)]


def _wrap(text: str, width: int) -> str:
    """Break a long title at spaces so it fits over its image (plotly titles do not wrap)."""
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    lines.append(cur)
    return "<br>".join(lines[:3])


def batch_row_figure(result, titles: Sequence[str] | None = None, height: int = 300) -> go.Figure:
    """The images of the batch side by side (one RGB panel each, no axes), each titled with what it maximises."""
    images = np.asarray(result.images)
    n = len(images)
    names = image_titles(result, titles)
    width = max(14, 60 // max(n, 1))
    fig = make_subplots(rows=1, cols=n, subplot_titles=[_wrap(t, width) for t in names],
                        horizontal_spacing=0.02 if n > 1 else 0.0)
    for i, img in enumerate(images):
        fig.add_trace(go.Image(z=_u8(img), name=names[i]), row=1, col=i + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    for i in range(1, n + 1):
        fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", row=1, col=i)
    fig.update_annotations(font_size=14)
    fig.update_layout(height=height, showlegend=False, margin=dict(l=0, r=0, t=60, b=0))
    return fig


def objective_curve_figure(result, height: int = 340) -> go.Figure:
    """The objective per step: the total (thick) and each weighted term's own value (thin) when there are
    several terms; x is the step (1-based), y the value (maximised)."""
    history = list(result.history)
    steps = list(range(1, len(history) + 1))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=history, mode="lines", name="total objective", line=dict(width=3)))
    terms = dict(getattr(result, "terms", {}) or {})
    if len(terms) > 1:
        for name, values in terms.items():
            fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=list(values), mode="lines",
                                     name=f"term: {name}", line=dict(width=1.5)))
    fig.update_xaxes(title="step", automargin=True)
    fig.update_yaxes(title="objective value (maximised)", automargin=True)
    fig.update_layout(title=f"Objective over {len(history)} steps", height=height, font_size=14,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
                      margin=dict(l=80, r=10, t=80, b=50))
    return fig


def synthesis_figure(result) -> go.Figure:
    """The first image next to the objective's curve (total and terms): a compact view of one result (the
    classroom walk-through's)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5],
                        subplot_titles=(_wrap(image_titles(result)[0], 40), "objective over the steps"))
    fig.add_trace(go.Image(z=_u8(np.asarray(result.images)[0]), name="image"), row=1, col=1)
    history = list(result.history)
    fig.add_trace(go.Scatter(x=list(range(1, len(history) + 1)), y=history, mode="lines", name="total objective",
                             line=dict(width=3)), row=1, col=2)
    terms = dict(getattr(result, "terms", {}) or {})
    if len(terms) > 1:
        for name, values in terms.items():
            fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=list(values), mode="lines",
                                     name=f"term: {name}"), row=1, col=2)
    fig.update_xaxes(visible=False, row=1, col=1)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", row=1, col=1)
    fig.update_xaxes(title="step", row=1, col=2)
    fig.update_yaxes(title="objective value", row=1, col=2)
    fig.update_layout(showlegend=len(terms) > 1, margin=dict(l=0, r=10, t=40, b=30), font_size=13)
    return fig
