"""Session state shared by all pages: the chosen model and the chosen image, set in the sidebar.

Models are loaded once per process (``st.cache_resource``) and shared read-only; the user's own weights live in
their session only. The image is kept as a decoded RGB PIL image plus a content hash used as cache key.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import streamlit as st
from PIL import Image
from streamlit.runtime.scriptrunner import get_script_run_ctx

from models import DEFAULT_MODEL, ModelHandle, ModelUnavailable, list_models, load_model
from models.checkpoints import ARCHITECTURES, CheckpointError, load_user_model
from models.images import MAX_BYTES, ImageError, decode_image_info, image_bytes, sample_images

from .compute import start_warm_up

log = logging.getLogger("cnn_lens")

IMAGE_UPLOAD_MB = MAX_BYTES // 2**20
WEIGHTS_UPLOAD_MB = 600
LABELS_UPLOAD_MB = 1


@st.cache_resource(show_spinner="Loading model…", max_entries=6)
def cached_model(key: str) -> ModelHandle:
    """One handle per model and process, shared by every session (never mutated)."""
    return load_model(key)


@st.cache_resource(show_spinner=False)
def cached_samples() -> dict[str, Image.Image]:
    samples = dict(sample_images())
    try:
        from models import classroom

        samples.update(classroom.sample_images())
    except Exception:  # noqa: BLE001 - classroom samples are optional
        log.exception("classroom samples unavailable")
    return samples


@st.cache_data(show_spinner=False, max_entries=1)
def cached_entries() -> list:
    return list_models()


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
    key = st.session_state["model_key"]
    user = st.session_state["user_models"]
    if key in user:
        return user[key]
    try:
        return cached_model(key)
    except (ModelUnavailable, CheckpointError) as e:
        st.session_state["model_key"] = DEFAULT_MODEL
        st.warning(f"{e}\n\nUsing the default model instead.")
        return cached_model(DEFAULT_MODEL)


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


def sidebar() -> None:
    """Model and image choice; every failure ends in a message, never in a lost session."""
    _run.marker = _this_run()
    _init()
    ss = st.session_state
    with st.sidebar:
        st.header("Model")
        entries = cached_entries()
        by_key = {e.key: e for e in entries}
        keys = [e.key for e in entries] + list(ss["user_models"])
        if ss["model_key"] not in keys:
            ss["model_key"] = DEFAULT_MODEL

        def label(k: str) -> str:
            if k in ss["user_models"]:
                return ss["user_models"][k].name
            e = by_key[k]
            return e.name if e.available else f"{e.name} — weights missing"

        labels = [label(k) for k in keys]
        # Options are the display strings (AppTest and the browser agree on them); map back to keys.
        # The widget's value is set through session state whenever the model was chosen elsewhere (a page's
        # switch_model, loaded weights): passing index= alone leaves the browser showing the old choice.
        if ss.pop("_model_pending", False) or ss.get("model_select") not in labels:
            ss["model_select"] = label(ss["model_key"])
        chosen = st.selectbox("Network", labels, key="model_select")
        choice = keys[labels.index(chosen)] if chosen in labels else ss["model_key"]
        if choice in by_key and not by_key[choice].available:
            st.warning(by_key[choice].status)
            st.caption(f"Still using: {label(ss['model_key'])}")
        else:
            ss["model_key"] = choice
        if ss["model_key"] in by_key:
            st.caption(by_key[ss["model_key"]].status)
        with st.expander("Use your own weights"):
            _user_weights_form()

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


def _user_weights_form() -> None:
    ss = st.session_state
    with st.form("user_weights", clear_on_submit=False, border=False):
        arch = st.selectbox("Architecture", list(ARCHITECTURES), format_func=ARCHITECTURES.get)
        wfile = st.file_uploader("State dict (.safetensors, .pt, .pth)", type=["safetensors", "pt", "pth"],
                                 max_upload_size=WEIGHTS_UPLOAD_MB)
        lfile = st.file_uploader("Labels (optional: one per line, or JSON)", type=["txt", "json"],
                                 max_upload_size=LABELS_UPLOAD_MB)
        submitted = st.form_submit_button("Load weights")
    if submitted:
        if wfile is None:
            st.error("Choose a weights file first.")
            return
        try:
            data = wfile.getvalue()
            h = load_user_model(arch, data, wfile.name, lfile.getvalue() if lfile else None)
        except CheckpointError as e:
            st.error(str(e))
            log.info("refused weights %s: %s", wfile.name, e)
            return
        key = f"user:{arch}:{_digest(data)}"
        h.key = key
        ss["user_models"][key] = h
        ss["model_key"] = key
        ss.pop("model_select", None)
        st.success(f"Loaded {h.name}: {h.num_classes} classes.")
        st.rerun()


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
