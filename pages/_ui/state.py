"""Session state shared by all pages: the chosen model and the chosen image, set in the sidebar.

Models are loaded once per process (``st.cache_resource``) and shared read-only; the user's own weights live in
their session only. The model choice itself (Network list, uploads, downloads) is ``model_picker``; the session's
model is ``st.session_state["model_key"]``, which only an explicit choice changes. The image is kept as a decoded
RGB PIL image plus a content hash used as cache key.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import streamlit as st
from PIL import Image
from streamlit.runtime.scriptrunner import get_script_run_ctx

from models import DEFAULT_MODEL, ModelHandle
from models.images import MAX_BYTES, ImageError, decode_image_info, image_bytes, sample_images

from .compute import start_warm_up
from .model_picker import (LABELS_UPLOAD_MB, WEIGHTS_UPLOAD_MB, cached_entries, cached_model, chosen_handle,
                           device_name, network_select, own_weights, show_message)

__all__ = ["LABELS_UPLOAD_MB", "WEIGHTS_UPLOAD_MB", "cached_entries", "cached_model", "cached_samples",
           "current_handle", "current_image", "image_id", "image_name", "model_caption", "set_image", "sidebar",
           "switch_model"]

log = logging.getLogger("cnn_lens")

IMAGE_UPLOAD_MB = MAX_BYTES // 2**20


@st.cache_resource(show_spinner=False)
def cached_samples() -> dict[str, Image.Image]:
    samples = dict(sample_images())
    try:
        from models import classroom

        samples.update(classroom.sample_images())
    except Exception:  # noqa: BLE001 - classroom samples are optional
        log.exception("classroom samples unavailable")
    return samples


_run = threading.local()


def _this_run() -> object | None:
    """An object that is new for every script run (Streamlit resets ``ctx.cursors`` to a fresh dict)."""
    ctx = get_script_run_ctx()
    return None if ctx is None else ctx.cursors


def ensure_shell() -> None:
    """Hand a page that runs without app.py over to app.py, remembering which page was asked for.

    Streamlit still honours the legacy ``pages/`` folder convention when a fresh server's first request names a
    page URL before any run has called ``st.navigation``: that run executes the page file alone (no sidebar,
    legacy menu). Switching to app.py lets it call ``st.navigation`` and then open the wanted page.
    """
    marker = _this_run()
    if marker is None or getattr(_run, "marker", None) is marker:
        return
    _run.marker = marker
    ctx = get_script_run_ctx()
    try:
        info = ctx.pages_manager.get_pages().get(ctx.page_script_hash, {})
        wanted = Path(info.get("script_path", "")).name
    except Exception:  # noqa: BLE001 - best effort: fall back to the default page
        wanted = ""
    if wanted and wanted != "app.py":
        st.session_state["_wanted_page"] = wanted
        st.switch_page("app.py")
    sidebar()


def wanted_page() -> str | None:
    """The page file a legacy standalone run asked for (see ``ensure_shell``), once."""
    return st.session_state.pop("_wanted_page", None)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _init() -> None:
    ss = st.session_state
    ss.setdefault("model_key", DEFAULT_MODEL)
    ss.setdefault("user_models", {})
    if "image" not in ss:
        _set_sample("coffee")


def _set_sample(name: str) -> None:
    samples = cached_samples()
    if name not in samples:
        name = next(iter(samples))
    img = samples[name]
    st.session_state["image"] = img
    st.session_state["image_name"] = name
    st.session_state["image_id"] = "sample:" + name
    st.session_state["image_notes"] = ()


def current_handle() -> ModelHandle:
    """The handle of the chosen model (the default one if the choice cannot be loaded). From the first time a
    model is asked for, its fast-path copies are built in the background (``compute.start_warm_up``)."""
    handle = _chosen_handle()
    start_warm_up(handle)
    return handle


def _chosen_handle() -> ModelHandle:
    ensure_shell()
    _init()
    return chosen_handle()


def model_caption() -> None:
    """The line under a page's title naming the session's model and its device."""
    handle = current_handle()
    st.caption(f"Model: **{handle.name}** · device `{device_name(handle)}`")


def current_image() -> Image.Image:
    ensure_shell()
    _init()
    return st.session_state["image"]


def image_id() -> str:
    """A content key of the current image, for caches."""
    _init()
    return st.session_state["image_id"]


def image_name() -> str:
    _init()
    return st.session_state["image_name"]


def set_image(name: str, img: Image.Image) -> None:
    """Make ``img`` the session's image, keyed by its content, as if it had been uploaded (the sidebar's source
    switches to "Upload", so the sample list does not put its photo back). Call it from a widget callback: the
    sidebar's widgets are drawn before the page."""
    img = img.convert("RGB")
    ss = st.session_state
    ss["image"] = img
    ss["image_name"] = name
    ss["image_id"] = "edit:" + _digest(png_bytes(img))
    ss["image_notes"] = ()
    ss["image_source"] = "Upload"


def sidebar() -> None:
    """Model and image choice; every failure ends in a message, never in a lost session."""
    _run.marker = _this_run()
    _init()
    ss = st.session_state
    with st.sidebar:
        st.header("Model")
        # The list is drawn after the upload form ran (a container placed above it), so a model loaded in this
        # run is already the list's choice, without a second run.
        net_slot, msg_slot = st.container(), st.container()
        own = st.expander("Use your own weights", key="uw_open", on_change="rerun")
        with own:
            if own.open:
                own_weights()
        with net_slot:
            network_select()
        with msg_slot:
            if page_entered() and ss.get("picker_msg", ("error",))[0] != "error":
                ss.pop("picker_msg")  # a success note is said on the page where it happened; errors stay
            show_message()

        st.header("Image")
        source = st.radio("Source", ["Sample photo", "Upload"], horizontal=True, key="image_source")
        if source == "Sample photo":
            names = list(cached_samples())
            cur = ss["image_name"] if ss["image_id"].startswith("sample:") else None
            pick = st.selectbox("Sample", names, index=names.index(cur) if cur in names else 0, key="sample_pick")
            if ss["image_id"] != "sample:" + pick:
                _set_sample(pick)
        else:
            # A refused file is reported in the run that read it, and the uploader is then replaced by an
            # empty one (new key): the message stays until the user's next action, not on every later page.
            # Files the browser refuses itself (too large) never reach the server; a fresh uploader on each
            # page keeps their message on the page where it happened. The chosen image is shown below.
            if page_entered():
                ss["upload_round"] = ss.get("upload_round", 0) + 1
            up = st.file_uploader("Image file", type=["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"],
                                  key=f"image_upload_{ss.get('upload_round', 0)}", max_upload_size=IMAGE_UPLOAD_MB,
                                  help=f"PNG, JPEG, GIF, BMP, WebP or TIFF up to {IMAGE_UPLOAD_MB} MB.")
            if up is not None and ss.get("last_upload_id") != up.file_id:
                ss["last_upload_id"] = up.file_id
                data = up.getvalue()
                try:
                    img, info = decode_image_info(data)
                except ImageError as e:
                    ss["upload_round"] = ss.get("upload_round", 0) + 1
                    st.error(f"{up.name}: {e}\n\nThe previous image is kept.")
                    log.info("refused upload %s: %s", up.name, e)
                else:
                    ss["image"] = img
                    ss["image_name"] = up.name
                    ss["image_id"] = "upload:" + _digest(data)
                    ss["image_notes"] = info.notes
        st.image(ss["image"], caption=ss["image_name"], width="stretch")
        if ss.get("image_notes"):
            st.caption("; ".join(ss["image_notes"]))


def png_bytes(img: Image.Image) -> bytes:
    return image_bytes(img, "PNG")


def switch_model(key: str) -> None:
    """Make ``key`` the session's model, as if it had been picked in the sidebar, and rerun so the sidebar's
    Network list (drawn before the page) shows it."""
    st.session_state["model_key"] = key
    st.session_state["_model_pending"] = True
    st.rerun()


def note_page(page: str) -> None:
    """Called by app.py on every run with the page about to run: remembers whether this run entered it."""
    ss = st.session_state
    ss["_page_entered"] = ss.get("_page_last") != page
    ss["_page_last"] = page


def page_entered() -> bool:
    """Whether this run is the first on the current page since another page (or the session start)."""
    return bool(st.session_state.get("_page_entered", True))
