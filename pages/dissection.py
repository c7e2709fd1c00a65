"""Dissection: label units by concept (Network Dissection, Bau et al. 2017) where the concept masks are known —
the classroom models, against the generator's exact masks — and, for any model, class selectivity over labelled
images (Morcos et al. 2018)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from plotly.subplots import make_subplots

from interpret.plots.colour import colour_scale
from interpret.units import dissection as DS
from interpret.units import selectivity as SE
from interpret.units.top_patches import scan
from models.classroom import VARIANTS
from models.collections import from_folder, from_images, from_zip
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, cached
from pages._ui.gate import require
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, model_caption
from pages._ui.units_ui import spatial_layers

st.title("Dissection")
model_caption()

COLLECTION_ENV = "CNN_LENS_COLLECTION_DIR"
CLASSROOM_LAYERS = ["features.2", "features.9", "features.16", "features.23"]
FONT = dict(size=16)
MASK_COLOUR = "#00e5ff"


@st.cache_resource(show_spinner="Generating the classroom images and their concept masks…", max_entries=4)
def _classroom_data(n: int, spurious: bool) -> DS.ConceptData:
    return DS.classroom_dissection_data("test", n, spurious=spurious)


def _layer_names(handle) -> list[str]:
    return [e.name for e in spatial_layers(handle.key, handle) if e.calls[-1][1] * e.calls[-1][2] > 1]


def _counts_figure(ld: DS.LayerDissection, min_iou: float, model: str) -> go.Figure:
    counts = ld.counts(min_iou)
    fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), marker_color="#3366cc",
                           text=[str(v) if v else "" for v in counts.values()], textposition="outside"))
    fig.update_layout(title=f"{model} · {ld.layer}: units detecting each concept (IoU ≥ {min_iou:g})",
                      xaxis_title="concept", yaxis_title="detector units", font=FONT, height=420,
                      margin=dict(t=70, b=90), yaxis=dict(rangemode="tozero"))
    return fig


def _unit_figure(image: np.ndarray, amap: np.ndarray, mask: np.ndarray, threshold: float, title: str,
                 concept: str) -> go.Figure:
    """The image and the unit's upsampled map side by side, the concept mask outlined on both and the map's
    thresholded region (what the IoU counts) dashed on the map."""
    H, W = mask.shape
    cs = colour_scale(amap)
    fig = make_subplots(1, 2, subplot_titles=("image with the concept mask", "unit's map (upsampled)"),
                        horizontal_spacing=0.08)
    fig.add_trace(go.Image(z=image), 1, 1)
    fig.add_trace(go.Heatmap(z=amap, **cs.heatmap(), colorbar=dict(title="activation", x=1.02),
                             hovertemplate="y %{y}, x %{x}: %{z:.3g}<extra></extra>"), 1, 2)
    for col in (1, 2):
        fig.add_trace(go.Contour(z=mask.astype(float), showscale=False, contours=dict(start=0.5, end=0.5, size=1,
                                 coloring="none"), line=dict(color=MASK_COLOUR, width=3), name=f"{concept} mask",
                                 showlegend=col == 1, hoverinfo="skip"), 1, col)
    fig.add_trace(go.Contour(z=(amap > threshold).astype(float), showscale=False,
                             contours=dict(start=0.5, end=0.5, size=1, coloring="none"),
                             line=dict(color="white", width=2, dash="dash"), name="map > threshold",
                             hoverinfo="skip"), 1, 2)
    for col in (1, 2):
        fig.update_xaxes(range=[-0.5, W - 0.5], title_text="x (pixels)", row=1, col=col, constrain="domain")
        fig.update_yaxes(range=[H - 0.5, -0.5], title_text="y (pixels)", row=1, col=col, scaleanchor=f"x{col}",
                         constrain="domain")
    fig.update_layout(title=title, font=FONT, height=520, legend=dict(orientation="h", y=-0.18),
                      margin=dict(t=90))
    return fig


def _class_means_figure(ls: SE.LayerSelectivity, unit: int, model: str) -> go.Figure:
    order = np.argsort(-ls.means[:, unit], kind="stable")[:30]
    fig = go.Figure(go.Bar(x=[ls.classes[c] for c in order], y=ls.means[order, unit], marker_color="#3366cc"))
    si = ls.index()[unit]
    fig.update_layout(title=f"{model} · {ls.layer} unit {unit}: mean activation per class (SI {si:.2f})",
                      xaxis_title="class", yaxis_title="mean activation", font=FONT, height=420,
                      margin=dict(t=70, b=110))
    return fig


def _dissection_view(handle) -> None:
    st.caption("Network Dissection: each unit's map is thresholded at its top 0.5 % activation over the dataset, "
               "upsampled to the image, and compared (IoU) with every concept's exact mask from the shapes "
               "generator: the six shapes, any object, the corner tag, the four background kinds and the "
               "distractors. A unit is a detector of its best concept when IoU ≥ the threshold.")
    names = _layer_names(handle)
    default = [n for n in CLASSROOM_LAYERS if n in names] or names[-1:]
    spurious_own = handle.key == "classroom_spurious"
    with st.form("dis_form"):
        layers = st.multiselect("Layers", names, default=default, key=f"dis_layers_{handle.key}",
                                help="Module paths with a spatial map; the defaults are the ReLUs ending each block.")
        c1, c2, c3, c4 = st.columns(4)
        n = int(c1.number_input("Images", 60, 1200, 600, 60, key="dis_n",
                                help="Generated test images (a seed no model was trained on)."))
        qpct = float(c2.number_input("Top activation quantile (%)", 0.1, 5.0, 0.5, 0.1, key="dis_q"))
        min_iou = float(c3.number_input("Detector IoU threshold", 0.01, 0.5, 0.04, 0.01, key="dis_iou"))
        cues = c4.selectbox("Tag rates of the data", ["this model's training data", "clean (10 %, any class)",
                                                      "Clever Hans (95 % of stars)"], key="dis_cues")
        go_run = st.form_submit_button("Run dissection", type="primary")
    spurious = spurious_own if cues.startswith("this") else cues.startswith("Clever")
    if not layers:
        st.warning("Choose at least one layer.")
        st.stop()
    req = (handle.key, tuple(layers), n, qpct, spurious)
    require("dis_request", req, go_run, "Choose the layers, then press **Run dissection**.")
    data = _classroom_data(n, spurious)

    def compute(report):
        return DS.dissect(handle, data, list(layers), qpct / 100.0, 0.04,
                          progress=lambda d, t: report(d / max(t, 1)), batch_size=50)

    d = cached("dissection", cache_key(*req), compute, label=f"Dissecting {len(layers)} layer(s) over {n} images…",
               size=8)
    st.markdown(f"**{data.source}** — {d.n_images} images, {len(layers)} layer(s), {d.seconds:.1f} s.")
    layer = st.selectbox("Layer to show", list(d.layers), key=f"dis_show_{handle.key}")
    ld = d.layers[layer]
    show_chart(_counts_figure(ld, min_iou, handle.name), key="dis_counts")
    best = ld.best()
    table = pd.DataFrame([{"unit": u, "concept": c, "IoU": round(v, 4), "threshold": round(float(ld.thresholds[u]), 4),
                           "detector": v >= min_iou} for u, c, v in best])
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Units by IoU**")
        st.dataframe(table, hide_index=True, height=420, key="dis_table")
    with right:
        labels = [f"unit {u} — {c}, IoU {v:.3f}" for u, c, v in best]
        pick = st.selectbox("Unit", labels, key=f"dis_unit_{handle.key}_{layer}",
                            help="Units sorted by their best IoU; its top patches and its map follow.")
        unit, concept, iou = best[labels.index(pick)]
        k = data.concepts.index(concept)

        def top(report):
            col = from_images([(f"image {i}", _pil(data.images[i])) for i in range(len(data))], data.source)
            return scan(handle, col, layer, [unit], k=6, batch_size=50,
                        progress=lambda a, b: report(a / max(b or 1, 1)))

        tp = cached("dissection_patches", cache_key(handle.key, data.source, layer, unit), top,
                    label="Finding the unit's top patches…", size=32)
        patches = tp.patches.get(unit, [])
        st.markdown(f"**Unit {unit}**: best concept **{concept}** (IoU {iou:.3f}). Top patches (above) and the "
                    f"**{concept}** mask inside the same field (below, white):")
        if patches:
            st.image([p.patch for p in patches], caption=[f"{p.value:.3g} · #{p.image_index}" for p in patches],
                     width=90)
            st.image([_mask_crop(data.masks[p.image_index, k], p.box) for p in patches], width=90)
    # start at the strongest patch's image that shows the concept (else the first image that does)
    has = data.masks[:, k].any(axis=(1, 2))
    choices = [p.image_index for p in patches if has[p.image_index]] or list(np.nonzero(has)[0][:1]) or [0]
    i = int(st.number_input("Image for the map (index into the generated images)", 0, len(data) - 1,
                            int(choices[0]), 1, key=f"dis_img_{handle.key}_{layer}_{unit}",
                            help="Starts at the image of the unit's strongest patch that shows its concept."))
    amap = DS.unit_map(handle, data.images[i], layer, unit)
    cls = data.label_names[int(data.labels[i])] if data.labels is not None and data.label_names else "?"
    title = f"{handle.name} · {layer} unit {unit} ({concept}) on image {i} (a {cls})"
    show_chart(_unit_figure(data.images[i], amap, data.masks[i, k], float(ld.thresholds[unit]), title, concept),
               key="dis_unit_map")


def _pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a)


def _mask_crop(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, x0, y1, x1 = box
    crop = mask[y0:y1, x0:x1]
    return np.repeat((crop * 255).astype(np.uint8)[..., None], 3, axis=2)


def _labelled_collection(handle, source: str, upload):
    """(collection or arrays, description): the classroom split (classes known), the server folder or an uploaded
    zip (class = sub-folder name)."""
    if source == "classroom":
        data = _classroom_data(600, handle.key == "classroom_spurious")
        return data, data.source
    if source == "folder":
        col = from_folder(os.environ[COLLECTION_ENV], max_files=5000)
        return col, f"{len(col)} images in {col.source}"
    if upload is None:
        return None, ""
    col = from_zip(upload.getvalue())
    return col, f"{len(col)} images in {upload.name}"


def _selectivity_view(handle) -> None:
    st.caption("Class selectivity (Morcos et al. 2018): per unit, its mean activation (spatial mean of its map) "
               "over the images of each class, the classes that drive it most, and the selectivity index "
               "SI = (μ_max − μ_rest) / (μ_max + μ_rest): 1 when one class alone drives the unit, 0 when all do "
               "alike. Classes are the sub-folder names of a labelled image folder.")
    names = _layer_names(handle)
    sources = {}
    if handle.key in VARIANTS:
        sources["classroom"] = "Generated classroom shapes (600, six classes)"
    if os.environ.get(COLLECTION_ENV):
        sources["folder"] = f"Server folder ({os.environ[COLLECTION_ENV]})"
    sources["upload"] = "Upload a zip with one folder per class"
    source = st.radio("Labelled images", list(sources), format_func=sources.get, horizontal=True,
                      key=f"sel_source_{handle.key}")
    upload = None
    if source == "upload":
        upload = st.file_uploader("Zip of images in one sub-folder per class (cat/001.jpg, dog/002.jpg, …)",
                                  type=["zip"], key="sel_upload", max_upload_size=200)
    default = [n for n in CLASSROOM_LAYERS if n in names] or names[-1:]
    with st.form("sel_form"):
        layers = st.multiselect("Layers", names, default=default, key=f"sel_layers_{handle.key}")
        go_run = st.form_submit_button("Compute selectivity", type="primary")
    if not layers:
        st.warning("Choose at least one layer.")
        st.stop()
    data, desc = _labelled_collection(handle, source, upload)
    if data is None:
        st.info("Upload a zip of labelled images, then press **Compute selectivity**.")
        st.stop()
    ident = desc if source != "upload" else f"{upload.name}:{upload.size}:{upload.file_id}"
    req = (handle.key, tuple(layers), source, ident)
    require("sel_request", req, go_run, "Choose the images and layers, then press **Compute selectivity**.")

    def compute(report):
        if isinstance(data, DS.ConceptData):
            return SE.selectivity_of_arrays(handle, data.images, data.labels, data.label_names, layers,
                                            source=data.source, progress=lambda d, t: report(d / max(t, 1)))
        return SE.selectivity_of_collection(handle, data, layers, progress=lambda d, t: report(d / max(t, 1)))

    sel = cached("selectivity", cache_key(*req), compute, label=f"Reading {desc}…", size=8)
    st.markdown(f"**{sel.source}** — {sel.n_images} images, {len(sel.classes)} classes, {sel.seconds:.1f} s.")
    if sel.skipped:
        with st.expander(f"{len(sel.skipped)} file(s) skipped"):
            st.dataframe(pd.DataFrame(sel.skipped, columns=["file", "reason"]), hide_index=True)
    layer = st.selectbox("Layer to show", list(sel.layers), key=f"sel_show_{handle.key}")
    ls = sel.layers[layer]
    rank = ls.ranking()
    if any(np.isnan(si) for _, _, si in rank):
        st.caption("The selectivity index (μ_max − μ_rest)/(μ_max + μ_rest) is defined for non-negative units (e.g. "
                   "ReLU outputs); units of this layer with a negative class mean show no SI (nan) and are listed "
                   "last. Pick a ReLU layer to rank every unit.")
    rows = []
    for u, _, si in rank:
        tops = ls.top_classes(u, 3)
        rows.append({"unit": u, "SI": round(si, 3), **{f"class {j + 1}": f"{c} ({m:.3g})" for j, (c, m) in
                                                         enumerate(tops)}})
    left, right = st.columns([2, 3])
    left.markdown("**Units by selectivity index**")
    left.dataframe(pd.DataFrame(rows), hide_index=True, height=420, key="sel_table")
    labels = [f"unit {u} — {c}, SI {si:.2f}" for u, c, si in rank]
    pick = right.selectbox("Unit", labels, key=f"sel_unit_{handle.key}_{layer}")
    unit = rank[labels.index(pick)][0]
    show_chart(_class_means_figure(ls, unit, handle.name), key="sel_means", container=right)


with friendly_errors("Dissection"):
    handle = current_handle()
    views = ["Concepts (Network Dissection)", "Class selectivity"] if handle.key in VARIANTS else ["Class selectivity"]
    if handle.key not in VARIANTS:
        st.info(f"{handle.name} has no concept masks (only the classroom models' generated images do), so units "
                "cannot be dissected by concept here; class selectivity over labelled images works for any model.")
    view = st.radio("View", views, horizontal=True, key=f"dis_view_{len(views)}")
    if view.startswith("Concepts"):
        _dissection_view(handle)
    else:
        _selectivity_view(handle)
