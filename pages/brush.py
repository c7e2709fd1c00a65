"""What if I hide this? Paint rectangles over the photo, see the prediction of the edited photo at once, and
compare the change with the share of each attribution map that lies in the painted region.

The canvas is ``streamlit-image-coordinates`` 0.4.1 with ``click_and_drag``: each drag reports one rectangle
(press and release corners, in displayed pixels). ``streamlit-drawable-canvas`` was tried and does not work with
Streamlit 1.67: 0.13.0 fails to import (components v2), 0.9.3 imports but calls ``streamlit.elements.image.
image_to_url``, which no longer exists, as soon as it is given a background photo — so freehand strokes are out,
rectangles are in. Rectangles accumulate in the session (per photo); Undo drops the last, Clear all.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageDraw
from streamlit_image_coordinates import streamlit_image_coordinates

from interpret.attribution.registry import METHODS
from interpret.core.errors import CnnLensError
from interpret.evaluation.edits import (FILL_LABELS, FILLS, EditEffect, apply_edit, crop_box, edit_effect,
                                        input_rects, mean_grey, rect_mask, segment_image)
from interpret.plots.attribution import grid_figure
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, cached
from pages._ui.explain_ui import display_image, run_method
from pages._ui.gate import requested
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, current_image, image_id, image_name, model_caption, set_image
from pages._ui.target import pick_target, probabilities

DISPLAY_W = 480   # px the photo is drawn at (small photos scaled up, large ones down)
DEFAULT_METHODS = ("saliency", "gradcam", "integrated_gradients", "occlusion")
RECTS, SEEN, NOTE, METHODS_REQ = "brush_rects", "brush_seen", "brush_note", "brush_methods_request"


def quick_params(method: str, size: int) -> dict:
    """Fast settings: IG with 8 steps (Gauss–Legendre); occlusion on a 14 × 14 grid of non-overlapping patches
    (16 px at 224²). Measured on the 2 shared CPU cores here with EfficientNet-Lite0: IG at 16 steps took 15 s,
    occlusion 12 s, saliency 1 s, Grad-CAM 0.6 s."""
    if method == "integrated_gradients":
        return {"steps": 8}
    if method == "occlusion":
        side = max(2, size // 14)
        return {"window": side, "stride": side}
    return {}


def _rects_for(iid: str) -> list:
    """The rectangles painted on this photo (a new photo starts with none)."""
    ss = st.session_state
    if ss.get("brush_image") != iid:
        ss["brush_image"], ss[RECTS] = iid, []
        ss.pop(NOTE, None)
    return ss[RECTS]


def _take_stroke(value: dict | None, size: tuple[int, int]) -> None:
    """Add the rectangle of a new drag (``value`` from the canvas) in image pixels, or note that it painted
    nothing; a value already seen (every rerun repeats the last one) is ignored."""
    ss = st.session_state
    if not value or "x1" not in value or value.get("unix_time") == ss.get(SEEN):
        return
    ss[SEEN] = value.get("unix_time")
    w, h = size
    sx, sy = w / max(float(value.get("width") or w), 1.0), h / max(float(value.get("height") or h), 1.0)
    xa, xb = sorted((float(value["x1"]) * sx, float(value["x2"]) * sx))
    ya, yb = sorted((float(value["y1"]) * sy, float(value["y2"]) * sy))
    # clipped to the photo: a drag released outside it would otherwise be outlined past its edge
    rect = (max(0, int(np.floor(xa))), max(0, int(np.floor(ya))), min(w, int(np.ceil(xb))), min(h, int(np.ceil(yb))))
    if not rect_mask((h, w), [rect]).any() or min(xb - xa, yb - ya) < 1:
        ss[NOTE] = ("That stroke painted nothing: press on the photo and drag to the opposite corner of the "
                    "region to hide, then release.")
        return
    ss.pop(NOTE, None)
    ss[RECTS] = ss[RECTS] + [rect]
    st.rerun()


def _display(edited: np.ndarray, rects: list, box: tuple[float, float, float, float]) -> Image.Image:
    """The edited photo at ``DISPLAY_W`` px wide, dimmed outside ``box`` (what the model sees) and with each
    painted rectangle outlined."""
    h, w = edited.shape[:2]
    scale = DISPLAY_W / w
    img = Image.fromarray(edited).resize((DISPLAY_W, max(1, round(h * scale))),
                                         Image.NEAREST if scale > 1 else Image.BILINEAR)
    bx0, by0, bx1, by1 = (round(v * scale) for v in box)
    if (bx0, by0, bx1, by1) != (0, 0, img.width, img.height):
        dim = np.asarray(img, dtype=np.float32) * 0.45
        dim[by0:by1, bx0:bx1] = np.asarray(img, dtype=np.float32)[by0:by1, bx0:bx1]
        img = Image.fromarray(dim.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1 in rects:
        draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=(255, 0, 80), width=3)
    return img


def _before_after_figure(eff: EditEffect, labels: list[str]) -> go.Figure:
    """Grouped horizontal bars: the probability of each class in the top 5 before or after, before vs after."""
    before, after = eff.probs_before, eff.probs_after
    classes = list(dict.fromkeys([c for c, _, _ in eff.top_before] + [c for c, _, _ in eff.top_after]))
    classes.sort(key=lambda c: -before[c])
    names = [f"{labels[c]} (#{c})" for c in classes]
    fig = go.Figure([
        go.Bar(y=names, x=[before[c] for c in classes], name="original photo", orientation="h",
               marker_color="rgb(150,150,150)", hovertemplate="%{y}: %{x:.1%}<extra>original</extra>"),
        go.Bar(y=names, x=[after[c] for c in classes], name="with the region hidden", orientation="h",
               marker_color="rgb(31,119,180)", hovertemplate="%{y}: %{x:.1%}<extra>edited</extra>")])
    fig.update_layout(barmode="group", height=170 + 44 * len(classes), margin=dict(l=10, r=20, t=120, b=60),
                      title=dict(text=f"Top classes before / after hiding<br>target {eff.label} (#{eff.target}): "
                                      f"{eff.p_before:.1%} → {eff.p_after:.1%}", font=dict(size=17), y=0.98,
                                 yanchor="top"),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0), font=dict(size=15))
    fig.update_xaxes(title_text="probability", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title_text="class", title_standoff=12, autorange="reversed", automargin=True)
    return fig


def _maps_figure(handle, attrs: list, boxes: list) -> go.Figure:
    """The maps over the image as the model sees it, the painted region outlined on each."""
    fig = grid_figure(display_image(handle), attrs, common_norm=True, cols=4, label=handle.labels[attrs[0].target],
                      method_labels={a.method: METHODS[a.method].label for a in attrs})
    for i in range(len(attrs)):
        ax = "" if i == 0 else str(i + 1)
        for x0, y0, x1, y1 in boxes:  # go.Image puts pixel centres on integers
            fig.add_shape(type="rect", xref=f"x{ax}", yref=f"y{ax}", x0=x0 - 0.5, y0=y0 - 0.5, x1=x1 - 0.5,
                          y1=y1 - 0.5, line=dict(color="rgb(0,230,255)", width=3))
    return fig


def _share_table(eff: EditEffect) -> pd.DataFrame:
    rows = []
    for m, s in eff.shares.items():
        ratio = None if s.value is None or eff.area_share <= 0 else s.value / eff.area_share
        rows.append({"method": METHODS[m].label,
                     "share of the map in the region": None if s.value is None else round(s.value, 3),
                     "share of the image (area)": round(eff.area_share, 3),
                     "map share ÷ area": None if ratio is None else round(ratio, 2),
                     "note": s.reason})
    return pd.DataFrame(rows)


def _use_edited(name: str, img: Image.Image) -> None:
    set_image(name, img)


st.title("What if I hide this?")
model_caption()
st.caption("Test a map: drag rectangles over a region of the photo, choose how it is hidden, and see how the "
           "prediction changes. Below, each method's map says how much of its positive mass lies in the region: a "
           "map that is right predicts a big drop where its share is big (and little change where it is small).")

with friendly_errors("The brush test"):
    handle = current_handle()
    photo = current_image()
    iid = image_id()
    arr = np.asarray(photo.convert("RGB"))
    H, W = arr.shape[:2]
    rects = _rects_for(iid)
    target = pick_target(handle, key="brush_target")

    left, right = st.columns([5, 4], gap="large")
    with left:
        c1, c2 = st.columns([3, 2])
        fill = c1.radio("Fill of the hidden region", FILLS, format_func=FILL_LABELS.get, horizontal=False,
                        key="brush_fill",
                        help="Grey: the model's mean colour (its zero input, as occlusion's patch). Blur: the photo "
                             "blurred with a Gaussian. Superpixel mean: each painted pixel takes the mean colour "
                             "of its SLIC superpixel (LIME's hiding).")
        sigma = c2.slider("Blur radius σ (px of the photo)", 1.0, 30.0, 8.0, 0.5, key="brush_sigma",
                          disabled=fill != "blur")
        segments = None
        if fill == "segment_mean" and rects:
            segments = cached("brush_segments", cache_key(iid, "slic"),
                              lambda prog: segment_image(arr, "slic", 0), label="Cutting the photo into "
                              "superpixels…", size=8)
        edit_key = cache_key(iid, rects, fill, sigma if fill == "blur" else None, mean_grey(handle))
        edited = cached("brush_edits", edit_key,
                        lambda prog: apply_edit(arr, rect_mask((H, W), rects), fill, sigma=sigma,
                                                grey=mean_grey(handle), segments=segments),
                        progress=False, size=4) if rects else arr
        shown = _display(edited, rects, crop_box(handle, W, H))
        st.markdown("**Drag on the photo** to paint a rectangle; drag again to add more. The model sees the "
                    "bright part only (its centre crop).")
        value = streamlit_image_coordinates(shown, key=f"brush_canvas_{iid}", click_and_drag=True,
                                            width=DISPLAY_W, png_compression_level=1, cursor="crosshair")
        _take_stroke(value, (W, H))
        b1, b2, b3 = st.columns(3)
        if b1.button("Undo", key="brush_undo", disabled=not rects, help="Remove the last rectangle."):
            st.session_state[RECTS] = rects[:-1]
            st.rerun()
        if b2.button("Clear", key="brush_clear", disabled=not rects, help="Remove every rectangle."):
            st.session_state[RECTS] = []
            st.rerun()
        edited_img = Image.fromarray(edited)
        b3.button("Use the edited image", key="brush_use", disabled=not rects, on_click=_use_edited,
                  args=(image_name().removesuffix(" (edited)") + " (edited)", edited_img),
                  help="Make the edited photo the session's image, for every other page.")
        if st.session_state.get(NOTE):
            st.warning(st.session_state[NOTE])

    methods_box = st.container()
    if not rects:
        right.info("Nothing is painted yet: drag a rectangle over the part of the photo you want to hide.")
    else:
        mask = rect_mask((H, W), rects)
        size = handle.input_size[0]
        with methods_box:
            st.subheader("What did each map predict for this region?")
            with st.form("brush_methods_form"):
                chosen = st.multiselect("Methods (quick settings: IG 8 steps, occlusion on a 14 × 14 patch grid)",
                                        list(METHODS), default=list(DEFAULT_METHODS),
                                        format_func=lambda m: METHODS[m].label, key="brush_methods")
                pressed = st.form_submit_button("Compute the maps", type="primary")
            asked = requested(METHODS_REQ, (handle.key, iid, target, tuple(chosen)), pressed)
            attrs, skipped = [], []
            for m in chosen if asked else ():
                try:
                    attrs.append(run_method(handle, target, m, quick_params(m, size)))
                except CnnLensError as e:  # one method's refusal (not defined, bad setting) leaves the others
                    skipped.append((METHODS[m].label, str(e)))
            maps = {a.method: a.map for a in attrs}
        eff = cached("brush_effects", cache_key(handle.key, iid, edit_key, target, sorted(maps)),
                     lambda prog: edit_effect(handle, photo, edited_img, mask, target, maps,
                                              probs_before=probabilities(handle)),
                     progress=False, size=16)
        with right:
            st.metric(f"P({eff.label})", f"{eff.p_after:.1%}", f"{eff.change * 100:+.1f} points",
                      help="Probability of the target class for the edited photo, and its change.")
            st.caption(f"{len(rects)} rectangle(s), {eff.area_share:.1%} of what the model sees. Top class: "
                       f"{eff.top_before[0][1]} → {eff.top_after[0][1]}.")
            show_chart(_before_after_figure(eff, handle.labels), key="brush_bars")
        with methods_box:
            if asked:
                if maps:
                    st.dataframe(_share_table(eff), hide_index=True, width="stretch")
                    st.caption(f"Hiding the region changed P({eff.label}) by {eff.change * 100:+.1f} points. A "
                               "method whose share is much larger than the area share claims the region matters; "
                               "if the probability barely moved, the map overstated it (or the fill still carries "
                               "the evidence).")
                    show_chart(_maps_figure(handle, attrs, input_rects(handle, W, H, rects)), key="brush_maps")
                for label, why in skipped:
                    st.warning(f"{label} not shown: {why}")
            else:
                st.info("Pick the methods and press **Compute the maps** (computed once per photo and class; the "
                        "shares then follow your rectangles at once).")
