"""Unit ablation: zero chosen units (or every detector of a concept) for one computation and see what the network
loses — accuracy on normal and cue-flipped classroom images (or a labelled folder), against as many random units
of the same layers, and the current image's top 5 before and after."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from interpret.cli.ablate import STORY_SEED, classroom_sets, relu_layers
from interpret.evaluation import ablation as ab
from interpret.units import dissection as dis
from models.classroom.dataset import CONCEPTS
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, cached
from pages._ui.gate import require
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, current_image, image_id, image_name, model_caption
from pages._ui.units_ui import layer_picker

st.title("Unit ablation")
model_caption()
st.caption("Set chosen units (channels of a layer) to zero for this computation only — the shared model is not "
           "changed — and measure what the network loses. The control is as many *random* units of the same "
           "layers: units matter only if zeroing them costs more than zeroing random ones.")

FOLDER_ENV = "CNN_LENS_LABELLED_DIR"
MODES = {"hand": "Pick units by hand", "concept": "Detectors of a concept (dissection)"}


def _pct(a: float) -> str:
    return f"{100 * a:.1f} %"


def _dissection(handle, layers: tuple[str, ...], n: int):
    """The classroom dissection of ``layers`` (cached per model + layers + images, with a progress bar)."""
    data_key = cache_key("dissection", handle.key, handle.source, layers, n, dis.DISSECTION_SEED)
    return cached("ablation_dissection", data_key, lambda report: dis.dissect(
        handle, dis.classroom_dissection_data(n=n), list(layers), progress=lambda d, t: report(d / max(t, 1))),
        label=f"Dissecting {len(layers)} layer(s) on {n} generated images…", size=8)


def _top5_table(rows: list[tuple[int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame({"class": [lab for _, lab, _ in rows], "probability": [round(p, 4) for _, _, p in rows]})


def _results_table(rep: ab.AblationReport) -> pd.DataFrame:
    out = []
    for name in rep.baseline:
        c = rep.control.get(name)
        out.append({"data set": name, "images": rep.n_images[name], "intact": _pct(rep.baseline[name]),
                    "chosen units zeroed": _pct(rep.ablated[name]),
                    "random units zeroed (mean ± std)": f"{_pct(c.mean)} ± {100 * c.std:.1f}" if c else "–",
                    "random min … max": f"{_pct(c.min)} … {_pct(c.max)}" if c else "–"})
    return pd.DataFrame(out)


with friendly_errors("Unit ablation"):
    handle = current_handle()
    classroom = handle.family == "classroom"
    modes = ["hand", "concept"] if classroom else ["hand"]
    mode = st.radio("Which units", modes, format_func=MODES.get, horizontal=True, key="abl_mode")
    if not classroom:
        st.caption("Choosing *all detectors of a concept* needs concept masks: only the classroom models have "
                   "them (pick one in the sidebar).")

    if mode == "hand":
        entry, _ = layer_picker(handle, "abl")
        n_ch = entry.calls[-1][0]
        layers: tuple[str, ...] = (entry.name,)
    else:
        all_layers = relu_layers(handle)
        layers = tuple(st.multiselect("Layers to dissect", all_layers, default=all_layers[-2:],
                                      key=f"abl_layers_{handle.key}",
                                      help="The ReLU outputs of the classroom CNN, in order."))
    with st.form("abl_form"):
        if mode == "hand":
            chosen = st.multiselect(f"Units of {entry.name} to zero (channels 0…{n_ch - 1})", list(range(n_ch)),
                                    default=[0], key=f"abl_units_{handle.key}_{entry.name}")
        else:
            c1, c2 = st.columns(2)
            concept = c1.selectbox("Concept", CONCEPTS, index=CONCEPTS.index("tag"), key="abl_concept",
                                   help="'tag' is the Clever Hans corner mark; the others are the shapes, any "
                                        "object, the background kinds and the distractors.")
            min_iou = float(c2.number_input("Detector threshold (IoU ≥)", 0.0, 1.0, 0.04, 0.01, format="%.2f",
                                            key="abl_min_iou"))
        c1, c2 = st.columns(2)
        draws = int(c1.number_input("Random control draws", 1, 20, 5, 1, key="abl_draws",
                                    help="Each draw zeroes as many random units of the same layers (never one "
                                         "of the chosen units, where the layer has enough others)."))
        if classroom:
            n = int(c2.number_input("Generated images per set", 30, 1200, 300, 30, key="abl_n",
                                    help="Normal: the model's own test distribution; cue-flipped: every class but "
                                         "the tag class carries the tag, the tag class never."))
        else:
            folder = os.environ.get(FOLDER_ENV, "")
            use_folder = c2.checkbox(f"Accuracy on the labelled folder {folder}", bool(folder), key="abl_folder",
                                     disabled=not folder,
                                     help="Images in sub-folders named after the model's classes. To offer one, "
                                          f"start the app with {FOLDER_ENV}=/path/to/folder.")
        go_run = st.form_submit_button("Run", type="primary")

    if mode == "hand":
        req = (handle.key, mode, layers, tuple(chosen), draws)
    else:
        req = (handle.key, mode, layers, concept, min_iou, draws)
    req += (n,) if classroom else (use_folder,)
    req += (image_id(),)
    require("abl_request", req, go_run, "Choose the units, then press **Run**.")

    if mode == "hand":
        if not chosen:
            st.warning("Choose at least one unit to zero.")
            st.stop()
        units = {entry.name: list(chosen)}
    else:
        if not layers:
            st.warning("Choose at least one layer to dissect.")
            st.stop()
        d = _dissection(handle, layers, n)
        units = ab.units_from_dissection(d, concept, layers, min_iou)
        if not units:
            st.warning(f"No unit of {', '.join(layers)} detects '{concept}' at IoU ≥ {min_iou:.2f}: lower the "
                       "threshold or choose other layers.")
            st.stop()
        st.markdown(f"**Detectors of '{concept}'** (IoU ≥ {min_iou:.2f}, best concept of the unit; dissection of "
                    f"{d.n_images} generated test images, seed {dis.DISSECTION_SEED}, the tag on 10 % of images "
                    "whatever the class — the Dissection page's *clean* tag rates, as the story in README): " + "; ".join(
                        f"{L}: " + ", ".join(f"{u} ({d.layers[L].iou[u, d.layers[L].concepts.index(concept)]:.2f})"
                                             for u in us) for L, us in units.items()))

    img = current_image()
    if classroom:
        sets = cached("ablation_sets", cache_key(handle.key, n), lambda report: classroom_sets(handle.key, n, STORY_SEED),
                      progress=False, size=4)
        where = f"{n} generated images per set"
    elif use_folder:
        imgs, labels, skipped = cached("ablation_folder", cache_key(handle.key, folder), lambda report:
                                       ab.labelled_folder(handle, folder), label="Reading the folder…", size=2)
        if skipped:
            st.caption(f"{len(skipped)} files left out (e.g. {skipped[0]}).")
        sets = {"folder": (imgs, labels)}
        where = f"{len(imgs)} labelled images"
    else:
        sets = {}
        where = ""

    def compute(report):
        if not sets:
            chosen_units = ab.check_units(handle, units)
            return ab.AblationReport(chosen_units, {}, {}, {}, [], {}, 0, ab.prediction_change(handle, img,
                                                                                                chosen_units))
        return ab.ablation_report(handle, sets, units, random_draws=draws, seed=0, image=img,
                                  progress=lambda done, total: report(done / max(total, 1)))

    rep = cached("ablation", cache_key(*req, sorted(units.items())), compute,
                 label=f"Measuring {ab.count_units(units)} ablated units against {draws} random draws…", size=16)

    st.subheader(f"{rep.n_units} units zeroed: " + "; ".join(f"{L} {us}" for L, us in rep.units.items()))
    if rep.baseline:
        st.dataframe(_results_table(rep), hide_index=True, width="stretch")
        show_chart(ab.accuracy_figure(rep, title=f"{handle.name}: {rep.n_units} units zeroed<br>"
                                                 f"<sup>accuracy on {where}</sup>"), key="abl_chart")
        with st.expander("The random draws"):
            st.dataframe(pd.DataFrame([{"draw": i + 1, "units": "; ".join(f"{L} {us}" for L, us in d.items()),
                                        **{name: _pct(rep.control[name].draws[i]) for name in rep.baseline}}
                                       for i, d in enumerate(rep.control_units)]), hide_index=True)
        for note in rep.notes:
            st.caption(note)
    elif not classroom:
        st.caption(f"Only the prediction change on the current image: set {FOLDER_ENV} to a labelled folder to "
                   "measure accuracy too.")
    p = rep.prediction
    st.markdown(f"**{image_name()}**: p({p.target_label}) {p.p_before:.1%} → **{p.p_after:.1%}** with the units "
                "zeroed.")
    c1, c2 = st.columns(2)
    c1.markdown("Top 5, intact")
    c1.dataframe(_top5_table(p.before), hide_index=True)
    c2.markdown("Top 5, units zeroed")
    c2.dataframe(_top5_table(p.after), hide_index=True)
