"""UI pieces shared by the Explain, Compare and Trust pages: parameter forms, cached runs, exports."""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from interpret.plots import export
from interpret.units.layer_catalog import list_layers
from interpret.attribution.registry import METHODS, MethodSpec, ParamSpec, explain
from interpret.core.errors import InputError
from interpret.core.result import Attribution
from models import ModelHandle

from .compute import await_fast_paths, cache_key, cached, result_cache
from .state import current_image, image_id


@st.cache_data(show_spinner=False, max_entries=16)
def layer_names(model_key: str, _handle: ModelHandle) -> list[str]:
    """Layers worth explaining: convolutions, activations, pooling and blocks (module paths)."""
    return [l.name for l in list_layers(_handle.net, ("conv", "act", "pool", "block", "norm"))]


def _widget(p: ParamSpec, handle: ModelHandle, key: str) -> Any:
    """One widget for one parameter, labelled and explained from its spec."""
    label = p.title
    if p.kind == "int":
        return int(st.number_input(label, min_value=int(p.min) if p.min is not None else None,
                                   max_value=int(p.max) if p.max is not None else None,
                                   value=int(p.default), step=1, help=p.help, key=key))
    if p.kind == "float":
        return float(st.slider(label, float(p.min or 0.0), float(p.max or 1.0), float(p.default),
                               step=float(p.step or 0.01), help=p.help, key=key))
    if p.kind == "bool":
        return bool(st.checkbox(label, value=bool(p.default), help=p.help, key=key))
    if p.kind == "choice":
        choices = list(p.choices or ())
        return st.selectbox(label, choices, index=choices.index(p.default), format_func=p.choice_label,
                            help=p.help, key=key)
    if p.kind == "dict":
        text = st.text_input(f"{label} (JSON, optional)", value="", help=p.help, key=key,
                             placeholder='e.g. {"kernel_size": 4, "max_dist": 200}')
        try:
            return _json_dict(text, label)
        except InputError as e:
            st.error(str(e))
            return INVALID
    if p.kind == "layer":
        names = [DEFAULT_LAYER] + layer_names(handle.key, handle)
        pick = st.selectbox(label, names, index=0, help=p.help, key=key)
        return None if pick == DEFAULT_LAYER else pick
    raise ValueError(f"unknown parameter kind {p.kind!r}")


DEFAULT_LAYER = "(default)"
INVALID = object()  # a typed value that could not be read (its message is shown under the field)


def param_widgets(spec: MethodSpec, handle: ModelHandle, prefix: str) -> dict[str, Any]:
    """One widget per parameter that applies, the implementation knobs in an "Advanced" expander; every value
    is returned (a parameter that does not apply to the choices made keeps its default and is not shown)."""
    out: dict[str, Any] = {}
    advanced = [p for p in spec.params if p.advanced]
    for p in spec.params:
        if not p.advanced:
            out[p.name] = _widget(p, handle, f"{prefix}_{spec.name}_{p.name}") if p.applies(out) else p.default
    if advanced:
        with st.expander("Advanced"):
            for p in advanced:
                out[p.name] = _widget(p, handle, f"{prefix}_{spec.name}_{p.name}") if p.applies(out) else p.default
    return {p.name: out[p.name] for p in spec.params}


def _state_keys(prefix: str, method: str, handle: ModelHandle) -> tuple[str, str, str]:
    base = f"{prefix}__{handle.key}__{method}"
    return f"{base}__live", f"{base}__submitted", f"{prefix}__run_clicked"


@st.fragment
def _panel(method: str, handle: ModelHandle, prefix: str) -> None:
    """The parameters and the Run button. A fragment, so changing a parameter reruns only this panel (fields
    that apply to one choice appear at once, the shown result stays); Run stores the values and reruns the
    page."""
    live, submitted, clicked = _state_keys(prefix, method, handle)
    with st.container(border=True):
        spec = METHODS.get(method)
        params = param_widgets(spec, handle, prefix) if spec is not None else {}
        bad = any(v is INVALID for v in params.values())
        if not bad:
            st.session_state[live] = params
        if st.button("Run", type="primary", key=f"{prefix}_{method}_run", disabled=bad,
                     help="Fix the settings marked above first." if bad else None):
            st.session_state[submitted] = params
            st.session_state[clicked] = True
            ctx = get_script_run_ctx()
            if ctx is not None and ctx.fragment_ids_this_run:  # a panel-only rerun: now run the page
                st.rerun()


def parameter_panel(method: str, handle: ModelHandle, prefix: str) -> tuple[dict[str, Any], bool]:
    """Draw the parameter panel of ``method`` (one that is not in the registry gets a Run button only) and
    return (the parameters as of the last Run — the shown values before the first —, whether Run was just
    pressed). Like a form, edits count only once Run is pressed."""
    _panel(method, handle, prefix)
    live, submitted, clicked = _state_keys(prefix, method, handle)
    run = bool(st.session_state.pop(clicked, False))
    params = st.session_state.get(submitted, st.session_state.get(live, {}))
    return dict(params), run


def _json_dict(text: str, name: str) -> dict | None:
    """Parse an optional JSON object typed by the user; an InputError (shown as a message) if it is not one."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{name}: not valid JSON ({e.msg}); write it like {{\"kernel_size\": 4}}.") from None
    if not isinstance(value, dict):
        raise InputError(f"{name}: expected a JSON object such as {{\"kernel_size\": 4}}.")
    return value


def run_method(handle: ModelHandle, target: int, method: str, params: dict[str, Any]) -> Attribution:
    """Cached by model + image + target + method + parameters; progress bar for slow methods."""
    spec = METHODS[method]
    key = cache_key(handle.key, image_id(), target, method, params)
    x = handle.input_tensor(current_image())
    return cached("attributions", key, lambda prog: explain(handle, x, target, method, progress=prog, **params),
                  label=f"{spec.label}…", progress=spec.slow, size=96,
                  before=lambda: await_fast_paths(handle, method))


def progressive_run(handle: ModelHandle, target: int, method: str, params: dict[str, Any],
                    show: Callable[[Attribution], None]) -> Attribution:
    """Run ``method`` through its details view's ``progressive.levels``, drawn coarse first and refined in place
    (``show(attr)`` is called for each level); the final map is cached like any other result of ``method``."""
    spec = METHODS[method]
    coarse = spec.details.progressive
    key = cache_key(handle.key, image_id(), target, method, params)
    lru = result_cache("attributions", 96)
    hit = lru.get(key)
    if hit is not None:
        return hit
    x = handle.input_tensor(current_image())
    await_fast_paths(handle, method)
    label = f"{spec.label}…"
    bar = st.progress(0.0, text=label)
    final = None
    try:
        for attr in coarse.levels(handle, x, target, **{p: params[p] for p in coarse.params},
                                  progress=lambda f: bar.progress(min(max(float(f), 0.0), 1.0), text=label)):
            show(attr)
            final = attr
    finally:
        bar.empty()
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
    label = handle.labels[attr.target]
    method_label = METHODS[attr.method].label
    stem = export.file_stem(handle.key, attr, label)
    c1, c2, c3, c4 = st.columns(4)
    c1.download_button("PNG", export.overlay_png(image, attr, label=label, method_label=method_label),
                       f"{stem}.png", "image/png", key=f"{key}_png", on_click="ignore")
    c2.download_button("Map (.npy)", export.npy_bytes(attr.map), f"{stem}.npy", "application/octet-stream",
                       key=f"{key}_npy", on_click="ignore")
    c3.download_button("Figure (.html)", export.figure_html(fig), f"{stem}.html", "text/html",
                       key=f"{key}_html", on_click="ignore")
    c4.download_button("Settings (.json)", json.dumps(record, indent=2), f"{stem}.json", "application/json",
                       key=f"{key}_json", on_click="ignore")
