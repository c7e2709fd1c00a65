"""Plotly figures for attribution results (pure plotly: the pages only display them).

Colour scales come from ``colour.colour_scale`` (signed data: diverging, centred at 0, symmetric range;
non-negative data: sequential from 0); every heatmap hovers its value. Backprop-style per-channel gradients
are shown as colour images with grey = 0. Method names come in as ``method_label`` / ``method_labels`` (the
caller looks them up in the method registry), falling back to the method key: drawing never imports the methods.
"""
from __future__ import annotations

import math
import textwrap
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interpret.core.result import Attribution
from interpret.plots.colour import ColourScale, colour_scale, is_signed


def _u8(image: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)


def _coords(n_map: int, n_img: int) -> np.ndarray:
    """Pixel-centre coordinates of a map with n_map cells stretched over n_img image pixels."""
    step = n_img / n_map
    return (np.arange(n_map) + 0.5) * step - 0.5


ROBUST_PERCENTILE = 99.5  # colour range = this percentile of |map|: one hot pixel must not wash out the rest


def robust_max(m: np.ndarray, percentile: float = ROBUST_PERCENTILE) -> float:
    """The percentile of |m| (falls back to max |m|, then 1, so it is never 0)."""
    a = np.abs(np.asarray(m, dtype=np.float64))
    v = float(np.percentile(a, percentile)) if a.size else 0.0
    return v if v > 0 else (float(a.max()) if a.size and a.max() > 0 else 1.0)


def _zmax(attr: Attribution, zmax: float | None) -> float:
    return float(zmax) if zmax is not None else robust_max(attr.map)


def _heatmap(image: np.ndarray, z: np.ndarray, signed: bool, zmax: float, opacity: float, raw: np.ndarray,
             **kw) -> go.Heatmap:
    h, w = image.shape[:2]
    scale = {} if "coloraxis" in kw else colour_scale(z, signed, zmax).heatmap()
    return go.Heatmap(z=z, x=_coords(z.shape[1], w), y=_coords(z.shape[0], h), opacity=opacity,
                      customdata=raw, hovertemplate="x %{x:.0f}, y %{y:.0f}<br>value %{customdata:.4g}"
                      "<extra></extra>", **scale, **kw)


def _square(fig: go.Figure, row: int | None = None, col: int | None = None) -> None:
    sel = {} if row is None else dict(row=row, col=col)
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, **sel)
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, autorange="reversed", **sel)


def class_title(target: int, label: str | None = None) -> str:
    """How a figure names its class: the label (with the index, which labels may repeat), never the bare index
    unless no label is known."""
    return f"{label} (#{int(target)})" if label else f"class {int(target)}"


def overlay_figure(image: np.ndarray, attr: Attribution, opacity: float = 0.5, zmax: float | None = None,
                   label: str | None = None, height: int | None = None, *,
                   method_label: str | None = None) -> go.Figure:
    """The map over the image (H×W×3 in [0, 1]); diverging scale centred at 0 for signed maps, sequential for
    unsigned. Colour range ±zmax (default: 99.5th percentile of |map|); hover shows the raw value. Titled with
    ``method_label`` (default ``attr.method``) and the class ``label`` (pass ``handle.labels[attr.target]``)."""
    fig = go.Figure(go.Image(z=_u8(image), hoverinfo="skip"))
    zm = _zmax(attr, zmax)
    fig.add_trace(_heatmap(image, attr.map, is_signed(attr.map, attr.signed), zm, opacity, attr.map,
                           colorbar=dict(title="attribution")))
    _square(fig)
    fig.update_yaxes(scaleanchor="x")
    fig.update_layout(title=f"{method_label or attr.method} · {class_title(attr.target, label)}",
                      margin=dict(l=10, r=10, t=40, b=10), height=height)
    return fig


# What the colour image beside a map shows, per method (``extra["rgb"]``): the signed value per colour channel.
RGB_TITLES = {
    "saliency": "Gradient per colour channel",
    "gradient": "Gradient per colour channel",
    "backprop": "Gradient per colour channel",
    "grad_x_input": "Gradient × input per colour channel",
    "guided_backprop": "Guided backprop per colour channel",
    "deconvnet": "Deconvnet signal per colour channel",
    "guided_gradcam": "Guided backprop × Grad-CAM per colour channel",
    "smoothgrad": "Mean gradient over noisy copies, per colour channel",
    "integrated_gradients": "Integrated gradients per colour channel:<br>(input − baseline) × mean gradient on "
                            "the path",
}


def rgb_title(method: str, label: str | None = None, target: int | None = None, *,
              method_label: str | None = None) -> str:
    """The title of a method's per-channel colour image (grey = 0), with the class when given; a method without
    an entry in ``RGB_TITLES`` is named by ``method_label`` (default ``method``)."""
    title = RGB_TITLES.get(method, f"{method_label or method} per colour channel")
    return title + (f"<br>{class_title(target, label)} · grey = 0" if target is not None else "<br>grey = 0")


def rgb_image(arr: np.ndarray, clip_percentile: float = 99.5) -> np.ndarray:
    """Signed H×W×3 gradient → displayable H×W×3 in [0, 1]: 0.5 + 0.5·v / p, p the percentile of |v|."""
    arr = np.asarray(arr, dtype=np.float32)
    p = robust_max(arr, clip_percentile)
    return np.clip(0.5 + 0.5 * arr / p, 0, 1)


def rgb_figure(arr: np.ndarray, title: str = "") -> go.Figure:
    """A per-channel map (backprop, guided backprop, deconvnet) as a colour image; grey means 0."""
    fig = go.Figure(go.Image(z=_u8(rgb_image(arr)),
                             hovertemplate="x %{x}, y %{y}<extra></extra>"))
    _square(fig)
    fig.update_yaxes(scaleanchor="x")
    lines = title.count("<br>") + 1 if title else 0
    # a title of several lines is pinned to the top with a band of 1.4 em per line above the image
    fig.update_layout(title=dict(text=title, x=0.5, xanchor="center", y=1, yref="container", yanchor="top",
                                 pad=dict(t=8), font=dict(size=15)) if title else None,
                      margin=dict(l=10, r=10, t=16 + 22 * lines if title else 10, b=10))
    return fig


TITLE_CHARS = 18   # longest line of a grid subplot title: 18 characters of 13 px ≈ 130 px, under a 150 px column
TITLE_FONT = 13    # px
TITLE_LINE = 17    # px per title line


def _wrap_title(text: str, width: int = TITLE_CHARS) -> list[str]:
    """A method label as lines of at most ``width`` characters, breaking before a parenthesis first."""
    head, sep, tail = text.partition(" (")
    parts = [head] + ([f"({tail}"] if sep else [])
    return [line for part in parts for line in (textwrap.wrap(part, width) or [part])]


def grid_title(attr: Attribution, *, method_label: str | None = None) -> str:
    """A subplot title: the method (``method_label``, default ``attr.method``) on short lines, then its compute
    time (so neighbours never run together)."""
    return "<br>".join(_wrap_title(method_label or attr.method) + [f"{attr.seconds:.2f} s"])


def grid_figure(image: np.ndarray, attrs: Sequence[Attribution], common_norm: bool = True, cols: int = 4,
                opacity: float = 0.6, label: str | None = None, cell: int = 240, *,
                method_labels: Mapping[str, str] | None = None) -> go.Figure:
    """Every map over the image in one grid, each titled with its method (``method_labels[attr.method]``,
    default the key) and compute time (wrapped to short lines, with room reserved above each row), the whole
    titled with the class ``label``.

    common_norm: each map is divided by its own robust max (99.5th percentile of |value|, then clipped) so all
    share one scale (signed maps on [-1, 1], unsigned on [0, 1], one colour bar each); hover shows raw values.
    Otherwise each subplot keeps its own raw range and no colour bar is drawn."""
    n = max(1, len(attrs))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    labels = method_labels or {}
    titles = [grid_title(a, method_label=labels.get(a.method)) for a in attrs]
    band = TITLE_LINE * max([t.count("<br>") + 1 for t in titles] or [1]) + 6   # px above each row
    top = band + (36 if attrs else 0)
    plot_h = rows * cell + (rows - 1) * band
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.03,
                        vertical_spacing=band / plot_h if rows > 1 else 0.0)
    fig.update_annotations(font_size=TITLE_FONT)
    for i, a in enumerate(attrs):
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Image(z=_u8(image), hoverinfo="skip"), row=r, col=c)
        signed = is_signed(a.map, a.signed)
        if common_norm:
            m = robust_max(a.map)
            fig.add_trace(_heatmap(image, np.clip(a.map / m, -1, 1), signed, 1.0, opacity, a.map,
                                   coloraxis="coloraxis" if signed else "coloraxis2"), row=r, col=c)
        else:
            fig.add_trace(_heatmap(image, a.map, signed, _zmax(a, None), opacity, a.map, showscale=False),
                          row=r, col=c)
        _square(fig, r, c)
    for i in range(len(attrs)):
        suffix = "" if i == 0 else str(i + 1)
        fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"
    if common_norm:
        fig.update_layout(
            coloraxis=dict(**ColourScale(True, 1.0).axis(),
                           colorbar=dict(title="signed", x=1.02, len=0.45, y=0.75)),
            coloraxis2=dict(**ColourScale(False, 1.0).axis(),
                            colorbar=dict(title="unsigned", x=1.02, len=0.45, y=0.25)))
    if attrs:
        target = attrs[0].target
        fig.update_layout(title=dict(text=f"Attribution maps for {class_title(target, label)}", x=0.01,
                                     xanchor="left", y=1, yref="container", yanchor="top", pad=dict(t=8)))
    fig.update_layout(height=plot_h + top + 10, margin=dict(l=10, r=10, t=top, b=10))
    return fig


def topk_figure(items: Sequence[tuple[int, str, float]]) -> go.Figure:
    """Horizontal bars of the top-k class probabilities, most probable on top."""
    labels = [f"{lbl} ({idx})" for idx, lbl, _ in items]
    probs = [float(p) for _, _, p in items]
    fig = go.Figure(go.Bar(x=probs, y=labels, orientation="h", text=[f"{p:.1%}" for p in probs],
                           textposition="auto", hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title="probability")
    fig.update_layout(height=60 + 32 * max(1, len(items)), margin=dict(l=10, r=10, t=10, b=40))
    return fig


bar_figure = topk_figure


def scored_windows_figure(attr: Attribution) -> go.Figure:
    """Approximate occlusion: the drop of every patch position, measured ones as filled squares and interpolated
    ones as open circles (hover: position and drop), so a user sees where the refinement spent its forward passes."""
    drops = np.asarray(attr.extra["logit_drops"], dtype=np.float64)
    scored = np.asarray(attr.extra["scored"], dtype=bool)
    rows, cols = attr.extra["grid"]
    yy, xx = np.meshgrid(np.asarray(rows), np.asarray(cols), indexing="ij")
    scale = colour_scale(drops, attr.signed).axis()
    fig = go.Figure()
    for mask, name, symbol in ((scored, "scored", "square"), (~scored, "interpolated", "circle-open")):
        fig.add_trace(go.Scatter(
            x=xx[mask], y=yy[mask], mode="markers", name=f"{name} ({int(mask.sum())})",
            marker=dict(symbol=symbol, size=9, color=drops[mask], **scale,
                        line=dict(width=1.5) if symbol.endswith("open") else None,
                        colorbar=dict(title="drop") if name == "scored" else None),
            customdata=drops[mask], hovertemplate="top-left (%{y}, %{x})<br>drop %{customdata:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", title="row of the patch")
    fig.update_xaxes(title="column of the patch")
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h"),
                      title="Patch positions: measured vs interpolated")
    return fig

