"""UI pieces shared by the unit views (filters, activation maps, receptive fields, top patches, synthesized
images): the list of spatial layers from the model's own forward pass, a layer picker with a sensible
mid-level default, cached activation maps, and a stop button for long runs.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from torch import nn

from interpret.core.errors import InputError
from interpret.units.activations import ActivationMaps, layer_activations
from interpret.units.layer_catalog import conv_layers
from interpret.units.receptive_field import RFTable, linearized_copy, rf_table
from models import ModelHandle

from .compute import cache_key, cached
from .state import current_image, image_id


@dataclass(frozen=True)
class LayerEntry:
    """A module whose output is a (C, h, w) map, with the shape and field of each of its calls."""

    name: str
    type: str
    container: bool
    calls: tuple[tuple[int, int, int, int, int], ...]  # per call: (C, h, w, r, S) (r, S along the height)

    def label(self) -> str:
        c, h, w, r, s = self.calls[-1]
        more = f", called {len(self.calls)}×" if len(self.calls) > 1 else ""
        return f"{self.name} — {self.type}, {c}×{h}×{w}, r={r}{more}"


def safe_rf_table(handle: ModelHandle) -> RFTable | None:
    """The receptive-field table, or None where the network has ops without box geometry (upsampling)."""
    try:
        return rf_table(handle)
    except NotImplementedError:
        return None


@st.cache_data(show_spinner="Tracing layers…", max_entries=16)
def spatial_layers(model_key: str, _handle: ModelHandle) -> list[LayerEntry]:
    """Every module (leaf or block) with a spatial output, in definition order, from the receptive-field trace
    (one pass on fake tensors) of the model's own graph."""
    table = safe_rf_table(_handle)
    if table is None:  # fall back to a real forward pass: shapes, no fields
        from interpret.units.summary import model_summary

        calls: dict[str, list] = {}
        types: dict[str, str] = {}
        for row in model_summary(_handle):
            if len(row.output_shape) == 3:
                calls.setdefault(row.name, []).append((*row.output_shape, 0, 0))
                types[row.name] = row.type
        return [LayerEntry(n, types[n], False, tuple(v)) for n, v in calls.items()]
    by_name: dict[str, list] = {}
    for row in table.rows:
        by_name.setdefault(row.name, []).append(row)
    out = []
    for name, m in _handle.net.named_modules():
        rows = by_name.get(name) or table.containers.get(name)
        if not name or not rows:
            continue
        out.append(LayerEntry(name, type(m).__name__, name not in by_name,
                              tuple((r.channels, r.size[0], r.size[1], r.r[0], r.S[0]) for r in rows)))
    return out


def default_layer(entries: list[LayerEntry], input_size: tuple[int, int]) -> str:
    """A mid-level layer: the last block (or else activation) at effective stride 8 (4 for small inputs)."""
    if not entries:
        raise InputError("this network has no layer with a spatial output")
    want = 8 if input_size[0] >= 128 else 4
    at = [e for e in entries if e.calls[-1][4] == want and e.calls[-1][1] > 1]
    blocks = [e for e in at if e.container and e.type not in ("Sequential", "ModuleList", "ModuleDict")
              and "downsample" not in e.name and "shortcut" not in e.name]
    acts = [e for e in at if e.type in ("ReLU", "ReLU6", "LeakyReLU", "SiLU", "GELU", "Hardswish")]
    for group in (blocks, acts, at):
        if group:
            return group[-1].name
    return entries[len(entries) // 2].name


def layer_picker(handle: ModelHandle, key: str, label: str = "Layer", default: str | None = None,
                 min_size: int = 1) -> tuple[LayerEntry, int]:
    """A layer selectbox (labels show shape and field) plus, for modules called several times (ResNet's relu),
    a call chooser; returns the entry and the call index (0-based)."""
    entries = [e for e in spatial_layers(handle.key, handle) if e.calls[-1][1] >= min_size]
    if not entries:
        raise InputError(f"{handle.name} has no layer with a spatial output")
    names = [e.name for e in entries]
    default = default if default in names else default_layer(entries, handle.input_size)
    if default not in names:
        default = names[len(names) // 2]
    by_label = {e.label(): e for e in entries}
    labels = list(by_label)
    pick = st.selectbox(label, labels, index=names.index(default), key=f"{key}_layer_{handle.key}",
                        help="Modules of the network in definition order; blocks give the block's output. "
                             "Shape C×h×w and receptive field r (pixels) at the model's input size.")
    entry = by_label.get(pick, entries[names.index(default)])
    call = len(entry.calls) - 1
    if len(entry.calls) > 1:
        opts = list(range(len(entry.calls)))
        call = st.selectbox("Call of this module", opts, index=call, key=f"{key}_call_{handle.key}_{entry.name}",
                            format_func=lambda c: f"call {c + 1} of {len(entry.calls)} "
                                                  f"({entry.calls[c][0]}×{entry.calls[c][1]}×{entry.calls[c][2]}, "
                                                  f"r={entry.calls[c][3]})",
                            help="This module is used several times in one forward pass (e.g. ResNet's ReLU "
                                 "after conv1 and after the residual add); each call has its own output.")
    return entry, int(call)


@st.cache_data(show_spinner=False, max_entries=16)
def conv_names(model_key: str, _handle: ModelHandle) -> list[str]:
    return conv_layers(_handle.net)


def activations(handle: ModelHandle, layer: str, call: int) -> ActivationMaps:
    """Feature maps of ``layer`` (call ``call``) for the current image, cached by model + image + layer."""
    key = cache_key(handle.key, image_id(), layer, call)
    img = current_image()
    return cached("unit_activations", key, lambda prog: layer_activations(handle, img, layer, call),
                  label="Forward pass…", progress=False, size=32)


def model_view(handle: ModelHandle) -> np.ndarray:
    """The current image as the model sees it, H×W×3 uint8."""
    return np.asarray(handle.preprocess.view(current_image()), dtype=np.uint8)


_LIN_LOCK = threading.Lock()


@st.cache_resource(show_spinner="Building a linearised copy…", max_entries=4)
def linearized(model_key: str, _net: nn.Module) -> SimpleNamespace:
    """A linearised deep copy of the model (ReLU → identity, max → average pooling, positive weights) with its
    own lock, built once per model; the shared ``handle.net`` is never modified."""
    with _LIN_LOCK:
        return SimpleNamespace(net=linearized_copy(_net), lock=threading.RLock())


def selectable_grid(fig: go.Figure, acts: ActivationMaps, max_points: int = 40_000) -> go.Figure:
    """Add an invisible scatter layer over an activation mosaic so a click selects a unit.

    Streamlit's ``on_select`` reports nothing for heatmap traces (streamlit/streamlit#8760), so one marker per
    unit (every ``step``-th unit for large maps) carries the click; it also carries the hover text, and the
    heatmap's own per-pixel hover data is dropped (for 32 maps of 112×112 it alone is ~20 MB of JSON)."""
    meta = fig.layout.meta
    order = meta["order"]
    h, w = meta["tile"]
    cols, gap = meta["cols"], meta["gap"]
    n_units = len(order) * h * w
    step = max(1, int(np.ceil(np.sqrt(n_units / max_points))))
    ii, jj = np.meshgrid(np.arange(0, h, step), np.arange(0, w, step), indexing="ij")
    xs, ys, cd = [], [], []
    for t, c in enumerate(order):
        r, q = divmod(t, cols)
        xs.append((q * (w + gap) + jj).ravel())
        ys.append((r * (h + gap) + ii).ravel())
        vals = acts.maps[c][ii, jj].ravel()
        cd.append(np.stack([np.full(vals.shape, c), ii.ravel(), jj.ravel(), vals], -1))
    x, y = np.concatenate(xs).astype(np.int32), np.concatenate(ys).astype(np.int32)
    custom = np.concatenate(cd).astype(np.float32)
    trace = go.Scattergl if len(x) > 5000 else go.Scatter
    fig.add_trace(trace(x=x, y=y, mode="markers", customdata=custom, showlegend=False,
                        marker=dict(size=max(4, 240 // max(cols * w // step, 1)), opacity=0, color="black"),
                        hovertemplate="channel %{customdata[0]:.0f} · unit (%{customdata[1]:.0f}, "
                                      "%{customdata[2]:.0f})<br>activation %{customdata[3]:.4g}<extra></extra>"))
    fig.update_layout(clickmode="event+select", dragmode=False, hovermode="closest")
    fig.update_traces(customdata=None, hovertemplate=None, hoverinfo="skip", selector=dict(type="heatmap"))
    return fig


def stop_button(key: str, label: str, help: str, request_key: str, stopped: str):
    """A Stop button shown while a long run is going. Pressing it reruns the script, which interrupts the run at
    its next progress update; on that rerun the stored request is dropped so the run does not start again.
    Returns the placeholder, to be emptied when the run finishes."""
    stop = st.empty()
    if stop.button(label, key=key, help=help):
        st.session_state.pop(request_key, None)
        stop.empty()
        st.info(stopped)
        st.stop()
    return stop
