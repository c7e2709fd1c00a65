"""Classroom walk-through: the slides' analysis sequence on a CNN small enough to look at completely, trained on
generated shapes whose object masks are known — ending with a model that learned the wrong thing."""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from interpret.units.synthesis import objectives as SO, render as syn
from interpret.units import top_patches as tp
from models.collections import from_images
from interpret.units.activations import layer_activations, unit_box
from interpret.units.filters import filter_bank, rgb_filters
from interpret.attribution.registry import METHODS, explain
from interpret.plots.attribution import grid_figure, overlay_figure
from interpret.units.receptive_field import rf_table
from interpret.core.errors import NotDefined
from interpret.plots.synthesis import synthesis_figure
from interpret.plots.units import (activation_grid_figure, filters_figure, image_box_figure,
                                  rf_growth_figure, top_patches_figure)
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, cached
from pages._ui.gate import requested
from pages._ui.guard import friendly_errors
from pages._ui.state import cached_model, current_handle, page_entered, switch_model

st.title("Classroom walk-through")

STEPS = ["1 · Filters", "2 · Activation maps", "3 · Receptive fields", "4 · Top patches", "5 · Synthesized images",
         "6 · Explanations", "7 · Localization scores", "8 · Clever Hans", "9 · Unit ablation"]
EXPLAIN = ["saliency", "guided_backprop", "gradcam", "cam", "integrated_gradients", "occlusion", "lime"]


@st.cache_resource(show_spinner=False)
def _classroom():
    from models import classroom

    return classroom


@st.cache_data(show_spinner=False)
def _samples():
    return {s.name: (s.image, s.label, s.mask, s.cue_mask) for s in _classroom().samples()}


@st.cache_data(show_spinner="Looking for a tag that flips the Clever Hans model…")
def _flip_example(_spur, _clean, key: str) -> tuple[str, int, int, bool]:
    """A (class, seed, corner) whose image the Clever Hans model calls the cue class only when the tag is on,
    while the clean model gets it right either way — the most confident such flip among a fixed set of
    candidates; (…, False) if none flips."""
    cr = _classroom()
    best, score = None, -1.0
    for lab in cr.CLASSES:
        if lab == cr.CUE_CLASS:
            continue
        for seed in range(12):
            for corner in range(4):
                p = cr.clever_hans_pair(lab, corner=corner, seed=seed)
                pw, pn = _spur.predict(p.with_cue), _spur.predict(p.without_cue)
                cue = cr.CLASSES.index(cr.CUE_CLASS)
                if (pw.argmax() == cue and pn.argmax() == p.label
                        and _clean.predict(p.with_cue).argmax() == p.label and pw[cue] > score):
                    best, score = (lab, seed, corner), float(pw[cue])
    return (*best, True) if best else ("square", 0, 1, False)


def _u(img) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _run(handle, img, target, method, params=None):
    digest = hashlib.sha256(np.asarray(img).tobytes()).hexdigest()[:16]
    key = cache_key("classroom", handle.key, digest, target, method, params or {})
    x = handle.input_tensor(img)
    return cached("classroom_attr", key, lambda prog: explain(handle, x, target, method, **(params or {})),
                  progress=False, size=128)


with friendly_errors("The classroom walk-through"):
    cr = _classroom()
    # One model selector: the sidebar's Network list. Entering the page with another model switches to the
    # clean classroom CNN (once, said below); picking another model here afterwards is respected.
    handle = current_handle()
    if handle.key not in cr.VARIANTS:
        if page_entered():
            st.session_state["classroom_switched_from"] = handle.name
            switch_model(next(iter(cr.VARIANTS)))
        st.info("This walk-through runs on the classroom CNNs. Choose **" + "** or **".join(cr.VARIANTS.values())
                + "** in the sidebar's **Network** list.")
        st.stop()
    came_from = st.session_state.pop("classroom_switched_from", None)
    st.caption(("Switched the network from " + came_from + " to the classroom CNN. " if came_from else "")
               + f"Network: **{handle.name}** (change it in the sidebar). {handle.notes}")
    samples = _samples()
    names = list(samples)
    step = st.radio("Step", STEPS, horizontal=True, key="classroom_step")

    if step == STEPS[0]:
        st.markdown("**What it shows.** The weights of the first convolution, one small colour image per filter "
                    "(each filter scaled to its own min…max). Early filters respond to colours and oriented edges — "
                    "as in the slide of AlexNet's 96 filters.  \n**Caveat.** Only the first layer is directly "
                    "visible as images; deeper filters act on feature maps, not on colours.")
        bank = filter_bank(handle)
        show_chart(filters_figure(rgb_filters(bank), bank, title=f"{bank.layer}: {bank.weight.shape[0]} "
                                    f"filters of {bank.weight.shape[2]}×{bank.weight.shape[3]}×3"),
                   key="cr_filters")

    elif step == STEPS[1]:
        st.markdown("**What it shows.** The feature maps of one layer for one image: where each channel fires. "
                    "**Caveat.** A map says *where* a channel fires, not *what* it detects — that needs the next steps.")
        pick = st.selectbox("Image", names, key="cr_act_img")
        layers = [n for n, m in handle.net.named_modules() if type(m).__name__ == "ReLU"]
        layer = st.selectbox("Layer", layers, index=len(layers) // 2, key="cr_act_layer")
        acts = layer_activations(handle, samples[pick][0], layer)
        c1, c2 = st.columns([2, 1])
        show_chart(activation_grid_figure(acts, max_maps=32), key="cr_act_grid", container=c1)
        ch = int(acts.order("max")[0])
        s = acts.stats()
        unit = (int(s["argmax_i"][ch]), int(s["argmax_j"][ch]))
        box = unit_box(handle, acts, unit)
        show_chart(image_box_figure(_u(samples[pick][0]), box, title=f"channel {ch}, unit {unit}: its field"),
                   key="cr_act_box", container=c2)

    elif step == STEPS[2]:
        st.markdown("**What it shows.** How far each layer sees: receptive-field size r and effective stride S, "
                    "layer by layer; pooling doubles S and makes r grow faster.  \n**Caveat.** r is the theoretical "
                    "field; the *effective* field (where the gradient is large) is smaller and Gaussian-like.")
        table = rf_table(handle)
        show_chart(rf_growth_figure(table), key="cr_rf")
        st.dataframe(table.to_dataframe(), hide_index=True, width="stretch")

    elif step == STEPS[3]:
        st.markdown("**What it shows.** For a few channels of a layer, the image patches (cropped to the unit's "
                    "receptive field) that excite them most across 200 generated test images — Zeiler & Fergus.  \n"
                    "**Caveat.** Top patches show what *correlates* with a channel in this data set, not a proof "
                    "of what it computes.")
        layers = [n for n, m in handle.net.named_modules() if type(m).__name__ == "ReLU"]
        layer = st.selectbox("Layer", layers, index=len(layers) - 1, key="cr_tp_layer")
        channels = list(range(4))
        res = cached("classroom_tp", cache_key(handle.key, layer, channels), lambda prog: tp.scan(
            handle, from_images(cr.collection("test", 200)), layer, channels=channels, k=8,
            progress=(lambda d, t: prog(d / max(t, 1)))), label="Scanning 200 images…", size=16)
        for ch in channels:
            padded = [tp.padded_patch(p, res.rf, res.input_size) for p in res.patches.get(ch, [])]
            show_chart(top_patches_figure(res, ch, cols=8, images=padded), key=f"cr_tp_{ch}")

    elif step == STEPS[4]:
        st.markdown("**What it shows.** An image optimised from noise to maximise one class score (Simonyan et al. "
                    "2014), with jitter and a Fourier parameterisation as regularisers.  \n**Caveat.** The result "
                    "shows what *increases* the score, often exaggerated textures — not a typical input.")
        cls = st.selectbox("Class", handle.labels, key="cr_fv_class")
        if requested("cr_fv_req", (handle.key, cls), st.button("Synthesize", key="cr_fv_go")):
            settings = syn.preset("quality", size=64, seed=0)
            res = cached("classroom_fv", cache_key(handle.key, cls, settings), lambda prog: syn.synthesize(
                handle, SO.logit(cls), settings,
                progress=(lambda step, value, img: prog(step / settings.steps))), label="Optimising…", size=16)
            show_chart(synthesis_figure(res), key="cr_fv_fig")

    elif step == STEPS[5]:
        st.markdown("**What it shows.** Several attribution maps for one image and its true class, on one common "
                    "scale, with the object's true outline known.  \n**Caveat.** Methods disagree; an attractive "
                    "map is not necessarily a faithful one (see *Trust*).")
        pick = st.selectbox("Image", names, key="cr_ex_img")
        img, label, mask, _ = samples[pick]
        attrs = []
        for m in EXPLAIN:
            if m in METHODS:
                try:
                    p = {"window": 8, "stride": 4} if m == "occlusion" else (
                        {"num_samples": 300} if m == "lime" else {})
                    attrs.append(_run(handle, img, label, m, p))
                except NotDefined:
                    pass
        show_chart(grid_figure(_u(img), attrs, cols=4, label=handle.labels[label],
                               method_labels={m: spec.label for m, spec in METHODS.items()}), key="cr_ex_grid")
        st.image(np.where(mask[..., None], _u(img), 0.2 * _u(img)), caption="ground-truth object mask", width=192)

    elif step == STEPS[6]:
        st.markdown("**What it shows.** How well each method localises the object on 200 test images: *pointing "
                    "game* (is the map's maximum inside the object mask?) and the share of positive attribution "
                    "inside the mask; for the Clever Hans model also how often the maximum lands on the cue.  \n"
                    "**Caveat.** Good localisation is not faithfulness: a method can outline objects while ignoring "
                    "the model (see the sanity check on *Trust*).")
        from interpret.evaluation import localization

        res = localization.load_result()
        if res is None:
            st.warning("No localization result shipped; compute it with `python -m interpret.evaluation.localization`.")
        else:
            st.markdown(localization.markdown(res))

    elif step == STEPS[8]:
        from interpret.cli import ablate as ablation_story

        st.markdown("**What it shows.** Network Dissection finds, in every layer of both classroom CNNs, the units "
                    "whose strongest activations outline the corner tag (IoU with the tag mask ≥ 0.04: *tag "
                    "detectors*). Each layer's tag detectors are then set to zero and the accuracy measured on "
                    "normal and on cue-flipped images, against as many random units of the same layer.  \n"
                    "**Caveat.** A unit can outline the tag and still be needed for the shapes (early colour "
                    "units): zeroing it costs accuracy on every image. The random control tells the two apart.")
        story = ablation_story.load_story()
        if story is None:
            st.warning("No ablation result shipped; compute it with `python -m interpret ablate --story`.")
        else:
            st.markdown(ablation_story.story_markdown(story))
            st.markdown("**What it means.** " + ablation_story.story_summary(story))
            st.caption(f"Shipped result, computed in {story['seconds']:.0f} s by `python -m interpret ablate "
                       "--story`.")
        c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
        n_live = c1.selectbox("Images per set", [200, 600], index=1, key="cr_abl_n",
                              help="600 repeats the shipped result; 200 takes about a third of the time.")
        if requested("cr_abl_req", (n_live,), c2.button("Rerun live", key="cr_abl_go")):
            live = cached("classroom_ablation", cache_key("ablation_story", n_live), lambda prog:
                          ablation_story.run_story(n=n_live, progress=lambda frac, text: prog(frac)),
                          label=f"Dissecting and ablating both models on {n_live} images per set (minutes)…",
                          size=2)
            st.markdown(f"**Live rerun** ({live['seconds']:.0f} s)")
            st.markdown(ablation_story.story_markdown(live))
            st.markdown("**What it means.** " + ablation_story.story_summary(live))

    else:
        st.markdown("**What it shows.** The Clever Hans model saw the class "
                    f"'{cr.CUE_CLASS}' almost always with a small corner tag in training. Here is the same image with "
                    "and without the tag: the prediction and the explanation follow the tag, not the shape — the "
                    "slides' husky-vs-wolf *snow*.  \n**Caveat.** A tidy map on one image proves nothing; the "
                    "cue-flipped accuracy on many images does.")
        spur = cached_model("classroom_spurious")
        clean = cached_model("classroom_clean")
        method = st.selectbox("Method", [m for m in ("smoothgrad", "lime", "guided_gradcam", "grad_x_input",
                                                     "integrated_gradients", "occlusion", "gradcam") if m in METHODS],
                              format_func=lambda m: METHODS[m].label, key="cr_ch_method")
        lab, seed, corner, flips = _flip_example(spur, clean, spur.source)
        pair = cr.clever_hans_pair(lab, corner=corner, seed=seed)
        if not flips:
            st.info("None of the candidate images flips the Clever Hans model; showing one anyway.")
        cases = [(spur, pair.with_cue, "Clever Hans model, with tag"),
                 (spur, pair.without_cue, "Clever Hans model, no tag"),
                 (clean, pair.with_cue, "clean model, with tag"),
                 (clean, pair.without_cue, "clean model, no tag")]
        params = {"window": 8, "stride": 4} if method == "occlusion" else (
            {"num_samples": 300} if method == "lime" else {})
        # 2 × 2, each map about half the page wide: readable on a projector (four in a row were ~90 px).
        for row in (cases[:2], cases[2:]):
            for col, (h, img, title) in zip(st.columns(2), row):
                probs = h.predict(img)
                pred = int(np.argmax(probs))
                attr = _run(h, img, pred, method, params)
                with col:
                    st.markdown(f"**{title}**  \npredicts **{h.labels[pred]}** ({probs[pred]:.0%}); true: "
                                f"{h.labels[pair.label]}")
                    show_chart(overlay_figure(_u(img), attr, opacity=0.55, label=h.labels[pred], height=460,
                                              method_label=METHODS[method].label), key=f"cr_ch_{title}")
        flipped, n_flipped = cr.accuracies("classroom_spurious")["cue_flipped"]
        st.caption(f"The tag is the small mark in a corner of the first image. The Clever Hans model calls this "
                   f"{lab} a '{cr.CUE_CLASS}' because of the tag; without the tag, or with the clean model, the shape "
                   f"decides. On {n_flipped} cue-flipped test images (every non-{cr.CUE_CLASS} tagged, no "
                   f"{cr.CUE_CLASS} tagged) it is right only {cr.format_accuracy(flipped, n_flipped)} of the time. "
                   "Try Grad-CAM too: its coarse 8×8 map stays on the object and hides the shortcut — one reason to "
                   "look at several methods (step 7 counts how often each lands on the tag).")
