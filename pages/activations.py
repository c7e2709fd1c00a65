"""Activation maps: the feature maps of any layer for the current image, sortable; choosing a unit shows its
channel large and draws the unit's receptive field on the image."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from interpret.units.activations import unit_box
from interpret.plots.units import activation_grid_figure, channel_map_figure, grid_cell, image_box_figure
from pages._ui.charts import show_chart
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, image_name, model_caption
from pages._ui.units_ui import activations, layer_picker, model_view, selectable_grid

st.title("Activation maps")
model_caption()
st.caption("What each channel of a layer computes on the current image. Click a cell of the grid (or type a "
           "channel and unit below) to see that map large and the unit's receptive field on the photo.")

SORT = {"max": "maximum activation", "mean": "mean activation", "channel": "channel index"}

with friendly_errors("The activation view"):
    handle = current_handle()
    c1, c2, c3 = st.columns([3, 2, 2])
    with c1:
        entry, call = layer_picker(handle, "acts")
    with c2:
        by = st.radio("Sort by", list(SORT), format_func=SORT.get, horizontal=True, key="acts_sort")
    with c3:
        n_max = st.select_slider("Maps shown", [16, 36, 64, 100, 144, 256], value=64, key="acts_nmax")
    per_map = st.checkbox("Scale each map to its own range", value=True, key="acts_permap",
                          help="On: weak channels show their structure too (hover shows the raw value). "
                               "Off: one colour scale for all maps, so strong and weak channels can be compared.")
    acts = activations(handle, entry.name, call)
    order = acts.order(by, descending=(by != "channel"))
    ss = st.session_state
    pref = f"acts_{handle.key}_{entry.name}_{call}"
    s = acts.stats()
    top = int(order[0])
    ss.setdefault(f"{pref}_ch", top)
    ss.setdefault(f"{pref}_i", int(s["argmax_i"][top]))
    ss.setdefault(f"{pref}_j", int(s["argmax_j"][top]))

    left, right = st.columns([3, 2])
    with left:
        fig = activation_grid_figure(acts, order, max_maps=n_max, per_map=per_map)
        meta = dict(fig.layout.meta)
        rows = -(-min(n_max, acts.channels) // meta["cols"])
        fig.update_layout(height=int(min(900, max(280, 60 + 560 * rows / meta["cols"]))))
        fig = selectable_grid(fig, acts)
        # One chart widget per ordering, so a click made on another ordering is never reinterpreted.
        grid_key = f"acts_grid_{pref}_{by}_{n_max}"
        event = show_chart(fig, key=grid_key, on_select="rerun", selection_mode=("points",))
        pts = (event.get("selection") or {}).get("points", []) if event else []
        if pts:
            p = pts[0]
            cell = grid_cell(meta, p.get("x", -1), p.get("y", -1))
            if cell is not None and ss.get(f"{grid_key}_last") != cell:  # apply each click once; typing wins after
                ss[f"{grid_key}_last"] = cell
                ss[f"{pref}_ch"], ss[f"{pref}_i"], ss[f"{pref}_j"] = cell
        st.caption(f"{acts.channels} channels of {acts.maps.shape[1]}×{acts.maps.shape[2]} units"
                   + (f" (call {acts.call_index + 1} of {acts.n_calls})" if acts.n_calls > 1 else "")
                   + f", sorted by {SORT[by]}.")
    with right:
        h, w = acts.maps.shape[1:]
        a, b, c = st.columns(3)
        ch = int(a.number_input("Channel", 0, acts.channels - 1, step=1, key=f"{pref}_ch"))
        i = int(b.number_input("Unit row i", 0, h - 1, step=1, key=f"{pref}_i"))
        j = int(c.number_input("Unit column j", 0, w - 1, step=1, key=f"{pref}_j"))
        show_chart(channel_map_figure(acts, ch, (i, j)).update_layout(height=330), key=f"acts_map_{pref}")
        st.markdown(f"Channel **{ch}**: mean {s['mean'][ch]:.4g}, max {s['max'][ch]:.4g} at "
                    f"({int(s['argmax_i'][ch])}, {int(s['argmax_j'][ch])}); unit ({i}, {j}) = "
                    f"**{acts.maps[ch, i, j]:.4g}**.")
        try:
            box = unit_box(handle, acts, (i, j))
            raw = unit_box(handle, acts, (i, j), clip=False)
        except NotImplementedError as e:
            st.warning(f"No receptive-field box for this layer: {e}")
        else:
            show_chart(image_box_figure(model_view(handle), box, title=f"receptive field of unit ({i}, {j})")
                       .update_layout(height=330), key=f"acts_box_{pref}")
            clipped = " (clipped to the image)" if raw != box else ""
            st.caption(f"Receptive field of unit ({i}, {j}): rows {box[0]}–{box[2] - 1}, columns "
                       f"{box[1]}–{box[3] - 1}{clipped}; full field {raw[2] - raw[0]}×{raw[3] - raw[1]} px on "
                       f"{image_name()} as the model sees it.")
    with st.expander("Per-channel statistics"):
        st.dataframe(pd.DataFrame(acts.records(by if by != "channel" else "max")), hide_index=True,
                     width="stretch")
