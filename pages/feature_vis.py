"""Synthesized images (activation maximization): optimise an image to excite a channel of a layer or a class
logit, with each regulariser switchable so one can see what it does."""
from __future__ import annotations

import re

import numpy as np
import streamlit as st

from interpret.units.feature_vis import Settings, channel_objective, logit_objective, synthesize
from interpret.plots.units import feature_vis_figure
from models.images import from_array
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, cached
from pages._ui.gate import require
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, model_caption, png_bytes
from pages._ui.target import probabilities
from pages._ui.units_ui import layer_picker, stop_button

st.title("Synthesized images")
model_caption()
st.caption("Start from noise and change the image, step by step, so that a chosen channel (or a class score) "
           "grows — activation maximization (Simonyan et al. 2014; regularisation as in Lucid/Lucent). Without "
           "regularisers the result is high-frequency noise the network likes; each switch below removes some "
           "of it.")

REGULARISERS = """
- **Jitter / scale / rotation**: the image is randomly shifted, rescaled and rotated before every step, so only
  patterns that excite the unit wherever they are survive (no pixel-exact adversarial noise).
- **Fourier parameterisation**: the optimiser changes frequencies, scaled by 1/f, instead of pixels — a smooth
  image is easy to reach, noise is hard. **Decorrelated colour**: steps are taken in ImageNet's decorrelated
  colour space, so colours look natural.
- **L2** pulls pixels towards grey; **total variation** punishes differences between neighbours; **blur** smooths
  the image every few steps.
"""

with friendly_errors("The synthesis"):
    handle = current_handle()
    objective_kind = st.radio("Objective", ["channel", "logit"], horizontal=True, key="fv_objective",
                              format_func={"channel": "A channel of a layer", "logit": "A class (logit)"}.get)
    if objective_kind == "channel":
        c1, c2 = st.columns([3, 1])
        with c1:
            entry, call = layer_picker(handle, "fv")
        with c2:
            n_ch = entry.calls[call][0]
            channel = int(st.number_input("Channel", 0, n_ch - 1, 0, 1, key=f"fv_ch_{handle.key}_{entry.name}"))
        objective = channel_objective(entry.name, channel, call_index=call)
        obj_key: tuple = ("channel", entry.name, call, channel)
        what = f"{entry.name}, channel {channel}"
    else:
        p = probabilities(handle)
        options = [f"{lab} (#{i})" for i, lab in enumerate(handle.labels)]
        cls = st.selectbox("Class (type to search)", range(len(options)), index=int(np.argmax(p)),
                           format_func=lambda i: options[i], key=f"fv_class_{handle.key}",
                           help="All classes of the model; the current image's prediction is preselected.")
        objective = logit_objective(int(cls))
        obj_key = ("logit", int(cls))
        what = f"class {handle.labels[cls]}"

    side = handle.input_size[0]
    sizes = sorted({s for s in (64, 96, 128, 160, 224, side) if s <= max(side, 128)})
    with st.form("fv_form"):
        a, b, c, d = st.columns(4)
        steps = int(a.number_input("Steps", 1, 1024, 64, 8, key="fv_steps"))
        size = int(b.selectbox("Image size", sizes, index=sizes.index(min(128, side)) if min(128, side) in sizes
                               else 0, key="fv_size", format_func=lambda s: f"{s}×{s}"))
        seed = int(c.number_input("Seed", 0, 2**31 - 1, 0, 1, key="fv_seed"))
        lr = float(d.select_slider("Learning rate", [0.01, 0.02, 0.05, 0.1, 0.2], value=0.05, key="fv_lr"))
        st.markdown("**Regularisers**")
        r1, r2, r3, r4 = st.columns(4)
        jitter = r1.checkbox("Jitter ±8 px", True, key="fv_jitter")
        scale = r1.checkbox("Random scale ±10 %", True, key="fv_scale")
        rotate = r1.checkbox("Random rotation ±10°", True, key="fv_rotate")
        fourier = r2.checkbox("Fourier parameterisation", True, key="fv_fourier")
        decorrelate = r2.checkbox("Decorrelated colour", True, key="fv_decorrelate")
        use_l2 = r3.checkbox("L2 penalty", False, key="fv_use_l2")
        l2 = r3.number_input("L2 weight", 0.0, 100.0, 1.0, 0.5, key="fv_l2")
        use_tv = r3.checkbox("Total variation", False, key="fv_use_tv")
        tv = r3.number_input("TV weight", 0.0, 100.0, 1.0, 0.5, key="fv_tv")
        use_blur = r4.checkbox("Blur", False, key="fv_use_blur")
        blur_every = int(r4.number_input("Blur every N steps", 1, 64, 4, 1, key="fv_blur_every"))
        blur_sigma = float(r4.number_input("Blur σ (px)", 0.1, 5.0, 0.5, 0.1, key="fv_blur_sigma"))
        run = st.form_submit_button("Synthesize", type="primary")
    with st.expander("What each regulariser does"):
        st.markdown(REGULARISERS)

    settings = Settings(steps=steps, size=size, lr=lr, param="fourier" if fourier else "pixel",
                        decorrelate=decorrelate, jitter=8 if jitter else 0, scale=0.1 if scale else 0.0,
                        rotate=10.0 if rotate else 0.0, l2=float(l2) if use_l2 else 0.0,
                        tv=float(tv) if use_tv else 0.0, blur_every=blur_every if use_blur else 0,
                        blur_sigma=blur_sigma, seed=seed, progress_every=max(1, min(8, steps // 8 or 1)))
    req = (handle.key, obj_key, tuple(sorted(vars(settings).items())))
    require("fv_request", req, run, "Choose the objective and settings, then press **Synthesize**.")

    stop = stop_button("fv_stop", "Stop", "Interrupts the optimisation; nothing partial is kept.", "fv_request",
                       "Stopped. Press **Synthesize** to start again.")
    live = st.empty()

    def run_opt(report):
        def progress(step: int, value: float, image: np.ndarray) -> None:
            report(step / steps)
            live.image(image, caption=f"step {step} of {steps}: objective {value:.4g}", width=256, clamp=True)

        return synthesize(handle, objective, settings, progress=progress)

    result = cached("feature_vis", cache_key(*req), run_opt, label=f"Optimising the image for {what}…", size=24)
    stop.empty()
    live.empty()

    title = result.objective if objective_kind == "channel" else f"logit of {what}"
    st.markdown(f"**{title}** — {len(result.history)} steps in {result.seconds:.1f} s; objective "
                f"{result.history[0]:.4g} → {result.history[-1]:.4g}.")
    fig = feature_vis_figure(result).update_layout(height=420)
    show_chart(fig, key="fv_result")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", what)
    st.download_button("Download PNG", png_bytes(from_array(result.image)), file_name=f"synth_{name}_seed{seed}.png",
                       mime="image/png", key="fv_download")
