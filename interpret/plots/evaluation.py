"""Plotly figures of the evaluations: the model-randomisation sanity check's similarity curves and the trust summary's
agreement matrix.

The result is taken duck-typed (``interpret.evaluation.sanity.SanityResult`` or anything with its attributes) and
method names come in as ``method_labels``, so drawing imports neither the evaluation nor the methods.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from interpret.plots.colour import colour_scale


def rank_corr_figure(res, method_labels: Mapping[str, str] | None = None, class_name: str | None = None
                     ) -> go.Figure:
    """Spearman ρ of each method's |map| to the original after each cascade step, on ρ's whole range [−1, 1].

    ``res`` uses ``.steps`` (step names, "none" first), ``.methods``, and per method ``.rank_corr[m]`` (ρ per
    step), ``.degenerate[m]`` (True where the step has no ranking) and ``.problems[m]`` (why). Each method is
    named ``method_labels[m]`` (default its key); ``class_name`` goes into the title.

    A degenerate step has no ρ, so nothing is drawn at any ρ there (any height would read as a correlation):
    the method's line breaks, and a strip above the plot ("no ρ") marks the step with an open marker in the
    method's colour, its hover naming the problem ("map is constant (all zero)")."""
    names = method_labels or {}
    xs = list(range(len(res.steps)))
    colours = {m: qualitative.Plotly[i % len(qualitative.Plotly)] for i, m in enumerate(res.methods)}
    bad = {m: [i for i, d in enumerate(res.degenerate.get(m, [])) if d] for m in res.methods}
    strip = any(bad.values())
    fig = make_subplots(rows=2 if strip else 1, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        row_heights=[0.18, 0.82] if strip else None)
    main = 2 if strip else 1
    for m in res.methods:
        name = names.get(m, m)
        y = [None if d else r for r, d in zip(res.rank_corr[m], res.degenerate.get(m, [False] * len(xs)))]
        fig.add_trace(go.Scatter(x=xs, y=y, mode="lines+markers", name=name, legendgroup=m,
                                 line=dict(color=colours[m], width=3), marker=dict(size=9), text=res.steps,
                                 hovertemplate="after %{text}: ρ = %{y:.3f}<extra>" + name + "</extra>"),
                      main, 1)
        if bad[m]:
            fig.add_trace(go.Scatter(x=bad[m], y=[name] * len(bad[m]), mode="markers", legendgroup=m,
                                     showlegend=False, marker=dict(symbol="circle-open", size=12, color=colours[m],
                                                                   line=dict(width=2)),
                                     text=[f"after {res.steps[i]}: {res.problems[m][i]} — no ranking to compare"
                                           for i in bad[m]],
                                     hovertemplate="%{text}<extra>" + name + "</extra>"), 1, 1)
    if strip:
        # no tick labels (method names there would push into the ρ axis title): the marker's colour is the method's
        fig.update_yaxes(title="no ρ", type="category", showticklabels=False, row=1, col=1)
    fig.update_xaxes(tickvals=xs, ticktext=res.steps, range=[-0.5, len(xs) - 0.5], automargin=True)
    fig.update_yaxes(automargin=True, title_standoff=10)
    fig.update_xaxes(title="blocks randomised (top down, cumulative)", tickangle=-45, row=main, col=1)
    fig.update_yaxes(title="Spearman ρ to the original |map|", range=[-1.05, 1.05], zeroline=True, row=main, col=1)
    title = "Model randomisation: similarity to the original map"
    if class_name:
        title += f" · {class_name}"
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), height=460 if strip else 400, font=dict(size=14),
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def agreement_figure(matrix, method_labels, class_name: str | None = None) -> go.Figure:
    """The methods' Spearman agreement matrix (``matrix`` n×n, ``method_labels`` n names in its order) as an
    annotated heatmap on the diverging scale centred at 0 over ρ's whole range −1…1; NaN cells (no ranking)
    stay grey and say "n/a"."""
    z = np.asarray(matrix, dtype=np.float64)
    names = list(method_labels)
    text = [["n/a" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, **colour_scale(z, True, 1.0).heatmap(),
                               text=text, texttemplate="%{text}", textfont=dict(size=15),
                               colorbar=dict(title="ρ"), hoverongaps=False,
                               hovertemplate="%{y} vs %{x}: ρ = %{z:.3f}<extra></extra>"))
    title = "Agreement between maps (Spearman ρ)"
    if class_name:
        title += f" · {class_name}"
    fig.update_xaxes(title="method", tickangle=-30, automargin=True)
    fig.update_yaxes(title="method", autorange="reversed", automargin=True)
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), font=dict(size=14),
                      plot_bgcolor="#a6a6a6", height=max(320, 90 + 60 * len(names)),
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig
