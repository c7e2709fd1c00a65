"""UI pieces shared by the Explain, Compare and Trust pages: parameter forms, cached runs, exports."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import streamlit as st

from interpret import export
from interpret.layers import list_layers
from interpret.methods import METHODS, MethodSpec, explain
from interpret.result import Attribution
from models import ModelHandle

from .compute import _cache, cache_key, cached
from .state import current_image, image_id


@st.cache_data(show_spinner=False, max_entries=16)
def layer_names(model_key: str, _handle: ModelHandle) -> list[str]:
    """Layers worth explaining: convolutions, activations, pooling and blocks (module paths)."""
    return [l.name for l in list_layers(_handle.net, ("conv", "act", "pool", "block", "norm"))]


def param_widgets(spec: MethodSpec, handle: ModelHandle, prefix: str) -> dict[str, Any]:
    """One widget per ParamSpec (inside a form, so nothing recomputes until Run)."""
    out: dict[str, Any] = {}
    for p in spec.params:
        key = f"{prefix}_{spec.name}_{p.name}"
        if p.kind == "int":
            out[p.name] = int(st.number_input(p.name, min_value=int(p.min) if p.min is not None else None,
                                              max_value=int(p.max) if p.max is not None else None,
                                              value=int(p.default), step=1, help=p.help, key=key))
        elif p.kind == "float":
            out[p.name] = float(st.slider(p.name, float(p.min or 0.0), float(p.max or 1.0), float(p.default),
                                          step=float(p.step or 0.01), help=p.help, key=key))
        elif p.kind == "bool":
            out[p.name] = bool(st.checkbox(p.name, value=bool(p.default), help=p.help, key=key))
        elif p.kind == "choice":
            choices = list(p.choices or ())
            out[p.name] = st.selectbox(p.name, choices, index=choices.index(p.default), help=p.help, key=key)
        elif p.kind == "dict":
            text = st.text_input(f"{p.name} (JSON, optional)", value="", help=p.help, key=key,
                                 placeholder='e.g. {"kernel_size": 4, "max_dist": 200}')
            out[p.name] = _json_dict(text, p.name)
        elif p.kind == "layer":
            names = ["(default)"] + layer_names(handle.key, handle)
            pick = st.selectbox(p.name, names, index=0, help=p.help, key=key)
            out[p.name] = None if pick == "(default)" else pick
    return out


def _json_dict(text: str, name: str) -> dict | None:
    """Parse an optional JSON object typed by the user; a ValueError (shown as a message) if it is not one."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: not valid JSON ({e.msg}); write it like {{\"kernel_size\": 4}}.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a JSON object such as {{\"kernel_size\": 4}}.")
    return value


def run_method(handle: ModelHandle, target: int, method: str, params: dict[str, Any]) -> Attribution:
    """Cached by model + image + target + method + parameters; progress bar for slow methods."""
    spec = METHODS[method]
    key = cache_key(handle.key, image_id(), target, method, params)
    x = handle.input_tensor(current_image())
    return cached("attributions", key, lambda prog: explain(handle, x, target, method, progress=prog, **params),
                  label=f"{spec.label}…", progress=spec.slow, size=96)


def progressive_occlusion(handle: ModelHandle, target: int, params: dict[str, Any], show) -> Attribution:
    """Occlusion with the incremental engine, drawn coarse first and refined in place (``show(attr)`` is called
    for each level); the final, exact map is cached like any other result."""
    from interpret.occlusion_approx import coarse_occlusion

    key = cache_key(handle.key, image_id(), target, "occlusion", params)
    lru = _cache("attributions", 96)
    hit = lru.get(key)
    if hit is not None:
        return hit
    x = handle.input_tensor(current_image())
    final = None
    for attr in coarse_occlusion(handle, x, target, window=params["window"], stride=params["stride"],
                                 baseline=params["baseline"], blur_sigma=params["blur_sigma"],
                                 batch_size=params["batch_size"]):
        show(attr)
        final = attr
    final.params = {**params, "progressive": True}
    lru.put(key, final)
    return final


def display_image(handle: ModelHandle) -> np.ndarray:
    """The image as the model sees it, H×W×3 in [0, 1]."""
    return np.asarray(handle.preprocess.view(current_image()), dtype=np.float32) / 255.0


def export_buttons(handle: ModelHandle, attr: Attribution, fig, key: str) -> None:
    """PNG of the map over the image, the raw map (.npy), the interactive figure (.html) and the settings (.json)."""
    image = display_image(handle)
    record = export.settings_record(attr, handle, image_id())
    stem = f"{handle.key}_{attr.method}_{attr.target}".replace(":", "_").replace("/", "_")
    c1, c2, c3, c4 = st.columns(4)
    c1.download_button("PNG", export.overlay_png(image, attr), f"{stem}.png", "image/png", key=f"{key}_png",
                       on_click="ignore")
    c2.download_button("Map (.npy)", export.npy_bytes(attr.map), f"{stem}.npy", "application/octet-stream",
                       key=f"{key}_npy", on_click="ignore")
    c3.download_button("Figure (.html)", export.figure_html(fig), f"{stem}.html", "text/html",
                       key=f"{key}_html", on_click="ignore")
    c4.download_button("Settings (.json)", json.dumps(record, indent=2), f"{stem}.json", "application/json",
                       key=f"{key}_json", on_click="ignore")
