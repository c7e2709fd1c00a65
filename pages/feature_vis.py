"""Synthesized images (activation maximization) on the synthesis core: presets (Lucent's quality recipe, quick,
custom with every switch), an objective built from weighted terms or typed as text, a batch with a diversity
term, a live preview, the batch as a row, the objective's curve and a zip export.

Speed: one optimisation per session at a time — any new run of this page cancels the old one through the core's
``cancel=`` at its next step (Streamlit alone would stop it only at its next Streamlit call); the settings form
does not submit on Enter; the preview is drawn every ``PREVIEW_EVERY`` steps only."""
from __future__ import annotations

import threading
from dataclasses import asdict, replace

import numpy as np
import streamlit as st

from interpret.core.layers import capture
from interpret.plots.synthesis import batch_row_figure, objective_curve_figure
from interpret.units.synthesis import objectives as O
from interpret.units.synthesis.export import export_zip, safe_stem
from interpret.units.synthesis.render import Settings, preset, synthesize
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, cached
from pages._ui.gate import require
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, current_image, image_id, model_caption
from pages._ui.target import probabilities
from pages._ui.units_ui import layer_picker, stop_button

PREVIEW_EVERY = 16  # steps between previews: a PNG encode + websocket message costs ~10 ms (see the README)
KINDS = {"channel": "channel (mean of its map)", "neuron": "neuron (one unit)", "logit": "class logit",
         "direction": "direction (like the photo)", "diversity": "diversity of the batch"}
PRESET_NAMES = {"quality": "Quality (Lucent's recipe)", "quick": "Quick", "custom": "Custom"}

# A new run of this page in this session makes any optimisation still running for it obsolete: stop it at its
# next step (its thread would otherwise compute on until its next Streamlit call, beside the new run).
_old = st.session_state.get("syn_cancel")
if _old is not None:
    _old.set()

st.title("Synthesized images")
model_caption()
st.caption("Start from noise and change the image, step by step, so that a chosen objective grows — activation "
           "maximization (Simonyan et al. 2014; regularisation and the quality recipe as in Lucid/Lucent). "
           "Without regularisers the result is high-frequency noise the network likes; each switch under "
           "*Custom* removes some of it.")

REGULARISERS = """
- **Pad / jitter / scale / rotation / second jitter**: before every step the image is padded with grey, randomly
  shifted, rescaled, rotated and shifted again, so only patterns that excite the unit wherever they are survive.
- **Upsample**: the optimised image (e.g. 128²) is resized to the model's input before the network.
- **Fourier parameterisation**: the optimiser changes frequencies, scaled by 1/f, instead of pixels — a smooth
  image is easy to reach, noise is hard. **Decorrelated colour**: steps are taken in ImageNet's decorrelated
  colour space, so colours look natural.
- **L2** pulls pixels towards grey; **total variation** punishes differences between neighbours; **blur** smooths
  the image every few steps.
- **Diversity** (batch ≥ 2) rewards images whose channel correlations (Gram matrices) differ: several different
  images of one unit.
"""


@st.cache_resource(show_spinner="Measuring this model's time per step (once)…", max_entries=32)
def _ms_per_step(model_key: str, batch: int, _handle) -> float:
    """Measured ms per step of the quality preset on this model (3 steps after one warm-up step; once per model
    and batch size)."""
    obj = O.logit(0)
    synthesize(_handle, obj, preset("quality", steps=1, batch=batch, progress_every=0))
    res = synthesize(_handle, obj, preset("quality", steps=3, batch=batch, progress_every=0))
    return 1e3 * res.seconds / max(len(res.history), 1)


@st.cache_data(show_spinner=False, max_entries=32)
def _photo_vector(model_key: str, img_key: str, layer: str, call: int, _handle, _img) -> tuple[float, ...]:
    """The current image's channel-mean vector at ``layer`` (C,): the direction "like this photo"."""
    x = _handle.input_tensor(_img)
    with capture(_handle, layer, call, stop=call >= 0) as cap:
        cap.run(x)
        out = cap.output
    a = out if out.dim() == 4 else out.reshape(out.shape[0], -1, 1, 1)
    return tuple(float(v) for v in a[0].float().mean(dim=(1, 2)).cpu())


def _row(handle, i: int) -> tuple[O.Objective, tuple]:
    """One row of the objective builder: weight × term."""
    cols = st.columns([1, 2, 4, 2])
    weight = float(cols[0].number_input("Weight", -100.0, 100.0, 1.0 if i == 0 else 0.5, 0.1, key=f"syn_w{i}",
                                        help="Negative: push this term down (\"class A minus class B\")."))
    kind = cols[1].selectbox("Kind", list(KINDS), index=2 if i == 0 else 0, format_func=KINDS.get,
                             key=f"syn_k{i}")
    if kind == "logit":
        p = probabilities(handle)
        labels = handle.labels
        with cols[2]:
            cls = st.selectbox("Class (type to search)", range(len(labels)), index=int(np.argmax(p)),
                               format_func=lambda c: f"{labels[c]} (#{c})", key=f"syn_cls{i}_{handle.key}",
                               help="All classes of the model; the current image's prediction is preselected.")
        return O.logit(int(cls)) * weight, ("logit", int(cls), weight)
    with cols[2]:
        entry, call = layer_picker(handle, f"syn_r{i}")
    if kind == "diversity":
        cols[3].caption("needs a batch ≥ 2")
        return O.diversity(entry.name, call_index=call) * weight, ("diversity", entry.name, call, weight)
    if kind == "direction":
        vec = _photo_vector(handle.key, image_id(), entry.name, call, handle, current_image())
        cols[3].caption("the current image's channel means at this layer")
        return (O.direction(entry.name, vec, call_index=call) * weight,
                ("direction", entry.name, call, image_id(), weight))
    n_ch = entry.calls[call][0]
    ch = int(cols[3].number_input("Channel", 0, n_ch - 1, 0, 1, key=f"syn_ch{i}_{handle.key}_{entry.name}"))
    make = O.channel if kind == "channel" else O.neuron
    return make(entry.name, ch, call_index=call) * weight, (kind, entry.name, call, ch, weight)


def _from_text(handle, text: str) -> tuple[O.Objective, tuple]:
    """``O.parse`` of the text; ``direction(layer, image)`` gets the current image's vector at that layer."""
    placeholder = (1.0,)
    obj = O.parse(text, {"image": np.asarray(placeholder)})
    terms = []
    for t in obj.terms:
        if t.kind == "direction" and t.vector == placeholder:
            t = replace(t, vector=_photo_vector(handle.key, image_id(), t.layer, t.call_index, handle,
                                                current_image()))
        terms.append(t)
    return O.Objective(tuple(terms)), ("text", text, image_id() if "direction" in text else None)


def _image_title(objective: O.Objective, i: int, labels) -> str:
    """What image ``i`` of the batch maximises: the terms for all images or for it (the batch-wide diversity term
    left out), with class names."""
    own = O.Objective(tuple(t for t in objective.terms if t.kind != "diversity" and t.batch in (None, i)))
    return f"image {i}: {own.describe(labels)}" if own.terms else f"image {i}"


def _settings_form(handle, which: str) -> tuple[Settings, bool, float]:
    """The form with the run's settings (Enter does not submit it: only the button starts a run)."""
    base = preset("quick" if which == "quick" else "quality")
    side = int(handle.input_size[0])
    with st.form("syn_form", enter_to_submit=False):
        a, b, c, d = st.columns(4)
        batch = int(a.number_input("Batch (images)", 1, 8, 1, 1, key="syn_batch"))
        seed = int(b.number_input("Seed", 0, 2**31 - 1, 0, 1, key="syn_seed"))
        div_w = float(c.number_input("Diversity weight", 0.0, 1000.0, 0.0, 10.0, key="syn_div",
                                     help="Added to the objective when the batch has ≥ 2 images, at the "
                                          "first row's layer (or the layer below). The term is 1 − the mean "
                                          "Gram cosine, often a few hundredths: try 50–200 (Lucent's examples "
                                          "use 100 of its scale, about 100 × (batch − 1) of ours)."))
        over: dict = {"batch": batch, "seed": seed}
        if which == "custom":
            steps = int(d.number_input("Steps", 1, 4096, 128, 16, key="syn_steps"))
            sizes = sorted({s for s in (64, 96, 128, 160, 224, side) if s <= max(side, 128)})
            e, f, g, h = st.columns(4)
            size = int(e.selectbox("Image size", sizes, index=sizes.index(min(128, side)) if min(128, side) in sizes
                                   else 0, key="syn_size", format_func=lambda s: f"{s}×{s}"))
            lr = float(f.select_slider("Learning rate", [0.01, 0.02, 0.05, 0.1, 0.2], value=0.05, key="syn_lr"))
            st.markdown("**Regularisers**")
            r1, r2, r3, r4 = st.columns(4)
            pad = r1.checkbox("Pad 12 px grey", True, key="syn_pad")
            jitter = r1.checkbox("Jitter 8 px", True, key="syn_jitter")
            scale = r1.checkbox("Random scale 0.9–1.1", True, key="syn_scale")
            rotate = r1.checkbox("Random rotation ±10°", True, key="syn_rotate")
            jitter2 = r2.checkbox("Second jitter 4 px", True, key="syn_jitter2")
            upsample = r2.checkbox("Upsample to the model's input", True, key="syn_upsample")
            fourier = r2.checkbox("Fourier parameterisation", True, key="syn_fourier")
            decorrelate = r2.checkbox("Decorrelated colour", True, key="syn_decorrelate")
            use_l2 = r3.checkbox("L2 penalty", False, key="syn_use_l2")
            l2 = r3.number_input("L2 weight", 0.0, 100.0, 1.0, 0.5, key="syn_l2")
            use_tv = r3.checkbox("Total variation", False, key="syn_use_tv")
            tv = r3.number_input("TV weight", 0.0, 100.0, 1.0, 0.5, key="syn_tv")
            use_blur = r4.checkbox("Blur", False, key="syn_use_blur")
            blur_every = int(r4.number_input("Blur every N steps", 1, 64, 4, 1, key="syn_blur_every"))
            blur_sigma = float(r4.number_input("Blur σ (px)", 0.1, 5.0, 0.5, 0.1, key="syn_blur_sigma"))
            over.update(steps=steps, size=size, lr=lr, param="fourier" if fourier else "pixel",
                        decorrelate=decorrelate, pad=base.pad if pad else 0, jitter=base.jitter if jitter else 0,
                        scale=base.scale if scale else 0.0, rotate=base.rotate if rotate else 0,
                        jitter2=base.jitter2 if jitter2 else 0, upsample=upsample,
                        l2=float(l2) if use_l2 else 0.0, tv=float(tv) if use_tv else 0.0,
                        blur_every=blur_every if use_blur else 0, blur_sigma=blur_sigma)
        else:
            d.markdown(f"**{base.steps} steps** at {base.size}², Adam lr {base.lr}")
        run = st.form_submit_button("Synthesize", type="primary")
    s = replace(base, **over)
    return replace(s, progress_every=min(PREVIEW_EVERY, s.steps)), run, div_w


with friendly_errors("The synthesis"):
    handle = current_handle()
    which = st.radio("Preset", list(PRESET_NAMES), format_func=PRESET_NAMES.get, horizontal=True,
                     key="syn_preset", help="Quality: 512 steps, Fourier + decorrelated colour, pad, jitter, "
                                            "scale, rotate, jitter, upsample (Lucent's render_vis). Quick: the "
                                            "same recipe with 64 steps. Custom: every switch.")

    st.markdown("**Objective** (maximised)")
    mode = st.radio("Write it as", ["rows", "text"], horizontal=True, key="syn_mode",
                    format_func={"rows": "weighted terms", "text": "text"}.get, label_visibility="collapsed")
    if mode == "rows":
        n_rows = int(st.number_input("Terms", 1, 4, 1, 1, key="syn_nrows",
                                     help="The objective is the weighted sum of the rows."))
        parts = [_row(handle, i) for i in range(n_rows)]
        objective = sum((p[0] for p in parts), O.Objective(()))
        obj_key: tuple = tuple(p[1] for p in parts)
        div_layer = next(((t.layer, t.call_index) for t in objective.terms if t.layer), None)
    else:
        text = st.text_input("Objective as text", "logit(espresso)", key="syn_text",
                             help="Terms channel(layer, n), neuron(layer, n[, y, x]), logit(class), "
                                  "direction(layer, image) (like the current photo), diversity(layer), each "
                                  "with an optional leading weight `0.5*` and trailing `image=i`; joined by + "
                                  "and −. Example: channel(_blocks.6, 3) + 0.5*channel(_blocks.6, 7)")
        objective, obj_key = _from_text(handle, text)
        div_layer = next(((t.layer, t.call_index) for t in objective.terms if t.layer), None)

    settings, run, div_w = _settings_form(handle, which)
    if div_w and settings.batch >= 2:
        if div_layer is None:
            with st.expander("Diversity layer", expanded=True):
                entry, call = layer_picker(handle, "syn_div")
            div_layer = (entry.name, call)
        objective = objective + div_w * O.diversity(div_layer[0], call_index=div_layer[1])
    labels = getattr(handle, "labels", None)
    st.caption(f"Maximising: **{objective.describe(labels)}**")
    if which == "quality":
        ms = _ms_per_step(handle.key, settings.batch, handle)
        st.caption(f"Expected duration on this machine: about {ms * settings.steps / 1e3:.0f} s "
                   f"({settings.steps} steps × {ms:.0f} ms, measured for {handle.name}, batch {settings.batch}).")
    with st.expander("What each regulariser does"):
        st.markdown(REGULARISERS)

    req = (handle.key, obj_key, div_w, tuple(sorted(asdict(settings).items())))
    require("syn_request", req, run, "Build the objective and choose the settings, then press **Synthesize**.")

    stop = stop_button("syn_stop", "Stop", "Interrupts the optimisation; nothing partial is kept.", "syn_request",
                       "Stopped. Press **Synthesize** to start again.")
    live = st.empty()
    cancel = threading.Event()
    st.session_state["syn_cancel"] = cancel

    def run_opt(report):
        steps = settings.steps

        def progress(step: int, value: float, images: np.ndarray) -> None:
            report(step / steps)
            if step < steps:
                row = np.concatenate(list(np.clip(images, 0, 1)), axis=1)
                live.image((row * 255).astype(np.uint8), caption=f"step {step} of {steps}: objective {value:.4g}",
                           width=min(160 * len(images), 800))

        res = synthesize(handle, objective, settings, progress=progress, cancel=cancel)
        if res.cancelled:  # superseded by a newer run of this page: keep nothing partial in the cache
            st.stop()
        return res

    result = cached("synthesis", cache_key(*req), run_opt,
                    label=f"Optimising {settings.batch} image(s) for {objective.describe(labels)}…", size=24)
    stop.empty()
    live.empty()

    n = len(result.history)
    st.markdown(f"**{result.objective}** — {n} steps in {result.seconds:.1f} s "
                f"({1e3 * result.seconds / max(n, 1):.1f} ms/step, server side); objective "
                f"{result.history[0]:.4g} → {result.history[-1]:.4g}.")
    titles = [_image_title(objective, i, labels) for i in range(result.images.shape[0])]
    show_chart(batch_row_figure(result, titles, height=320 if result.images.shape[0] > 1 else 380), key="syn_row")
    show_chart(objective_curve_figure(result), key="syn_curve")
    stem = f"synth_{safe_stem(result.objective, 40)}_seed{settings.seed}"
    st.download_button("Download images + settings (zip)", export_zip(result, stem), file_name=f"{stem}.zip",
                       mime="application/zip", key="syn_download",
                       help="Every image as PNG and settings.json (objective, settings, per-step values).")
