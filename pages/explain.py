"""Explain: why did the model decide? One attribution method at a time, its parameters in a form."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from interpret.methods import METHODS
from interpret.plots import class_title, overlay_figure, rgb_figure, rgb_title, scored_windows_figure
from interpret.result import NotDefined
from pages._ui.charts import show_chart
from pages._ui.explain_ui import (display_image, export_buttons, parameter_panel, progressive_occlusion,
                                  run_method)
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle
from pages._ui.target import pick_target, probabilities

st.title("Explain")

SIDE_BY_SIDE = "backprop_trio"
TRIO = ("backprop", "guided_backprop", "deconvnet")


def _method_label(name: str) -> str:
    if name == SIDE_BY_SIDE:
        return "Backprop vs guided backprop vs deconvnet (side by side)"
    return METHODS[name].label


def _approx_details(attr) -> None:
    """How much of the approximate occlusion map was measured, and where."""
    n, total = attr.extra["evaluated"], attr.extra["windows"]
    tol = attr.params.get("tolerance")
    st.caption(f"Scored {n} of {total} patch positions ({n / total:.0%}); the others were interpolated where the "
               f"drops around them differ by less than {tol} × their range. The peak is measured. "
               "Set the tolerance to 0 for the exact map.")
    with st.expander("Which patch positions were measured"):
        show_chart(scored_windows_figure(attr), key="approx_scored")


def _lime_details(handle, attr) -> None:
    from skimage.segmentation import mark_boundaries

    seg = attr.extra.get("segments")
    weights = attr.extra.get("weights", {})
    if seg is None:
        return
    image = display_image(handle)
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Segmentation**")
        st.image(mark_boundaries(image, seg, color=(1, 1, 0)), clamp=True, width="stretch",
                 caption=f"{int(seg.max()) + 1} superpixels")
    with c2:
        pos = attr.extra.get("top_positive", [])
        neg = attr.extra.get("top_negative", [])
        show = np.full_like(image, 0.35)
        for s in pos:
            show[seg == s] = image[seg == s]
        tint = show.copy()
        for s in neg:
            tint[seg == s] = 0.5 * image[seg == s] + 0.5 * np.array([0.2, 0.3, 1.0])
        st.markdown("**Top superpixels** (kept: for the class; blue: against it)")
        st.image(np.clip(tint, 0, 1), width="stretch")
    if weights:
        items = sorted(weights.items(), key=lambda kv: -abs(kv[1]))[:20]
        fig = go.Figure(go.Bar(x=[w for _, w in items][::-1], y=[f"superpixel {k}" for k, _ in items][::-1],
                               orientation="h", marker_color=["#b2182b" if w > 0 else "#2166ac"
                                                              for _, w in items][::-1]))
        fig.update_layout(height=40 + 18 * len(items), margin=dict(l=10, r=10, t=30, b=10),
                          title="Per-superpixel weights (largest |w|)")
        show_chart(fig, key="lime_weights")
    st.caption(f"Fit R² = {attr.extra.get('score', float('nan')):.3f}; seed {attr.params.get('seed')}.")


with friendly_errors("The explanation"):
    handle = current_handle()
    target = pick_target(handle)
    names = list(METHODS) + [SIDE_BY_SIDE]
    method = st.selectbox("Method", names, format_func=_method_label, key="explain_method",
                          index=names.index(st.session_state.get("explain_switch", "gradcam"))
                          if st.session_state.get("explain_switch", "gradcam") in names else 0)
    st.session_state.pop("explain_switch", None)
    if method != SIDE_BY_SIDE and METHODS[method].description:
        st.caption(METHODS[method].description)
    params, run = parameter_panel(method, handle, "explain")
    req_key = (handle.key, target, method, tuple(sorted(params.items())))
    if run:
        st.session_state["explain_request"] = req_key
    if st.session_state.get("explain_request") != req_key:
        st.info("Choose the parameters and press **Run**.")
        st.stop()

    image = display_image(handle)
    p = probabilities(handle)
    st.markdown(f"Explaining **{handle.labels[target]}** (#{target}, p = {p[target]:.1%}) with {handle.name}.")
    if method == SIDE_BY_SIDE:
        cols = st.columns(3)
        for col, m in zip(cols, TRIO):
            attr = run_method(handle, target, m, {})
            with col:
                show_chart(rgb_figure(attr.extra["rgb"], f"{METHODS[m].label}<br>"
                                                         f"{class_title(target, handle.labels[target])}"),
                           key=f"trio_{m}")
                st.caption(f"{attr.seconds:.2f} s")
        st.caption("Grey is zero; colours show the per-channel gradient sign and size (99.5th percentile scaling). "
                   "Guided backprop keeps only positive gradients through active ReLUs, which gives the crisp "
                   "edge images of the slides; the plain gradient is noisy; deconvnet ignores the forward pass.")
        st.stop()
    try:
        if method == "occlusion" and params.get("engine") == "incremental":
            live = st.empty()

            def _show(a) -> None:
                with live.container():
                    show_chart(overlay_figure(image, a, opacity=0.55, label=handle.labels[target]),
                               key=f"occ_live_{a.extra['level']}")
                    st.caption(f"coarse map from {a.extra['evaluated']} of {a.extra['windows']} windows "
                               f"({a.seconds:.2f} s) — refining…")

            attr = progressive_occlusion(handle, target, params, _show)
            live.empty()
        else:
            attr = run_method(handle, target, method, params)
    except NotDefined as e:
        st.warning(f"**{METHODS[method].label} is not defined for {handle.name}.** {e}")
        if st.button("Use Grad-CAM instead", key="to_gradcam"):
            st.session_state["explain_switch"] = "gradcam"
            st.session_state.pop("explain_method", None)
            st.rerun()
        st.stop()
    opacity = st.slider("Map opacity", 0.0, 1.0, 0.55, 0.05, key="explain_opacity")
    show = attr
    if method in ("occlusion", "occlusion_approx") and "prob_drop" in attr.extra:
        kind = st.radio("Map of", ["score (logit) drop", "probability drop"], horizontal=True, key="occ_kind")
        if kind == "probability drop":
            from interpret.result import Attribution

            show = Attribution("occlusion", attr.target, attr.extra["prob_drop"], True, attr.params)
    fig = overlay_figure(image, show, opacity=opacity, label=handle.labels[target])
    if "rgb" in attr.extra:
        c1, c2 = st.columns(2)
        show_chart(fig, key="explain_fig", container=c1)
        show_chart(rgb_figure(attr.extra["rgb"], rgb_title(method, handle.labels[target], target)),
                   key="explain_rgb", container=c2)
    else:
        show_chart(fig, key="explain_fig")
    stats = pd.DataFrame([{"min": float(show.map.min()), "max": float(show.map.max()),
                           "mean |map|": float(np.abs(show.map).mean()), "seconds": round(attr.seconds, 3)}])
    st.dataframe(stats, hide_index=True)
    if method == "occlusion_approx" and "scored" in attr.extra:
        _approx_details(attr)
    if method in ("lime", "lime_fast"):
        _lime_details(handle, attr)
    if attr.extra.get("stability") is not None:
        hist = attr.extra.get("stability_history") or []
        used, cap = attr.extra.get("samples_used"), attr.params.get("num_samples")
        settled = used is not None and cap is not None and used < cap
        st.caption(f"Sampling stopped after {used} of at most {cap} samples; stability of the top-5 superpixels "
                   f"over the last checks: {attr.extra['stability']:.2f} (1 = settled). "
                   + ("The top 5 had stopped changing." if settled else
                      "The top 5 had not settled by the sample limit: superpixels near the cut-off are uncertain "
                      "(raise the number of samples to narrow it down)."))
        if hist:
            sfig = go.Figure(go.Scatter(x=[n for n, _ in hist], y=[o for _, o in hist], mode="lines+markers"))
            sfig.update_layout(height=220, margin=dict(l=10, r=10, t=30, b=10), title="Top-5 overlap per check",
                               xaxis_title="samples", yaxis=dict(range=[0, 1.05], title="overlap"))
            show_chart(sfig, key="lime_stability")
    st.markdown("**Export**")
    export_buttons(handle, show, fig, "explain_export")
