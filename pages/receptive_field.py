"""Receptive fields: the analytic per-layer table (kernel, stride, padding, dilation → r, S, P), how r grows,
and one unit's analytic box next to its empirical gradient footprint."""
from __future__ import annotations

import streamlit as st

from interpret.core.errors import InputError
from interpret.units.receptive_field import gradient_footprint, mask_bbox, unit_box
from interpret.plots.units import image_box_figure, rf_growth_figure
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, cached
from pages._ui.gate import requested
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, current_image, image_id, model_caption
from pages._ui.units_ui import layer_picker, linearized, model_view, safe_rf_table

st.title("Receptive fields")
model_caption()

FOOTPRINT = {
    "linear": "Linearised copy (ReLU → identity, max → average pooling, positive weights)",
    "real": "The real model on the current image",
}

with friendly_errors("The receptive-field view"):
    handle = current_handle()
    table = safe_rf_table(handle)
    if table is None:
        raise InputError(f"{handle.name} contains layers without a box-shaped receptive field (upsampling); "
                         "the table cannot be computed.")
    H, W = table.input_size
    st.markdown(
        f"Unit *u* of a layer sees input pixels *u·S − P … u·S − P + r − 1* of the {H}×{W} input. "
        "A layer with kernel *k*, stride *s*, padding *p* and dilation *d* on top of (r, S, P) gives "
        "**r′ = r + d·(k − 1)·S**, **S′ = s·S**, **P′ = P + p·S**; where paths merge (residual add, "
        "concatenation) the union of the fields is taken (maximum over paths).")
    df = table.to_dataframe()
    st.dataframe(df, hide_index=True, width="stretch", height=360, key="rf_table")
    st.caption(f"{len(df)} layer calls, {table.note}. Values are per axis; one number where height and width "
               "agree.")
    show_chart(rf_growth_figure(table).update_layout(height=300), key="rf_growth")

    st.subheader("One unit: analytic box vs. gradient footprint")
    c1, c2 = st.columns([3, 2])
    with c1:
        entry, call = layer_picker(handle, "rf")
    row = table.row(entry.name, call)
    h, w = row.size
    with st.form("rf_unit"):
        a, b, c, d = st.columns(4)
        ch = int(a.number_input("Channel", 0, max(row.channels - 1, 0), 0, 1, key=f"rf_ch_{handle.key}"))
        i = int(b.number_input("Unit row i", 0, h - 1, h // 2, 1, key=f"rf_i_{handle.key}_{entry.name}"))
        j = int(c.number_input("Unit column j", 0, w - 1, w // 2, 1, key=f"rf_j_{handle.key}_{entry.name}"))
        kind = d.radio("Footprint on", list(FOOTPRINT), format_func=lambda k: FOOTPRINT[k].split(" (")[0],
                       key="rf_kind", help="; ".join(FOOTPRINT.values()))
        run = st.form_submit_button("Compute footprint", type="primary")
    box = unit_box(table, entry.name, (i, j), call_index=call)
    raw = row.box((i, j))
    img = model_view(handle)
    left, right = st.columns(2)
    with left:
        show_chart(image_box_figure(img, box, title=f"analytic field of unit ({i}, {j})")
                   .update_layout(height=420), key="rf_box")
        clipped = " — clipped to the image" if tuple(raw) != tuple(box) else ""
        st.caption(f"{entry.name}: r = {row.r[0]}, S = {row.S[0]}, P = {row.P[0]}. Box rows {raw[0]}…{raw[2] - 1}, "
                   f"columns {raw[1]}…{raw[3] - 1}{clipped}.")
    req = (handle.key, image_id(), entry.name, call, ch, i, j, kind)
    with right:
        if not requested("rf_request", req, run):
            st.info("Choose a unit and press **Compute footprint** to see which input pixels have a nonzero "
                    "gradient for it.")
        else:
            if ch >= row.channels:
                raise InputError(f"channel {ch} out of range 0..{row.channels - 1}")
            x = handle.input_tensor(current_image())

            def compute(prog):
                if kind == "linear":
                    lin = linearized(handle.key, handle.net)
                    return gradient_footprint(lin, entry.name, ch, (i, j), x, call_index=call)
                return gradient_footprint(handle, entry.name, ch, (i, j), x, call_index=call)

            mask = cached("rf_footprints", cache_key(*req), compute, label="Backward pass…", progress=False,
                          size=32)
            fb = mask_bbox(mask)
            show_chart(image_box_figure(img, box, footprint=mask, title=f"gradient footprint ({kind})")
                       .update_layout(height=420), key="rf_footprint")
            if fb is None:
                st.warning("No input pixel has a nonzero gradient for this unit (a dead unit on this image). "
                           "Try the linearised copy.")
            else:
                same = tuple(fb) == tuple(box)
                verdict = ("**matches** the analytic box" if same else
                           "lies inside the analytic box" if (fb[0] >= box[0] and fb[1] >= box[1] and
                                                             fb[2] <= box[2] and fb[3] <= box[3])
                           else "**exceeds** the analytic box")
                st.caption(f"Footprint: {int(mask.sum()):,} pixels, bounding box rows {fb[0]}…{fb[2] - 1}, "
                           f"columns {fb[1]}…{fb[3] - 1} — {verdict}. Magenta: pixels with a nonzero gradient; "
                           "yellow: the analytic box.")
                if kind == "real" and not same:
                    st.caption("On the real model, ReLUs that are off and max-pooling routes cut parts of the "
                               "field away; the linearised copy shows the whole field.")
