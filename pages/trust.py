"""Trust: is a map faithful to the model? Deletion/insertion curves and the model-randomisation sanity check."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from interpret.plots.colour import colour_scale
from interpret.attribution.registry import METHODS
from interpret.evaluation.metrics import deletion_insertion
from interpret.core.errors import NotDefined
from interpret.evaluation.sanity import cascading_randomization, default_blocks, degenerate_steps
from interpret.evaluation.trust_summary import DEFAULT_METHODS, PERTURBATION_LABELS, summary_records, trust_summary
from interpret.plots.evaluation import agreement_figure, rank_corr_figure
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, cached
from pages._ui.explain_ui import run_method
from pages._ui.gate import requested
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, current_image, image_id, model_caption
from pages._ui.target import pick_target

st.title("Trust")
model_caption()

FAST = [m for m in ("saliency", "gradient", "grad_x_input", "guided_backprop", "deconvnet", "cam", "gradcam",
                    "gradcam_pp", "guided_gradcam", "integrated_gradients", "smoothgrad", "lrp_epsilon_plus_flat")
        if m in METHODS]


def _label(m: str) -> str:
    return METHODS[m].label if m in METHODS else m


def _pick_steps(blocks: list[str], n: int) -> list[str]:
    """n blocks evenly spread over the network, always including the top one."""
    if n >= len(blocks):
        return blocks
    idx = np.unique(np.round(np.linspace(len(blocks) - 1, 0, n)).astype(int))
    return [blocks[i] for i in sorted(idx)]


def summary_tab(handle, target: int) -> None:
    """Which map to believe for this image: faithfulness against random orders, agreement, stability."""
    st.markdown("One table for this image and class: does each method's map find the pixels the model needs "
                "**faster than a random pixel order** (deletion ↓ / insertion ↑ AUC, as a multiple of the random "
                "orders' mean), and does it stay the same when the photo is **flipped, slightly cropped or "
                "re-saved as JPEG** (Spearman ρ with the original map, 1 = same ranking)? The matrix below shows "
                "how far the methods agree with each other.")
    options = [m for m in dict.fromkeys(FAST + list(DEFAULT_METHODS)) if m in METHODS]
    with st.form("summary_form"):
        methods = st.multiselect("Methods", options, default=[m for m in DEFAULT_METHODS if m in options],
                                 format_func=_label, key="summary_methods",
                                 help="Each map is computed four times (the image, flipped, cropped, JPEG).")
        c1, c2, c3 = st.columns(3)
        steps = int(c1.number_input("Steps of the curves", 4, 64, 16, step=4, key="summary_steps"))
        n_seeds = int(c2.number_input("Random orders (seeds)", 1, 10, 3, key="summary_seeds",
                                      help="The random-order baseline: one deletion/insertion run per seed."))
        baseline = c3.selectbox("Removed pixels become", ["blur", "zero", "mean"], key="summary_baseline")
        run = st.form_submit_button("Run summary", type="primary")
    req = (handle.key, image_id(), target, tuple(methods), steps, n_seeds, baseline)
    if not requested("summary_request", req, run):
        st.info("Choose the methods and press **Run summary**.")
        return
    if not methods:
        st.warning("Choose at least one method.")
        return
    img = current_image()
    key = cache_key("trust_summary", *req)
    res = cached("trust_summary", key, lambda prog: trust_summary(
        handle, img, target, methods, steps=steps, baseline=baseline, seeds=tuple(range(n_seeds)), progress=prog),
        label="Trust summary: maps, curves, random orders and perturbed copies…", size=16)
    labels = {m: _label(m) for m in methods}
    name = handle.labels[target] if 0 <= target < len(handle.labels) else str(target)
    rnd = res.random
    st.markdown(f"**{name}** · random pixel orders ({len(rnd.seeds)}): deletion AUC {rnd.deletion_mean:.3f} ± "
                f"{rnd.deletion_std:.3f}, insertion AUC {rnd.insertion_mean:.3f} ± {rnd.insertion_std:.3f} "
                "(mean ± standard deviation). *Beats random* = better than every random order tried.")
    table = pd.DataFrame(summary_records(res, labels))
    table = table[["method", "verdict"] + [c for c in table.columns if c not in ("method", "verdict")]]
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(c, format="%.3f") for c in table.columns if c not in ("method", "verdict")})
    for r in res.rows:
        if not r.ok:
            st.warning(f"**{labels[r.method]}**: {r.problem} — no deletion, insertion or stability numbers.")
        for kind, why in r.stability_problems.items():
            st.caption(f"{labels[r.method]}, {PERTURBATION_LABELS[kind]}: {why} — no ρ.")
    if len(res.agreement_methods) >= 2:
        show_chart(agreement_figure(res.agreement, [labels[m] for m in res.agreement_methods],
                                    f"{name} (#{target})"), key="summary_agreement")
    st.caption(f"{res.steps} steps, removed pixels → {res.baseline}; crop keeps {res.crop:.0%} of each side "
               f"(maps compared on the overlap), JPEG quality {res.jpeg_quality}; {res.seconds:.1f} s.")


with friendly_errors("The trust checks"):
    handle = current_handle()
    target = pick_target(handle, key="trust_target")
    x = handle.input_tensor(current_image())
    tab0, tab1, tab2 = st.tabs(["Summary", "Deletion / insertion", "Model randomisation (sanity check)"])

    with tab0:
        summary_tab(handle, target)

    with tab1:
        st.markdown("Pixels are removed (deletion) or revealed (insertion) in the order a map ranks them, and the "
                    "class probability is tracked. A faithful map makes the probability **fall fast** on deletion "
                    "(low AUC) and **rise fast** on insertion (high AUC).")
        with st.form("di_form"):
            methods = st.multiselect("Methods", list(METHODS), default=["saliency", "guided_backprop", "gradcam",
                                                                        "integrated_gradients"],
                                     format_func=_label)
            c1, c2 = st.columns(2)
            steps = c1.slider("Steps", 8, 64, 24, 4)
            baseline = c2.selectbox("Removed pixels become", ["blur", "zero", "mean"])
            run = st.form_submit_button("Run", type="primary")
        if requested("di_request", (handle.key, target, tuple(methods), steps, baseline), run):
            fig = make_subplots(rows=1, cols=2, subplot_titles=("Deletion (lower is better)",
                                                                "Insertion (higher is better)"))
            rows = []
            for i, m in enumerate(methods):
                try:
                    attr = run_method(handle, target, m, {})
                except NotDefined as e:
                    st.warning(f"{_label(m)}: {e}")
                    continue
                key = cache_key("di", handle.key, image_id(), target, m, attr.params, steps, baseline)
                di = cached("deletion_insertion", key,
                            lambda prog: deletion_insertion(handle, x, target, attr.map, steps=steps,
                                                            baseline=baseline, progress=prog),
                            label=f"Deletion/insertion for {_label(m)}…")
                colour = f"hsl({(i * 67) % 360},65%,45%)"
                fig.add_trace(go.Scatter(x=di.fractions, y=di.deletion, name=_label(m), line=dict(color=colour),
                                         legendgroup=m), 1, 1)
                fig.add_trace(go.Scatter(x=di.fractions, y=di.insertion, name=_label(m), line=dict(color=colour),
                                         legendgroup=m, showlegend=False), 1, 2)
                rows.append({"method": _label(m), "deletion AUC ↓": round(di.auc_deletion, 4),
                             "insertion AUC ↑": round(di.auc_insertion, 4)})
            fig.update_xaxes(title="fraction of pixels", range=[0, 1])
            fig.update_yaxes(title="class probability", range=[0, 1])
            fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10))
            show_chart(fig, key="di_fig")
            st.dataframe(pd.DataFrame(rows), hide_index=True)

    with tab2:
        st.markdown("Adebayo et al. 2018: randomise the weights **from the top layer down**, one block more at "
                    "each step, on a copy of the model, and recompute each map. A map that explains the *model* "
                    "must change as the model is destroyed. Guided backprop barely changes — it mostly shows "
                    "image edges — while Grad-CAM and the plain gradient do.")
        blocks = default_blocks(handle.net)
        with st.form("sanity_form"):
            methods2 = st.multiselect("Methods", FAST, default=[m for m in ("guided_backprop", "gradcam", "saliency")
                                                               if m in FAST], format_func=_label)
            c1, c2 = st.columns(2)
            n_steps = c1.slider("Cascade steps", 1, len(blocks), min(8, len(blocks)),
                                help=f"Blocks spread over the network (of {len(blocks)}), top first; each step "
                                     "randomises everything from the top down to its block.")
            seed = c2.number_input("Seed", 0, 2**31 - 1, 0)
            run2 = st.form_submit_button("Run sanity check", type="primary")
        layers = _pick_steps(blocks, n_steps)
        req2 = (handle.key, target, tuple(methods2), tuple(layers), int(seed))
        if requested("sanity_request", req2, run2) and methods2:
            key = cache_key("sanity", handle.key, image_id(), target, methods2, layers, int(seed))
            res = cached("sanity", key, lambda prog: cascading_randomization(
                handle, x, target, list(methods2), layers=layers, seed=int(seed), progress=prog),
                label="Randomising layers and recomputing maps…", size=8)
            for m in res.methods:
                bad = degenerate_steps(res, m)
                if bad:
                    where = "; ".join(f"after {s}: {p}" for s, p in bad)
                    st.warning(f"**{_label(m)}** — {where}. No ranking to compare, so no ρ is drawn there "
                               "(open markers in the top strip).")
            fig = rank_corr_figure(res, {m: _label(m) for m in res.methods},
                                   handle.labels[target] if 0 <= target < len(handle.labels) else None)
            show_chart(fig, key="sanity_corr")
            show_steps = sorted({0, 1, len(res.steps) // 2, len(res.steps) - 1} & set(range(len(res.steps))))
            titles = [f"{_label(m)}<br>" + (f"after {res.steps[s]}" if s else "unchanged copy")
                      + (" (no ranking)" if res.degenerate.get(m, [False] * len(res.steps))[s] else "")
                      for m in res.methods for s in show_steps]
            grid = make_subplots(rows=len(res.methods), cols=len(show_steps), subplot_titles=titles,
                                 horizontal_spacing=0.01, vertical_spacing=0.09)
            for r, m in enumerate(res.methods, start=1):
                for c, s in enumerate(show_steps, start=1):
                    mp = res.maps[m][s]
                    signed = res.signed.get(m, False)
                    z = mp / (np.abs(mp).max() or 1.0)
                    grid.add_trace(go.Heatmap(z=z, **colour_scale(z, signed, 1.0).heatmap(), showscale=False,
                                              hovertemplate="%{z:.3f}<extra></extra>"), r, c)
            grid.update_xaxes(showticklabels=False)
            grid.update_yaxes(showticklabels=False, autorange="reversed")
            grid.update_layout(height=250 * len(res.methods) + 60, margin=dict(l=10, r=10, t=60, b=10))
            show_chart(grid, key="sanity_grid")
            st.caption(f"{len(res.steps) - 1} cascade steps, {res.seconds:.1f} s. Step 'none' is the unchanged copy "
                       "(ρ = 1 by construction).")
