"""Plotly figures for the unit views: filters, activation maps, receptive-field boxes and top patches
(synthesized images: ``interpret.plots.synthesis``). Pure plotly, no Streamlit: pages only display what these return. The caller computes what is
drawn (with ``interpret.units``) and passes it in; the units' result objects are taken duck-typed (each docstring
names the attributes used), so drawing never imports the computations.

Mosaics are drawn as one trace (one image or one heatmap with gaps) so that hundreds of filters or maps stay
fast in the browser; hover carries the index and values. Colour scales come from ``colour.colour_scale``:
weights and signed activations diverging around 0 (white), non-negative data sequential from 0 (black).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interpret.plots.colour import colour_scale, is_signed


def _u8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return (np.clip(img.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)


def _axes(fig: go.Figure, square: bool = True, background: str = "white") -> go.Figure:
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    if square:  # the plot area shrinks to the data (not the data range to the area): background only in gaps
        fig.update_yaxes(scaleanchor="x", scaleratio=1, constrain="domain")
        fig.update_xaxes(constrain="domain")
    fig.update_layout(margin=dict(l=0, r=0, t=30, b=0), plot_bgcolor=background)
    return fig


def _grid(n: int, cols: int | None) -> tuple[int, int]:
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    return cols, max(1, math.ceil(n / cols))


def mosaic(tiles: np.ndarray, cols: int | None = None, gap: int = 1, fill: float = np.nan
           ) -> tuple[np.ndarray, np.ndarray]:
    """Tile (n, h, w[, c]) into one array; also an int map (same H×W) of the tile index at each pixel (−1 in
    gaps) — used for hover text and to turn a clicked pixel back into (tile, i, j)."""
    n, h, w = tiles.shape[:3]
    cols, rows = _grid(n, cols)
    H, W = rows * (h + gap) - gap, cols * (w + gap) - gap
    out = np.full((H, W) + tiles.shape[3:], fill, dtype=np.float32 if np.isnan(fill) else tiles.dtype)
    index = np.full((H, W), -1, dtype=np.int64)
    for t in range(n):
        r, c = divmod(t, cols)
        y, x = r * (h + gap), c * (w + gap)
        out[y:y + h, x:x + w] = tiles[t]
        index[y:y + h, x:x + w] = t
    return out, index


def grid_cell(meta: dict[str, Any], x: float, y: float) -> tuple[int, int, int] | None:
    """(channel, i, j) under mosaic pixel (x, y) of a figure from ``activation_grid_figure`` (its
    ``layout.meta``), or None in a gap — for turning a click into a unit."""
    h, w, gap, cols = meta["tile"][0], meta["tile"][1], meta["gap"], meta["cols"]
    xi, yi = int(round(x)), int(round(y))
    r, i = divmod(yi, h + gap)
    c, j = divmod(xi, w + gap)
    t = r * cols + c
    if i >= h or j >= w or c >= cols or not 0 <= t < len(meta["order"]) or xi < 0 or yi < 0:
        return None
    return (int(meta["order"][t]), i, j)


# ---- filters ----------------------------------------------------------------------------------------------

def filters_figure(images, bank=None, cols: int | None = None, title: str = "") -> go.Figure:
    """First-layer filters as one colour mosaic; hover: filter index and stats.

    ``images``: the filter images (``units.filters.rgb_filters``; uses ``.images`` (n, kh, kw, 3) and ``.mode``);
    ``bank``: optionally the layer's weights (uses ``.stats()``: per-filter mean, std, min, max, norm)."""
    tiles = images.images
    mos, index = mosaic(_u8(tiles), cols, gap=1, fill=255)
    stats = bank.stats() if bank is not None else None
    labels = []
    for t in range(len(tiles)):
        s = f"filter {t}"
        if stats is not None:
            s += (f"<br>mean {stats['mean'][t]:.3g} · std {stats['std'][t]:.3g}<br>min {stats['min'][t]:.3g} · "
                  f"max {stats['max'][t]:.3g} · ‖w‖ {stats['norm'][t]:.3g}")
        labels.append(s)
    hover = np.where(index >= 0, np.array(labels + [""], dtype=object)[index], "")
    fig = go.Figure(go.Image(z=mos, hovertext=hover.tolist(), hoverinfo="text"))
    fig.update_layout(title=title or f"{len(tiles)} filters, {tiles.shape[1]}×{tiles.shape[2]}×3 "
                                      f"({images.mode} normalization per filter)")
    return _axes(fig)


def _relative(images) -> np.ndarray:
    """Normalized filter images (``.weights()``, ``.lo``, ``.hi``) → weight / max |weight| of its normalization
    group: in [-1, 1] with the true zero at 0, whatever the normalization mode."""
    w = images.weights()
    m = np.maximum(np.abs(images.lo), np.abs(images.hi)).reshape((-1,) + (1,) * (w.ndim - 1))
    return (w / np.where(m > 0, m, 1.0)).astype(np.float32)


def _kernel_heatmap(tiles: np.ndarray, labels: list[str], values: np.ndarray, cols: int | None,
                    title: str) -> go.Figure:
    """Kernels (n, kh, kw) as one mosaic; ``tiles`` are the weights relative to their group (±1 = the largest
    |w|), drawn on the diverging scale (weights are signed); hover shows the raw weight."""
    mos, index = mosaic(tiles.astype(np.float32), cols)
    vals, _ = mosaic(values.astype(np.float32), cols)
    hover = np.where(index >= 0, np.array(labels + [""], dtype=object)[index], "")
    vtext = np.where(np.isnan(vals), "", np.char.mod("<br>w = %.4g", np.nan_to_num(vals)))
    text = np.char.add(hover.astype(str), vtext)
    scale = colour_scale(mos, declared=True, limit=1.0)
    fig = go.Figure(go.Heatmap(z=mos, **scale.heatmap(), text=text, hoverinfo="text", showscale=False))
    fig.update_layout(title=title)
    return _axes(fig, background=scale.gap_colour)


def kernel_grid_figure(kernels, bank, out_index: int, cols: int | None = None) -> go.Figure:
    """One deeper filter as its per-input-channel k×k kernels (diverging: white = 0, blue < 0, red > 0).

    ``kernels``: that filter's kernel images, ``units.filters.kernel_grid(bank, out_index, "symmetric")`` (uses
    ``.weights()``, ``.lo``, ``.hi``, ``.mode``); ``bank``: the layer's weights (uses ``.layer``, ``.kernel``,
    ``.weight`` (out, in/groups, kh, kw) and ``.input_channels_of(out_index)``)."""
    chans = bank.input_channels_of(out_index)
    labels = [f"filter {out_index} · input channel {int(c)}" for c in chans]
    return _kernel_heatmap(_relative(kernels), labels, bank.weight[out_index], cols,
                           f"{bank.layer}: filter {out_index}, {len(chans)} input channels × "
                           f"{bank.kernel[0]}×{bank.kernel[1]} ({kernels.mode} normalization)")


def depthwise_figure(kernels, bank, cols: int | None = None) -> go.Figure:
    """A depthwise layer: one k×k kernel per channel, each normalized symmetrically.

    ``kernels``: ``units.filters.depthwise_kernels(bank, "symmetric")`` (uses ``.images``, ``.weights()``,
    ``.lo``, ``.hi``); ``bank``: the layer's weights (uses ``.layer``, ``.kernel`` and ``.weight``)."""
    labels = [f"channel {t}" for t in range(len(kernels.images))]
    return _kernel_heatmap(_relative(kernels), labels, bank.weight[:, 0], cols,
                           f"{bank.layer}: depthwise, one {bank.kernel[0]}×{bank.kernel[1]} kernel per channel")


def filter_norms_figure(norms: np.ndarray, layer: str) -> go.Figure:
    """‖w[o, i]‖ (``units.filters.filter_norms``, out × in/groups) of conv layer ``layer`` as a heatmap: which
    input channels each filter listens to."""
    n = np.asarray(norms)
    fig = go.Figure(go.Heatmap(z=n, **colour_scale(n).heatmap(), colorbar=dict(title="‖w‖"),
                               hovertemplate="filter %{y} · input %{x}<br>‖w‖ = %{z:.4g}<extra></extra>"))
    fig.update_layout(title=f"{layer}: kernel norms (filters × input channels per group)",
                      xaxis_title="input channel (within group)", yaxis_title="filter",
                      margin=dict(l=40, r=10, t=30, b=40))
    fig.update_yaxes(autorange="reversed")
    return fig


# ---- activations -----------------------------------------------------------------------------------------

def activation_grid_figure(acts, order: Sequence[int] | None = None, max_maps: int = 64, cols: int | None = None,
                           per_map: bool = True) -> go.Figure:
    """Feature maps as one heatmap mosaic in ``order`` (default by max), first ``max_maps`` of them.

    ``per_map`` divides each map by its own largest |activation| (structure visible in weak channels; 0 stays
    0); otherwise all maps share the layer's range. The scale is diverging when the layer has negative values,
    sequential from 0 otherwise (``colour.colour_scale``). Hover shows the raw value, channel and unit.
    ``fig.layout.meta`` holds what ``grid_cell`` needs to map a click to a unit. ``acts``: one layer's maps
    (``units.activations.layer_activations``; uses ``.maps`` (C, h, w), ``.order(by)``, ``.layer``, ``.channels``)."""
    order = np.asarray(acts.order("max") if order is None else order)[:max_maps]
    maps = acts.maps[order].astype(np.float32)
    signed = is_signed(acts.maps)
    shown = maps
    if per_map:
        peak = np.abs(maps).reshape(len(order), -1).max(1)[:, None, None]
        shown = maps / np.where(peak > 0, peak, 1.0)
    scale = colour_scale(shown, signed, 1.0 if per_map else None)
    h, w = maps.shape[1:]
    cols_used, _ = _grid(len(order), cols)
    z, index = mosaic(shown, cols)
    raw, _ = mosaic(maps, cols)
    ii, jj = np.indices(index.shape)
    ch = np.where(index >= 0, order[np.maximum(index, 0)], -1)
    cd = np.stack([ch, ii % (h + 1), jj % (w + 1), np.nan_to_num(raw)], -1)
    fig = go.Figure(go.Heatmap(z=z, customdata=cd, **scale.heatmap(), showscale=not per_map,
                               hovertemplate="channel %{customdata[0]} · unit (%{customdata[1]}, %{customdata[2]})"
                                             "<br>activation %{customdata[3]:.4g}<extra></extra>"))
    fig.update_layout(title=f"{acts.layer}: {len(order)} of {acts.channels} maps ({h}×{w})",
                      meta={"order": [int(o) for o in order], "cols": cols_used, "tile": [h, w], "gap": 1})
    _axes(fig, background=scale.gap_colour)
    # the mosaic's own extent: an overlay (the page's click layer of markers) must not pad the range with
    # background that is not a gap
    fig.update_xaxes(range=[-0.5, z.shape[1] - 0.5])
    fig.update_yaxes(range=[z.shape[0] - 0.5, -0.5], autorange=False)
    return fig


def channel_map_figure(acts, channel: int, unit: tuple[int, int] | None = None) -> go.Figure:
    """One feature map, hover = value; the chosen unit marked. Diverging when the layer has negative values
    (as in the grid), sequential from 0 otherwise; the range is this map's largest |activation|. ``acts`` as in
    ``activation_grid_figure`` (uses ``.maps`` and ``.layer``)."""
    m = acts.maps[channel]
    fig = go.Figure(go.Heatmap(z=m, **colour_scale(m, is_signed(acts.maps)).heatmap(),
                               hovertemplate="unit (%{y}, %{x})<br>activation %{z:.4g}<extra></extra>"))
    if unit is not None:
        fig.add_shape(type="rect", x0=unit[1] - 0.5, x1=unit[1] + 0.5, y0=unit[0] - 0.5, y1=unit[0] + 0.5,
                      line=dict(color="lime", width=2))  # apart from both scales' colours
    fig.update_layout(title=f"{acts.layer} · channel {channel}")
    return _axes(fig)


def image_box_figure(image: np.ndarray, box: tuple[int, int, int, int] | None = None,
                     footprint: np.ndarray | None = None, title: str = "") -> go.Figure:
    """The input image with a unit's receptive-field box (half-open y0, x0, y1, x1) and, optionally, the
    gradient footprint (boolean H×W) tinted on top."""
    img = _u8(image)
    fig = go.Figure(go.Image(z=img, hovertemplate="x %{x}, y %{y}<extra></extra>"))
    if footprint is not None:
        z = np.where(footprint, 1.0, np.nan)
        fig.add_trace(go.Heatmap(z=z, colorscale=[[0, "rgba(255,0,255,0.35)"], [1, "rgba(255,0,255,0.35)"]],
                                 showscale=False, hoverinfo="skip"))
    if box is not None:
        y0, x0, y1, x1 = box
        fig.add_shape(type="rect", x0=x0 - 0.5, x1=x1 - 0.5, y0=y0 - 0.5, y1=y1 - 0.5,
                      line=dict(color="yellow", width=2))
    fig.update_layout(title=title)
    return _axes(fig)


def rf_growth_figure(table) -> go.Figure:
    """Receptive-field size r and effective stride S along the network (log scale). ``table``: the layers'
    geometry (``units.receptive_field.rf_table``; uses ``.input_size`` and ``.rows``, each with ``.name``,
    ``.call``, ``.r`` and ``.S``)."""
    rows = table.rows
    x = [r.name if r.call == 0 else f"{r.name}#{r.call}" for r in rows]
    fig = go.Figure([go.Scatter(x=x, y=[r.r[0] for r in rows], name="r (size)", mode="lines+markers"),
                     go.Scatter(x=x, y=[r.S[0] for r in rows], name="S (stride)", mode="lines")])
    # An annotation on a log axis takes log10(y) (a shape takes y itself): passing y through add_hline's
    # annotation_text put the label at 10^224 and stretched the axis to match.
    fig.add_hline(y=table.input_size[0], line_dash="dot")
    fig.add_annotation(x=1, xref="paper", xanchor="right", y=math.log10(table.input_size[0]), yanchor="bottom",
                       text="input size", showarrow=False)
    fig.update_layout(yaxis_type="log", title="receptive field along the network", xaxis_showticklabels=False,
                      margin=dict(l=40, r=10, t=30, b=10))
    return fig


# ---- top patches -----------------------------------------------------------------------------------------

TOP_PATCH_TITLE_PX = 34  # band for the figure title, above the 24 px of value labels


def top_patches_figure(result, channel: int, cols: int | None = None, images: Sequence[np.ndarray] | None = None,
                       width: int = 900) -> go.Figure:
    """The top-k patches of one channel, best first; each titled with its value and hovering its image. The
    height fits rows of square cells for a figure about ``width`` px wide, so values sit on their patches.

    ``result``: a top-patches scan (uses ``.patches`` {channel: [patch]}, each patch with ``.value``, ``.patch``,
    ``.image_name``, ``.unit``, ``.box``; and ``.layer``, ``.n_images``). ``images``: what to draw for each of
    the channel's patches, in order (e.g. ``units.top_patches.padded_patch`` of each, aligned in its receptive
    field); default each patch's own crop."""
    items = result.patches.get(channel, [])
    n = max(len(items), 1)
    cols, rows = _grid(n, cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{p.value:.3g}" for p in items],
                        horizontal_spacing=0.01, vertical_spacing=0.06)
    for t, p in enumerate(items):
        img = p.patch if images is None else images[t]
        fig.add_trace(go.Image(z=img, hovertemplate=f"{p.image_name}<br>unit {p.unit} · box {p.box}"
                                                    f"<br>activation {p.value:.4g}<extra></extra>"),
                      row=t // cols + 1, col=t % cols + 1)
    _axes(fig)
    # The value labels are subplot titles just above the images; the figure title gets its own band above
    # them (pinned to the top of the figure) instead of the middle of a 30 px margin, where it sat on them.
    fig.update_layout(title=dict(text=f"{result.layer} · channel {channel}: top {len(items)} of "
                                      f"{result.n_images} images", x=0.01, xanchor="left", y=1, yref="container",
                                 yanchor="top", pad=dict(t=6)),
                      margin=dict(l=0, r=0, t=TOP_PATCH_TITLE_PX + 24, b=0),
                      height=int(TOP_PATCH_TITLE_PX + 24 + rows * (width / cols + 30)))
    return fig
