"""The session's model in the served app (AppTest): uploads for any architecture stay chosen across pages and
widget changes, a failed upload keeps the model and its message, several uploads are held and switchable within
the session's memory budget, and a missing zoo model's weights download from a server on 127.0.0.1."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from streamlit.testing.v1 import AppTest

from pages._ui import model_picker
from tests.apptest_util import navigation_only

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
DEFAULT_LABEL = "EfficientNet-Lite0 (ImageNet)"


@pytest.fixture(autouse=True)
def _navigation_only():
    with navigation_only():
        yield


def _pt(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def resnet():
    """A ResNet-18 with 3 classes and random weights: (file bytes, state dict)."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    return _pt(state), state


@pytest.fixture(scope="module")
def squeeze():
    torch.manual_seed(1)
    state = torchvision.models.squeezenet1_1(num_classes=4).state_dict()
    return _pt(state), state


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["uw_open"] = True  # "Use your own weights" expanded
    at.run()
    assert not at.exception, at.exception
    return at


def _network(at):
    return next(s for s in at.sidebar.selectbox if s.label == "Network")


def _upload(at, data: bytes, name: str, source: str = "torchvision", arch: str | None = "ResNet-18",
            timm_name: str | None = None, press: bool = True) -> None:
    at.radio(key="uw_source").set_value(model_picker.SOURCES[source]).run()
    if arch is not None and source in ("torchvision", "packaged"):
        at.selectbox(key=f"uw_arch_{source}").set_value(arch).run()
    if timm_name is not None:
        at.text_input(key="uw_timm_name").input(timm_name).run()
    rnd = at.session_state["_uw_round"] if "_uw_round" in at.session_state else 0
    at.file_uploader(key=f"uw_file_{rnd}").set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, at.exception
    if press:
        at.button(key="uw_load").click().run()
        assert not at.exception, at.exception


def _go(at, page: str) -> None:
    at.switch_page(str(ROOT / "pages" / page))
    at.run()
    assert not at.exception, at.exception


def _names_model(at, name: str) -> bool:
    return any(c.value.startswith(f"Model: **{name}**") for c in at.caption)


def _expected_top1(state: dict, arch: str, num_classes: int) -> tuple[int, float]:
    """The oracle: the network built here from the same weights, on the app's coffee photo, in float64."""
    from models.architectures import default_preprocess
    from models.images import sample_images

    net = getattr(torchvision.models, arch)(num_classes=num_classes).double().eval()
    net.load_state_dict(state)
    x = default_preprocess(arch)(dict(sample_images())["coffee"]).unsqueeze(0).double()
    with torch.no_grad():
        p = torch.softmax(net(x), 1)[0].numpy()
    return int(np.argmax(p)), float(p.max())


def _top1(at) -> tuple[int, float]:
    text = at.subheader[0].value  # "Top-1: class 2 (63.7%)"
    assert text.startswith("Top-1: class ")
    idx, pct = text.removeprefix("Top-1: class ").split(" (")
    return int(idx), float(pct.rstrip("%)")) / 100


def test_uploaded_model_stays_on_every_page_and_after_widget_changes(resnet):
    data, state = resnet
    at = _app()
    _upload(at, data, "r18.pt")
    name = "ResNet-18 (your weights: r18.pt)"
    assert _network(at).value == name
    assert any("Loaded ResNet-18" in s.value for s in at.sidebar.success)
    idx, p = _top1(at)
    want_idx, want_p = _expected_top1(state, "resnet18", 3)
    assert idx == want_idx and abs(p - want_p) <= 0.0005 + 1e-4  # shown rounded to 0.1 %; float32 vs float64
    # the browser's stale value for the list as it was before the upload (a click sent before the new list
    # arrived) must not read as picking the default model again
    at.session_state["model_select"] = DEFAULT_LABEL
    at.radio(key="image_source").set_value("Upload").run()
    assert not at.exception
    assert _network(at).value == name and at.session_state["model_key"].startswith("user:")
    at.radio(key="image_source").set_value("Sample photo").run()
    at.selectbox(key="sample_pick").select("chelsea").run()
    for page, only_resnet in [("filters.py", "conv1"), ("activations.py", "layer"), ("receptive_field.py", "BasicBlock"),
                              ("explain.py", None), ("compare.py", None), ("trust.py", None),
                              ("top_patches.py", None), ("feature_vis.py", None), ("predict.py", "class ")]:
        _go(at, page)
        assert _network(at).value == name, page
        assert _names_model(at, name), (page, [c.value for c in at.caption][:3])
        if only_resnet:
            main = at.main  # the page, not the sidebar: text only ResNet-18 or its 3 unnamed classes give
            page_text = " ".join(e.value for e in [*main.markdown, *main.subheader, *main.selectbox]
                                 if isinstance(getattr(e, "value", None), str))
            assert only_resnet in page_text, page
        assert not at.error, (page, [e.value for e in at.error])


def test_failed_upload_keeps_the_model_and_shows_the_error(resnet):
    data, _ = resnet
    at = _app()
    _upload(at, data, "r18.pt")
    name = _network(at).value
    assert name.startswith("ResNet-18 (your weights")
    _upload(at, data, "r18.pt", arch="AlexNet")  # the right file for the wrong architecture
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1 and "do not fit AlexNet" in errors[0] and "previous model is kept" in errors[0]
    assert not at.sidebar.expander[0].error  # under the Network list, not inside the (closable) expander
    assert _network(at).value == name
    _go(at, "filters.py")
    assert _network(at).value == name and _names_model(at, name)
    assert any("do not fit AlexNet" in e.value for e in at.sidebar.error)  # still there on the next page
    _upload(at, b"not weights at all", "junk.pt", press=False)  # refused when read, before any button
    assert any("junk.pt" in e.value and "not a PyTorch weights file" in e.value for e in at.sidebar.error)
    assert _network(at).value == name


def test_several_uploads_are_switchable_and_removable(resnet, squeeze):
    at = _app()
    _upload(at, resnet[0], "r18.pt")
    _upload(at, squeeze[0], "sq.pt", arch="SqueezeNet 1.1")
    sq_name, r_name = "SqueezeNet 1.1 (your weights: sq.pt)", "ResNet-18 (your weights: r18.pt)"
    assert _network(at).value == sq_name
    assert {r_name, sq_name} <= set(_network(at).options)
    assert _top1(at)[0] == _expected_top1(squeeze[1], "squeezenet1_1", 4)[0]
    _network(at).select(r_name).run()
    assert _top1(at)[0] == _expected_top1(resnet[1], "resnet18", 3)[0]
    assert len(at.session_state["user_models"]) == 2
    at.button(key=f"remove_{at.session_state['model_key']}").click().run()
    assert not at.exception
    assert _network(at).value == DEFAULT_LABEL and r_name not in _network(at).options
    assert sq_name in _network(at).options and len(at.session_state["user_models"]) == 1
    assert any("Removed ResNet-18" in i.value for i in at.sidebar.info)
    assert at.subheader[0].value.startswith("Top-1: espresso")


def test_upload_beyond_the_session_budget_is_refused(resnet, squeeze, monkeypatch):
    r_bytes = sum(t.numel() * t.element_size() for t in resnet[1].values())
    monkeypatch.setattr(model_picker, "SESSION_BUDGET_BYTES", r_bytes + 2**20)  # room for the ResNet only
    at = _app()
    _upload(at, resnet[0], "r18.pt")
    r_name = _network(at).value
    _upload(at, squeeze[0], "sq.pt", arch="SqueezeNet 1.1", press=False)  # refused from the file's sizes
    err = " ".join(e.value for e in at.sidebar.error)
    assert "Not loaded" in err and f"already holds {model_picker.mb(r_bytes)}" in err and r_name in err and "Remove" in err
    assert _network(at).value == r_name and len(at.session_state["user_models"]) == 1


def test_timm_name_with_edited_preprocessing(monkeypatch):
    timm = pytest.importorskip("timm")
    from models.architectures import default_preprocess

    torch.manual_seed(2)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    at = _app()
    _upload(at, _pt(net.state_dict()), "t.pt", source="timm", arch=None, timm_name="resnet10", press=False)
    assert "resnet10t" in at.selectbox(key="uw_timm_pick").options  # not a name: matching names are offered
    at.selectbox(key="uw_timm_pick").select("resnet10t").run()
    d = default_preprocess("timm:resnet10t")
    assert at.number_input(key="uw_crop_timm_resnet10t").value == d.crop
    assert at.number_input(key="uw_resize_timm_resnet10t").value == d.resize
    at.number_input(key="uw_crop_timm_resnet10t").set_value(160)
    at.text_input(key="uw_std_timm_resnet10t").input("0.5")
    at.button(key="uw_load").click().run()
    assert not at.exception and not at.sidebar.error, [e.value for e in at.sidebar.error]
    h = at.session_state["user_models"][at.session_state["model_key"]]
    assert (h.preprocess.crop, h.preprocess.std, h.preprocess.mean) == (160, (0.5,) * 3, tuple(round(v, 4) for v in d.mean))
    for k, v in net.state_dict().items():
        assert torch.equal(h.net.state_dict()[k], v), k


def test_ema_weights_are_offered_and_loaded(resnet):
    _, state = resnet
    ema = {k: (v * 0.5 if v.is_floating_point() else v) for k, v in state.items()}
    data = _pt({"state_dict": state, "state_dict_ema": ema, "epoch": 3})
    at = _app()
    _upload(at, data, "ckpt.pt", press=False)
    at.radio(key="uw_variant").set_value("EMA").run()
    at.button(key="uw_load").click().run()
    h = at.session_state["user_models"][at.session_state["model_key"]]
    assert "EMA" in h.name
    assert torch.equal(h.net.state_dict()["conv1.weight"], ema["conv1.weight"])


# ---- Download weights -----------------------------------------------------------------------------------------

@pytest.fixture
def weights_server(tmp_path, monkeypatch):
    """TORCH_HOME in tmp_path and $CNN_LENS_WEIGHTS_URL at a file server on 127.0.0.1 serving SqueezeNet 1.1's
    file name with random weights; yields the bytes served."""
    from models import download, zoo

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    root = tmp_path / "www"
    root.mkdir()
    torch.manual_seed(3)
    data = _pt(torchvision.models.squeezenet1_1().state_dict())
    (root / zoo.weights_status("squeezenet1_1").file_name).write_bytes(data)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(download.ENV_VAR, f"http://127.0.0.1:{server.server_address[1]}")
    model_picker.cached_entries.clear()
    try:
        yield data
    finally:
        server.shutdown()
        server.server_close()
        model_picker.cached_entries.clear()


def _pick_missing_squeezenet(at) -> None:
    box = _network(at)
    box.select(next(o for o in box.options if o.startswith("SqueezeNet 1.1") and "missing" in o)).run()
    assert any("squeezenet1_1-b8a52dc0.pth" in w.value for w in at.sidebar.warning)


def test_download_button_fetches_checks_and_loads(weights_server, monkeypatch):
    from models import download

    real = hashlib.sha256(weights_server).hexdigest()[:8]  # the served file is not torchvision's
    monkeypatch.setattr(download, "hash_prefix", lambda name: real)
    at = _app()
    _pick_missing_squeezenet(at)
    at.button(key="download_squeezenet1_1").click().run()
    assert not at.exception, at.exception
    assert at.session_state["model_key"] == "squeezenet1_1"
    assert _network(at).value == "SqueezeNet 1.1 (ImageNet)"
    assert any("Downloaded" in s.value for s in at.sidebar.success)
    assert at.subheader[0].value.startswith("Top-1: ")


def test_download_with_a_wrong_hash_is_refused_in_the_sidebar(weights_server):
    at = _app()
    _pick_missing_squeezenet(at)
    at.button(key="download_squeezenet1_1").click().run()
    assert not at.exception, at.exception
    assert any("SHA-256 does not start with b8a52dc0" in e.value for e in at.sidebar.error)
    assert at.session_state["model_key"] == "efficientnet_lite0"
    assert at.subheader[0].value.startswith("Top-1: espresso")


def test_find_it_lists_the_fits_and_loads_the_one_clicked(resnet):
    """"I don't know — find it": the exact fits of the file (torchvision's ResNet-18 first, timm's identical
    layout after it), one button each; the one clicked is loaded and computes as that network does."""
    data, state = resnet
    at = _app()
    _upload(at, data, "r18.pt", source="find", arch=None, press=False)
    at.button(key="uw_find").click().run()
    assert not at.exception, at.exception
    labels = [b.label for b in at.sidebar.button if b.label.startswith("Load as ")]
    assert labels[0] == "Load as ResNet-18 (3 classes)" and "Load as resnet18 (timm) (3 classes)" in labels
    assert not any("alexnet" in lab.lower() or "lite" in lab.lower() for lab in labels)
    at.button(key="uw_fit_resnet18").click().run()
    assert not at.exception, at.exception
    assert _network(at).value == "ResNet-18 (your weights: r18.pt)"
    assert _top1(at)[0] == _expected_top1(state, "resnet18", 3)[0]
