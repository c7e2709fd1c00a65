"""The one way pages draw a plotly figure: in the colours the figure itself defines.

Two things in Streamlit re-colour a figure between Python and the browser:

- ``st.plotly_chart`` applies Streamlit's theme by default (``theme="streamlit"``), restyling the chart.
- Streamlit's chart template uses the colours ``#000001`` … ``#000040`` as placeholders, and the browser replaces
  every occurrence of those strings in a chart's specification (with the theme's colours, or plotly's defaults
  when there is no theme). Inferno — the sequential scale of every unsigned map — starts at ``#000004``, so
  the zero of every unsigned map was drawn light pink (``#ffabab``) or purple instead of black.

``show_chart`` renders with ``theme=None`` and respells any such colour the figure sets itself as the same
colour in ``rgb()`` form, which the browser leaves alone; the template's own placeholders are kept (they are
meant to be replaced). A test checks that no page calls ``plotly_chart`` directly.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

# The colours Streamlit's frontend substitutes in a chart's JSON text (streamlit_plotly_theme.py), with an
# optional alpha byte.
PLACEHOLDER = re.compile(r"#0000(0[1-9]|[1-3][0-9]|40)([0-9a-fA-F]{2})?")


def _rgb(match: re.Match) -> str:
    b = int(match.group(1), 16)
    if match.group(2):
        return f"rgba(0,0,{b},{int(match.group(2), 16) / 255:.4g})"
    return f"rgb(0,0,{b})"


def _respelled(value: Any) -> Any:
    """``value`` with every placeholder colour respelled; the very same object when it holds none."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(_rgb, value) if "#0000" in value else value
    if isinstance(value, (list, tuple)):
        new = [_respelled(v) for v in value]
        return type(value)(new) if any(a is not b for a, b in zip(new, value)) else value
    if isinstance(value, np.ndarray) and value.dtype.kind in "UO":
        if value.dtype.kind == "U" and not (np.char.find(value, "#0000") >= 0).any():
            return value  # the common case, without a Python loop over every hover string
        new = np.array([_respelled(v) for v in value.ravel().tolist()], dtype=object).reshape(value.shape)
        return new if any(a is not b for a, b in zip(new.ravel(), value.ravel())) else value
    return value


def _fixes(node: dict, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(property path, respelled value) for every property under ``node`` that holds a placeholder colour."""
    out = []
    for k, v in node.items():
        if not path and k == "template":
            continue
        if isinstance(v, dict):
            out += _fixes(v, path + (k,))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):  # annotations, shapes, …
                out += _fixes(x, path + (k, i))
        else:
            new = _respelled(v)
            if new is not v:
                out.append((path + (k,), new))
    return out


def keep_own_colours(fig: go.Figure) -> go.Figure:
    """Respell, in place, every colour of ``fig`` that Streamlit's frontend would substitute (see the module
    doc) as the same colour in rgb() form. Returns ``fig``."""
    for trace, raw in zip(fig.data, fig._data):  # the raw property dicts: read only, no deep copy
        for path, value in _fixes(raw):
            trace[path] = value
    for path, value in _fixes(fig._layout):
        fig.layout[path] = value
    return fig


def show_chart(fig: go.Figure, *, key: str, container: Any = None, **kw: Any) -> Any:
    """Draw ``fig`` in its own colours, in ``container`` (a column, tab or placeholder; default: the page).

    ``kw`` goes to ``st.plotly_chart`` (``on_select``, ``selection_mode``, ``config`` …); the return value is
    its return value (the selection state when ``on_select`` is set)."""
    if "theme" in kw:
        raise TypeError("show_chart always draws the figure's own colours; do not pass a theme")
    target = st if container is None else container
    return target.plotly_chart(keep_own_colours(fig), key=key, theme=None, **kw)
