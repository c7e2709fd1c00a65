"""Top patches (Zeiler & Fergus 2014): scan an image collection and show, per channel, the k image patches
(receptive fields of the maximally activated units) that excite it most."""
from __future__ import annotations

import hashlib
import os
import re

import pandas as pd
import streamlit as st

from interpret.core.errors import InputError
from interpret.scale import ray_engine
from interpret.scale.reducers import TopPatchesReducer
from interpret.units.top_patches import padded_patch, scan
from models.collections import (BuiltinCollection, ImageCollection, builtin_collections, collection_spec,
                                from_folder, from_images, from_zip)
from models.images import decode_image
from pages._ui.compute import cache_key, cached
from pages._ui.gate import require
from pages._ui.guard import friendly_errors
from pages._ui.state import cached_entries, cached_samples, current_handle, image_name, model_caption
from pages._ui.units_ui import activations, layer_picker, stop_button

st.title("Top patches")
model_caption()
st.caption("For a chosen layer and channels, every image of a collection is run through the network; per channel "
           "the k strongest units are kept (one per image) and the part of the image inside their receptive field "
           "is shown — what the channel responds to across many images (Zeiler & Fergus 2014).")

COLLECTION_ENV = "CNN_LENS_COLLECTION_DIR"
FOLDER_MAX_FILES = 5000
UPLOAD_MB = 200
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff", "zip"]


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _uploaded_collection(files) -> tuple[ImageCollection, str]:
    """One lazily decoded collection over uploaded images and the image members of uploaded zips."""
    items: list[str] = []
    loaders: dict[str, object] = {}
    skipped: list[tuple[str, str]] = []
    parts: list[bytes | str] = []
    for f in files:
        data = f.getvalue()
        parts += [f.name, data]
        if f.name.lower().endswith(".zip"):
            try:
                z = from_zip(data)
            except ValueError as e:
                skipped.append((f.name, str(e)))
                continue
            skipped += [(f"{f.name}/{n}", why) for n, why in z.skipped]
            for _, member in z.items:
                name = f"{f.name}/{member}"
                items.append(name)
                loaders[name] = (lambda z=z, m=member: z.loader(m))
        else:
            name = f.name
            while name in loaders:
                name = "_" + name
            items.append(name)
            loaders[name] = (lambda data=data: decode_image(data))
    col = ImageCollection([(k, n) for k, n in enumerate(items)], lambda n: loaders[n](), "uploaded files")
    col.skipped.extend(skipped)
    return col, _digest(*parts)


@st.cache_resource(show_spinner="Listing the built-in collections…")
def _builtins() -> dict[str, BuiltinCollection]:
    """The built-in collections, listed once per process (their images are made only when scanned)."""
    return builtin_collections()


def _collection(kind: str, files) -> tuple[ImageCollection | None, str, str]:
    """(collection, content hash, description) of the chosen source."""
    if kind == "bundled":
        samples = cached_samples()
        return from_images(samples, source="bundled photos"), _digest("bundled", *samples), \
            f"{len(samples)} bundled photos"
    if kind in _builtins():
        bc = _builtins()[kind]
        col = ImageCollection([(k, n) for k, n in enumerate(bc.names)], bc.load, bc.title)
        return col, _digest("builtin", bc.key, bc.identity), f"{len(bc)} images: {bc.title.lower()}"
    if kind == "folder":
        folder = os.environ.get(COLLECTION_ENV, "")
        col = from_folder(folder, max_files=FOLDER_MAX_FILES)
        listing = []
        for _, n in col.items:
            try:
                stt = os.stat(os.path.join(col.source, n))
                listing.append(f"{n}:{stt.st_size}:{stt.st_mtime_ns}")
            except OSError:
                listing.append(n)
        return col, _digest("folder", col.source, *listing), f"{len(col)} images in the server folder"
    if not files:
        return None, "", ""
    col, h = _uploaded_collection(files)
    return col, h, f"{len(col)} uploaded images"


def _channels(text: str, n_channels: int) -> list[int]:
    vals = [int(v) for v in re.findall(r"-?\d+", text)]
    if not vals:
        raise InputError("Type one or more channel numbers, e.g. 3, 17, 42.")
    bad = [v for v in vals if not 0 <= v < n_channels]
    if bad:
        raise InputError(f"Channels {bad} are out of range: this layer has channels 0…{n_channels - 1}.")
    return list(dict.fromkeys(vals))[:32]


with friendly_errors("The top-patch scan"):
    handle = current_handle()
    entry, call = layer_picker(handle, "tp", min_size=1)
    n_ch = entry.calls[call][0]

    sources = {"bundled": f"Bundled photos ({len(cached_samples())})"}
    sources.update({key: bc.label for key, bc in _builtins().items()})
    if os.environ.get(COLLECTION_ENV):
        sources["folder"] = f"Server folder ({os.environ[COLLECTION_ENV]})"
    sources["upload"] = "Upload images or a zip"
    default = "classroom_shapes" if handle.family == "classroom" and "classroom_shapes" in sources else "bundled"
    kind = st.radio("Collection", list(sources), index=list(sources).index(default), format_func=sources.get,
                    horizontal=True, key="tp_source",
                    help="The bundled photos are the sidebar's samples; the built-in collections are generated "
                         "or read from installed packages when scanned. To offer a folder of your own images, "
                         f"start the app with {COLLECTION_ENV}=/path/to/images.")
    if kind in _builtins():
        st.caption(_builtins()[kind].note)
    elif kind == "upload" and not os.environ.get(COLLECTION_ENV):
        st.caption(f"Your own images: upload them here, or set {COLLECTION_ENV} to a server folder before "
                   "starting the app (searched recursively, up to 5000 images).")
    files = None
    if kind == "upload":
        files = st.file_uploader("Images, or zip archives of images", type=UPLOAD_TYPES, accept_multiple_files=True,
                                 key="tp_upload", max_upload_size=UPLOAD_MB,
                                 help=f"Up to {UPLOAD_MB} MB per file. Zips: image members only, nothing is "
                                      "extracted to disk; unreadable files are skipped and listed.")
    pick = st.radio("Channels", ["top", "typed"], horizontal=True, key="tp_chmode",
                    format_func={"top": "Strongest on the current image", "typed": "Type channel numbers"}.get)
    with st.form("tp_form"):
        c1, c2, c3 = st.columns(3)
        if pick == "top":
            n_top = int(c1.number_input("How many channels", 1, min(16, n_ch), min(4, n_ch), 1, key="tp_ntop"))
        else:
            typed = c1.text_input("Channel numbers", "0, 1, 2", key="tp_typed",
                                  help=f"Comma-separated, 0…{n_ch - 1} (at most 32).")
        k = int(c2.number_input("Patches per channel (k)", 1, 64, 6, 1, key="tp_k"))
        per_image = int(c3.number_input("Patches per image", 1, 8, 1, 1, key="tp_per_image",
                                        help="1: only the maximally activated unit of each image (Zeiler & "
                                             "Fergus); more: several places of one image may appear."))
        go_scan = st.form_submit_button("Scan", type="primary")

    if pick == "top":
        acts = activations(handle, entry.name, call)
        channels = [int(c) for c in acts.order("max")[:n_top]]
        st.caption(f"Channels {channels}: the strongest (by maximum) on {image_name()}.")
    else:
        channels = _channels(typed, n_ch)
    col, col_hash, desc = _collection(kind, files)
    req = (handle.key, entry.name, call, tuple(channels), k, per_image, col_hash)
    if go_scan and col is None:
        st.warning("Upload some images (or a zip of images) first.")
        st.stop()
    require("tp_request", req, go_scan, "Choose the layer, channels and collection, then press **Scan**.")

    # A server folder can be scanned on the Ray cluster the server names (workers load the model by its key, so
    # only models of the model list; the result equals the in-process scan and shares its cache entry).
    ray_address = os.environ.get(ray_engine.ENV_ADDRESS, "")
    on_ray = bool(ray_address) and kind == "folder" and handle.key in {m.key for m in cached_entries()}
    if on_ray:
        st.caption(f"Scanning on the Ray cluster at {ray_address} (workers report progress as they go).")

    stop = stop_button("tp_stop", "Stop scan", "Interrupts the scan at the next batch; nothing partial is kept.",
                       "tp_request", "Scan stopped. Press **Scan** to start again.")

    def run_scan(report):
        if on_ray:
            line = st.empty()

            def progress(p):
                report(p.fraction)
                line.caption(p.text())

            reducer = TopPatchesReducer(entry.name, tuple(channels), k, per_image, 8, call)
            res, _ = ray_engine.run(reducer, handle.key, collection_spec(col.source), col, address=ray_address,
                                    progress=progress)
            line.empty()
            return res
        return scan(handle, col, entry.name, channels, k=k, per_image=per_image, batch_size=8, call_index=call,
                    progress=lambda done, total: report(done / max(total or 1, 1)))

    result = cached("top_patches", cache_key(*req), run_scan, label=f"Scanning {desc}…", size=16)
    stop.empty()

    (rh, rw), (sh, _), (ph, _) = result.rf
    H, W = result.input_size
    st.markdown(f"**{entry.name}** — {result.n_images} images scanned in {result.seconds:.1f} s; receptive field "
                f"r = {rh} px, S = {sh}, P = {ph} at {H}×{W}.")
    if result.skipped:
        with st.expander(f"{len(result.skipped)} file(s) skipped"):
            st.dataframe(pd.DataFrame(result.skipped, columns=["file", "reason"]), hide_index=True, width="stretch")
    align = st.checkbox("Place each patch where it lies in the unit's full field (grey: outside the image)",
                        value=rh <= 2 * H, key="tp_align")
    width = 96 if rh <= 64 else 128
    for c in result.channels:
        items = result.patches.get(c, [])
        st.markdown(f"**Channel {c}** — top {len(items)}")
        if not items:
            st.caption("No activations.")
            continue
        imgs = [padded_patch(p, result.rf, result.input_size, fill=225) if align else p.patch for p in items]
        st.image(imgs, caption=[f"{p.value:.3g} · {p.image_name}" for p in items], width=width, output_format="PNG")
    with st.expander("All patches as a table"):
        st.dataframe(pd.DataFrame(result.records()), hide_index=True, width="stretch", key="tp_records")
