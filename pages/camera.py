"""Camera: snapshots from the browser's camera, each shown with the model's top-5, its class map (CAM, or
Grad-CAM where CAM is not defined) and one activation map, all from one forward pass; "Use this frame" makes the
snapshot the session's image for every other page."""
from __future__ import annotations

import hashlib
import time

import streamlit as st

from interpret.plots.attribution import overlay_figure, topk_figure
from interpret.plots.units import channel_map_figure
from models.images import decode_image
from pages._ui.camera_views import frame_views
from pages._ui.charts import show_chart
from pages._ui.compute import cache_key, result_cache
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, model_caption, set_image
from pages._ui.units_ui import layer_picker

st.title("Camera")
model_caption()
st.caption("Hold an object up to the camera and take a snapshot: the model's top-5, where it looks for its top "
           "class (CAM) and what one channel of a layer responds to are drawn for every new snapshot.")

NO_CAMERA = ("**No camera picture?** Allow this site to use the camera (the camera icon in the browser's address "
             "bar, or the site settings), check that no other program holds the camera, and reload the page. "
             "Without a camera, upload a photo in the sidebar (**Image → Upload**): every page uses it.")


def _use_frame(name: str, data: bytes) -> None:
    """Button callback: the snapshot becomes the session's image (runs before the sidebar is drawn)."""
    set_image(name, decode_image(data))


with friendly_errors("The camera view"):
    handle = current_handle()
    c1, c2, c3 = st.columns([3, 2, 1])
    with c1:
        entry, call = layer_picker(handle, "camera", label="Layer for the activation map")
    with c2:
        mode = st.radio("Channel", ["strongest", "pick"], horizontal=True, key="camera_channel_mode",
                        format_func={"strongest": "Strongest in this frame", "pick": "Pick one"}.get,
                        help="Strongest: the channel with the largest activation in each snapshot.")
    with c3:
        n_channels = entry.calls[call][0]
        picked = int(st.number_input("Channel", 0, max(n_channels - 1, 0), 0, step=1, key="camera_channel",
                                     disabled=mode != "pick"))
    shot = st.camera_input("Take a snapshot", key="camera_shot",
                           help="Each snapshot is sent to the server once and explained there.")
    if shot is None:
        st.info(NO_CAMERA)
    else:
        t0 = time.perf_counter()
        data = shot.getvalue()
        digest = hashlib.sha256(data).hexdigest()[:16]
        channel = picked if mode == "pick" else None
        key = cache_key("camera", handle.key, digest, entry.name, call, channel)
        lru = result_cache("camera_frames", 8)
        shown = lru.get(key)  # a rerun (a button, another widget) redraws the same frame without recomputing
        if shown is None:
            img = decode_image(data)  # validation: real image content, size limits, EXIF orientation
            t1 = time.perf_counter()
            views = frame_views(handle, img, entry.name, channel, call)
            t2 = time.perf_counter()
            label = views.top[0][1]
            method = "CAM" if views.cam.method == "cam" else "Grad-CAM"
            figs = (topk_figure(views.top).update_layout(height=330, font=dict(size=14)).update_yaxes(automargin=True),
                    overlay_figure(views.image, views.cam, label=label, method_label=method, height=330),
                    channel_map_figure(views.acts, views.channel).update_layout(height=330))
            secs = {"decode": t1 - t0, **views.seconds, "figures": time.perf_counter() - t2}
            shown = (views, figs, secs)
            lru.put(key, shown)
        views, figs, secs = shown
        top_idx, top_label, top_p = views.top[0]
        st.subheader(f"Top-1: {top_label} ({top_p:.1%})")
        for col, fig, name in zip(st.columns(3), figs, ("top", "cam", "act")):
            show_chart(fig, key=f"camera_{name}", container=col)
        if views.cam_note:
            st.caption(f"Grad-CAM is shown because CAM is not defined here: {views.cam_note}")
        st.caption(f"server time {sum(secs.values()):.2f} s ("
                   + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in secs.items())
                   + f") · activation map: {views.acts.layer}, channel {views.channel} of {views.acts.channels}"
                   + (" (strongest in this frame)" if channel is None else ""))
        st.button("Use this frame", key="camera_use", on_click=_use_frame,
                  args=(f"camera frame {time.strftime('%H:%M:%S')}", data),
                  help="Make this snapshot the image of every page (Explain, Trust, …).")
