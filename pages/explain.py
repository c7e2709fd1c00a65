"""Explain: why did the model decide? One attribution method at a time, its parameters in a form, and the details
its registry entry describes (``MethodSpec.details``); or several methods side by side (``COMPOSITES``)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import streamlit as st

from interpret.attribution.registry import (COMPOSITES, METHODS, AlternativeMaps, Composite, DetailsView,
                                            Sampling, ScoredWindows, Segments)
from interpret.core.errors import NotDefined
from interpret.core.result import Attribution
from interpret.plots.attribution import class_title, overlay_figure, rgb_figure, rgb_title, scored_windows_figure
from interpret.plots.details import (segment_boundaries, stability_figure, superpixel_weights_figure,
                                     top_superpixels_image)
from models import ModelHandle
from pages._ui.charts import show_chart
from pages._ui.explain_ui import display_image, export_buttons, parameter_panel, progressive_run, run_method
from pages._ui.gate import require
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, model_caption
from pages._ui.target import pick_target, probabilities

st.title("Explain")
model_caption()

# Widget and chart keys of the details, one per kind of part (one method is shown at a time); kept as they were.
MAP_CHOICE_KEY = "occ_kind"
LIVE_KEY = "occ_live"
SCORED_KEY = "approx_scored"
WEIGHTS_KEY = "lime_weights"
STABILITY_KEY = "lime_stability"
SIDE_BY_SIDE_KEY = "trio"


def _label(name: str) -> str:
    return COMPOSITES[name].label if name in COMPOSITES else METHODS[name].label


def _side_by_side(handle: ModelHandle, target: int, view: Composite) -> None:
    """Each member's per-colour-channel image in its own column, with its compute time."""
    for col, m in zip(st.columns(len(view.members)), view.members):
        attr = run_method(handle, target, m, {})
        with col:
            show_chart(rgb_figure(attr.extra[METHODS[m].details.rgb.key],
                                  f"{METHODS[m].label}<br>{class_title(target, handle.labels[target])}"),
                       key=f"{SIDE_BY_SIDE_KEY}_{m}")
            st.caption(f"{attr.seconds:.2f} s")
    if view.caption:
        st.caption(view.caption)


def _compute(handle: ModelHandle, target: int, method: str, params: dict, image: np.ndarray) -> Attribution:
    """The result; drawn coarse first, and refined in place, where the method's details view allows it."""
    coarse = METHODS[method].details.progressive
    if coarse is None or not coarse.applies(params):
        return run_method(handle, target, method, params)
    live = st.empty()

    def _show(a: Attribution) -> None:
        with live.container():
            show_chart(overlay_figure(image, a, opacity=0.55, label=handle.labels[target],
                                      method_label=METHODS[method].label),
                       key=f"{LIVE_KEY}_{a.extra[coarse.level]}")
            st.caption(f"coarse map from {a.extra[coarse.evaluated]} of {a.extra[coarse.windows]} windows "
                       f"({a.seconds:.2f} s) — refining…")

    attr = progressive_run(handle, target, method, params, _show)
    live.empty()
    return attr


def _chosen_map(attr: Attribution, part: AlternativeMaps | None) -> Attribution:
    """The result with the map the user picks among the main one and the alternatives it carries."""
    present = [a for a in part.maps if a.key in attr.extra] if part is not None else []
    if not present:
        return attr
    kind = st.radio("Map of", [part.main] + [a.label for a in present], horizontal=True, key=MAP_CHOICE_KEY)
    chosen = next((a for a in present if a.label == kind), None)
    return attr if chosen is None else dataclasses.replace(attr, map=attr.extra[chosen.key])


def _scored_windows(attr: Attribution, part: ScoredWindows) -> None:
    """How much of an approximate map was measured, and where."""
    n, total = attr.extra[part.evaluated], attr.extra[part.windows]
    tol = attr.params.get(part.tolerance)
    st.caption(f"Scored {n} of {total} patch positions ({n / total:.0%}); the others were interpolated where the "
               f"drops around them differ by less than {tol} × their range. The peak is measured. "
               "Set the tolerance to 0 for the exact map.")
    with st.expander("Which patch positions were measured"):
        show_chart(scored_windows_figure(attr), key=SCORED_KEY)


def _segments(handle: ModelHandle, attr: Attribution, part: Segments) -> None:
    """The superpixels, the strongest of them, their weights and the quality of the linear fit."""
    seg = attr.extra[part.segments]
    weights = attr.extra.get(part.weights, {})
    image = display_image(handle)
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Segmentation**")
        st.image(segment_boundaries(image, seg), clamp=True, width="stretch",
                 caption=f"{int(seg.max()) + 1} superpixels")
    with c2:
        st.markdown("**Top superpixels** (kept: for the class; blue: against it)")
        st.image(top_superpixels_image(image, seg, attr.extra.get(part.top_positive, []),
                                       attr.extra.get(part.top_negative, [])), width="stretch")
    if weights:
        show_chart(superpixel_weights_figure(weights), key=WEIGHTS_KEY)
    st.caption(f"Fit R² = {attr.extra.get(part.fit_score, float('nan')):.3f}; seed {attr.params.get(part.seed)}.")


def _sampling(attr: Attribution, part: Sampling) -> None:
    """When an adaptive sampler stopped and how settled its top superpixels were."""
    hist = attr.extra.get(part.history) or []
    used, cap = attr.extra.get(part.samples_used), attr.params.get(part.cap)
    settled = used is not None and cap is not None and used < cap
    st.caption(f"Sampling stopped after {used} of at most {cap} samples; stability of the top-5 superpixels "
               f"over the last checks: {attr.extra[part.stability]:.2f} (1 = settled). "
               + ("The top 5 had stopped changing." if settled else
                  "The top 5 had not settled by the sample limit: superpixels near the cut-off are uncertain "
                  "(raise the number of samples to narrow it down)."))
    if hist:
        show_chart(stability_figure(hist), key=STABILITY_KEY)


def _details(handle: ModelHandle, attr: Attribution, view: DetailsView) -> None:
    """Every part of the method's details view that the result carries, in a fixed order."""
    if view.scored_windows is not None and view.scored_windows.scored in attr.extra:
        _scored_windows(attr, view.scored_windows)
    if view.segments is not None and attr.extra.get(view.segments.segments) is not None:
        _segments(handle, attr, view.segments)
    if view.sampling is not None and attr.extra.get(view.sampling.stability) is not None:
        _sampling(attr, view.sampling)


def _explain(handle: ModelHandle, target: int, method: str, params: dict, image: np.ndarray) -> None:
    """One method's map (with its alternatives and per-channel image), statistics, details and exports."""
    spec = METHODS[method]
    label = handle.labels[target]
    try:
        attr = _compute(handle, target, method, params, image)
    except NotDefined as e:
        st.warning(f"**{spec.label} is not defined for {handle.name}.** {e}")
        if st.button("Use Grad-CAM instead", key="to_gradcam"):
            st.session_state["explain_switch"] = "gradcam"
            st.session_state.pop("explain_method", None)
            st.rerun()
        st.stop()
    opacity = st.slider("Map opacity", 0.0, 1.0, 0.55, 0.05, key="explain_opacity")
    show = _chosen_map(attr, spec.details.alternative_maps)
    fig = overlay_figure(image, show, opacity=opacity, label=label, method_label=spec.label)
    rgb = spec.details.rgb
    if rgb is not None and rgb.key in attr.extra:
        c1, c2 = st.columns(2)
        show_chart(fig, key="explain_fig", container=c1)
        show_chart(rgb_figure(attr.extra[rgb.key], rgb_title(method, label, target, method_label=spec.label)),
                   key="explain_rgb", container=c2)
    else:
        show_chart(fig, key="explain_fig")
    stats = pd.DataFrame([{"min": float(show.map.min()), "max": float(show.map.max()),
                           "mean |map|": float(np.abs(show.map).mean()), "seconds": round(attr.seconds, 3)}])
    st.dataframe(stats, hide_index=True)
    _details(handle, attr, spec.details)
    st.markdown("**Export**")
    export_buttons(handle, show, fig, "explain_export")


with friendly_errors("The explanation"):
    handle = current_handle()
    target = pick_target(handle)
    names = list(METHODS) + list(COMPOSITES)
    switch = st.session_state.pop("explain_switch", "gradcam")
    method = st.selectbox("Method", names, format_func=_label, key="explain_method",
                          index=names.index(switch) if switch in names else 0)
    if method in METHODS and METHODS[method].description:
        st.caption(METHODS[method].description)
    params, run = parameter_panel(method, handle, "explain")
    require("explain_request", (handle.key, target, method, tuple(sorted(params.items()))), run,
            "Choose the parameters and press **Run**.")

    image = display_image(handle)
    p = probabilities(handle)
    st.markdown(f"Explaining **{handle.labels[target]}** (#{target}, p = {p[target]:.1%}) with {handle.name}.")
    if method in COMPOSITES:
        _side_by_side(handle, target, COMPOSITES[method])
    else:
        _explain(handle, target, method, params, image)
