"""Compare: every attribution method for the current image and class in one grid, on a common normalization."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from interpret.attribution.registry import METHODS
from interpret.plots.attribution import grid_figure
from interpret.core.errors import NotDefined
from pages._ui.charts import show_chart
from pages._ui.explain_ui import display_image, run_method
from pages._ui.gate import require
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, model_caption
from pages._ui.target import pick_target

st.title("Compare")
model_caption()
st.caption("Each map is divided by its own largest |value|, so signed maps share one scale on [-1, 1] and "
           "unsigned maps one on [0, 1]; hovering shows the raw value. Titles give each method's compute time.")

# Quick settings reach every slow method, the fast variants included (same patch grid / sample budget as their
# plain counterparts, so "fast" stays faster): the approximate occlusion refines the same 14 × 14 grid from every
# 3rd position with a looser tolerance (it scores 96–102 of the 196 positions on coffee and rocket, 130 on chelsea,
# in 3–5 passes; from every 2nd position it scored as many in 5–7 passes, each with a fixed cost of 20–40 ms, and
# was barely faster than the exact map), fast LIME gets LIME's 300 samples, in batches of 10 (as LIME's): its
# default 5 is ~20 % faster on an idle CPU, but twice the forward passes cost 1.7× more while other work shares the
# cores (measured on 2 cores: 31.7 s at 5, 18.5 s at 10, LIME 49.6 s).
QUICK = {"occlusion": {"window": 16, "stride": 16},
         "occlusion_approx": {"window": 16, "stride": 16, "tolerance": 0.3, "coarse_step": 3},
         "lime": {"num_samples": 300}, "lime_fast": {"num_samples": 300, "batch_size": 10},
         "smoothgrad": {"samples": 15}, "integrated_gradients": {"steps": 16}}

with friendly_errors("The comparison"):
    handle = current_handle()
    target = pick_target(handle, key="compare_target")
    with st.form("compare_form"):
        chosen = st.multiselect("Methods", list(METHODS), default=list(METHODS),
                                format_func=lambda m: METHODS[m].label)
        quick = st.checkbox("Quick settings for the slow methods (both occlusions: patch size and step 16 px, the "
                            "approximate one with tolerance 0.3; both LIMEs 300 samples; SmoothGrad 15 samples; "
                            "IG 16 steps)", value=True)
        run = st.form_submit_button("Run all", type="primary")
    require("compare_request", (handle.key, target, tuple(chosen), quick), run,
            "Pick the methods and press **Run all**.")
    attrs, skipped = [], []
    bar = st.progress(0.0, text="Running methods…")
    for i, m in enumerate(chosen):
        try:
            attrs.append(run_method(handle, target, m, QUICK.get(m, {}) if quick else {}))
        except NotDefined as e:
            skipped.append((METHODS[m].label, str(e)))
        bar.progress((i + 1) / max(1, len(chosen)), text=f"{METHODS[m].label} done")
    bar.empty()
    st.markdown(f"Class **{handle.labels[target]}** (#{target}) — {handle.name}")
    if attrs:
        fig = grid_figure(display_image(handle), attrs, common_norm=True, cols=4, label=handle.labels[target],
                          method_labels={a.method: METHODS[a.method].label for a in attrs})
        show_chart(fig, key="compare_grid")
        st.dataframe(pd.DataFrame([{"method": METHODS[a.method].label, "seconds": round(a.seconds, 3),
                                    "signed": a.signed, "parameters": str(a.params)} for a in attrs]),
                     hide_index=True, width="stretch")
    for label, why in skipped:
        st.warning(f"{label} not shown: {why}")
