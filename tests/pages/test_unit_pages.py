"""AppTest of the unit views (filters, activation maps, receptive fields, top patches, synthesized images) on the
default model: each page runs without an error, and its main action shows numbers checked against an
independent computation (weights read directly, a forward hook, the receptive-field recurrence by hand)."""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
MODEL = "efficientnet_lite0"


@pytest.fixture(autouse=True)
def _navigation_only(monkeypatch):
    """Run app.py on every rerun, as the real server does once st.navigation has been called (see test_app)."""
    from streamlit.runtime.pages_manager import PagesManager

    orig = PagesManager.__init__

    def init(self, *a, **k):
        orig(self, *a, **k)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


def _page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(str(ROOT / "pages" / page))
    at.run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _press(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    _ok(at)
    return at


def _select_prefix(sel, prefix: str) -> None:
    sel.select(next(o for o in sel.options if o.startswith(prefix + " "))).run()


@pytest.fixture(scope="module")
def handle():
    from models import default

    return default.load()


def chain_rf(net: nn.Module, layer: str) -> tuple[int, int, int]:
    """(r, S, P) of ``layer`` by the textbook recurrence r += d(k−1)S, P += pS, S *= s over the Conv2d modules in
    definition order up to the end of ``layer`` — exact for EfficientNet-Lite0, whose only branches are identity
    shortcuts and which has no pooling before its head."""
    r, S, P = 1, 1, 0
    seen = False
    for name, m in net.named_modules():
        inside = name == layer or name.startswith(layer + ".")
        if seen and not inside:
            break
        seen = seen or inside
        if isinstance(m, nn.Conv2d):
            k, s, p, d = m.kernel_size[0], m.stride[0], m.padding[0], m.dilation[0]
            r, P, S = r + d * (k - 1) * S, P + p * S, S * s
    return r, S, P


# ---- Filters ---------------------------------------------------------------------------------------------

def test_filters_first_layer_shows_the_32_stem_filters(handle):
    at = _page("filters.py")
    assert "32 filters of 3×3×3" in at.markdown[0].value
    assert len(at.get("plotly_chart")) == 1
    w = handle.net._conv_stem.weight.detach().numpy().reshape(32, -1)
    stats = at.dataframe[0].value
    assert len(stats) == 32
    np.testing.assert_allclose(stats["max"].to_numpy(), w.max(1), rtol=1e-6)
    np.testing.assert_allclose(stats["norm"].to_numpy(), np.sqrt((w.astype(np.float64) ** 2).sum(1)), rtol=1e-5)
    at.radio(key="filters_norm").set_value("symmetric").run()
    _ok(at)
    assert any("0.5 + w / (2·max|w|)" in c.value for c in at.caption)


def test_filters_depthwise_and_deeper_layers(handle):
    at = _page("filters.py")
    sel = at.selectbox(key=f"filters_layer_{MODEL}")
    sel.select("_blocks.1._depthwise_conv").run()
    _ok(at)
    assert "96 filters of 1×3×3 (depthwise)" in at.markdown[0].value
    at.selectbox(key=f"filters_layer_{MODEL}").select("_blocks.1._project_conv").run()
    _ok(at)
    assert "24 filters of 96×1×1 (standard)" in at.markdown[0].value
    at.radio(key="filters_view").set_value("Kernel norms (all filters × inputs)").run()
    _ok(at)
    assert len(at.get("plotly_chart")) == 1


# ---- Activation maps -------------------------------------------------------------------------------------

def test_activations_unit_value_and_receptive_field_box(handle):
    at = _page("activations.py")
    sel = at.selectbox(key=f"acts_layer_{MODEL}")
    assert sel.value.startswith("_blocks.4 — MBConvBlock, 40×28×28")  # the mid-level default
    pref = f"acts_{MODEL}__blocks.4_0"
    at.number_input(key=f"{pref}_ch").set_value(7)
    at.number_input(key=f"{pref}_i").set_value(0)
    at.number_input(key=f"{pref}_j").set_value(27).run()
    _ok(at)
    # The unit's value, from our own forward hook on the coffee photo.
    from models.images import sample_images

    outs = []
    hk = handle.net._blocks[4].register_forward_hook(lambda m, i, o: outs.append(o.detach()))
    try:
        with torch.no_grad():
            handle.net(handle.input_tensor(sample_images()["coffee"]))
    finally:
        hk.remove()
    want = float(outs[-1][0, 7, 0, 27])
    text = next(m.value for m in at.markdown if m.value.startswith("Channel **7**"))
    got = float(re.search(r"unit \(0, 27\) = \*\*([-0-9.e+]+)\*\*", text).group(1))
    assert got == pytest.approx(want, rel=1e-3, abs=1e-4)
    # The box, from the receptive-field recurrence by hand, clipped to 224×224.
    r, S, P = chain_rf(handle.net, "_blocks.4")
    y0, x0 = 0 * S - P, 27 * S - P
    y1, x1 = min(y0 + r, 224) - 1, min(x0 + r, 224) - 1
    cap = next(c.value for c in at.caption if c.value.startswith("Receptive field of unit (0, 27)"))
    assert f"rows {max(y0, 0)}–{y1}, columns {max(x0, 0)}–{x1} (clipped to the image)" in cap
    assert f"full field {r}×{r} px" in cap


def test_activations_sort_by_mean_orders_the_table(handle):
    at = _page("activations.py")
    at.radio(key="acts_sort").set_value("mean").run()
    _ok(at)
    df = at.dataframe[0].value
    assert list(df["mean"]) == sorted(df["mean"], reverse=True)


# ---- Receptive fields ------------------------------------------------------------------------------------

def test_receptive_field_table_and_footprint_on_linearised_copy(handle):
    at = _page("receptive_field.py")
    df = at.dataframe[0].value
    for layer in ("_conv_stem", "_blocks.1._depthwise_conv", "_blocks.5._depthwise_conv", "_conv_head"):
        r, S, P = chain_rf(handle.net, layer)
        row = df[df["layer"] == layer].iloc[0]
        assert (row["r"], row["S"], row["P"]) == (r, S, P), layer
    assert (df[df["layer"] == "_blocks.1._depthwise_conv"].iloc[0][["r", "S"]] == [11, 4]).all()
    at.radio(key="rf_kind").set_value("linear")
    _press(at, "Compute footprint")
    cap = next(c.value for c in at.caption if c.value.startswith("Footprint:"))
    assert "**matches** the analytic box" in cap
    r, S, P = chain_rf(handle.net, "_blocks.4")
    y0 = 14 * S - P
    assert f"bounding box rows {y0}…{y0 + r - 1}, columns {y0}…{y0 + r - 1}" in cap


# ---- Top patches -----------------------------------------------------------------------------------------

def test_top_patches_scan_of_bundled_photos_matches_brute_force(handle):
    at = _page("top_patches.py")
    at.number_input(key="tp_ntop").set_value(2)
    at.number_input(key="tp_k").set_value(2)
    _press(at, "Scan")
    rec = at.dataframe[-1].value
    assert len(rec) == 4 and len(at.main.image) == 2  # one gallery per channel
    channels = sorted(set(rec["channel"]))
    # Brute force: every bundled photo through the net, the max of each channel's map.
    from pages._ui.state import cached_samples

    samples = cached_samples()
    best = {c: [] for c in channels}
    for name, img in samples.items():
        outs = []
        hk = handle.net._blocks[4].register_forward_hook(lambda m, i, o: outs.append(o.detach()))
        try:
            with torch.no_grad():
                handle.net(handle.input_tensor(img))
        finally:
            hk.remove()
        for c in channels:
            best[c].append((float(outs[-1][0, c].max()), name))
    for c in channels:
        want = sorted(best[c], reverse=True)[:2]
        got = rec[rec["channel"] == c].sort_values("rank")
        assert list(got["image"]) == [n for _, n in want]
        np.testing.assert_allclose(got["value"].to_numpy(), [v for v, _ in want], rtol=1e-4)
    assert f"{len(samples)} images scanned" in next(m.value for m in at.markdown if "images scanned" in m.value)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_top_patches_uploaded_zip_and_images_report_skipped_files():
    at = _page("top_patches.py")
    at.radio(key="tp_source").set_value("upload").run()
    _ok(at)
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.png", _png(1))
        zf.writestr("sub/b.png", _png(2))
        zf.writestr("notes.txt", b"hello")
        zf.writestr("broken.jpg", b"not a jpeg at all")
    at.file_uploader(key="tp_upload").set_value([("photos.zip", z.getvalue(), "application/zip"),
                                                 ("c.png", _png(3), "image/png")]).run()
    _ok(at)
    at.radio(key="tp_chmode").set_value("typed").run()
    at.text_input(key="tp_typed").set_value("3, 5")
    at.number_input(key="tp_k").set_value(3)
    _press(at, "Scan")
    assert "3 images scanned" in next(m.value for m in at.markdown if "images scanned" in m.value)
    skipped = at.dataframe[0].value
    assert set(skipped["file"]) == {"photos.zip/notes.txt", "photos.zip/broken.jpg"}
    rec = at.dataframe[-1].value
    assert sorted(set(rec["channel"])) == [3, 5]
    assert set(rec["image"]) <= {"photos.zip/a.png", "photos.zip/sub/b.png", "c.png"}


def test_top_patches_bad_channel_numbers_are_a_message():
    at = _page("top_patches.py")
    at.radio(key="tp_chmode").set_value("typed").run()
    at.text_input(key="tp_typed").set_value("1, 999")
    next(b for b in at.button if b.label == "Scan").click().run()
    assert not at.exception
    assert any("out of range" in e.value for e in at.error)


# ---- Synthesized images: tests/pages/test_synthesis_page.py ------------------------------------------


# ---- Other networks: a reused module (ResNet's relu) and a 64×64 classroom-sized CNN ---------------------

def _with_model(handle, page: str) -> AppTest:
    """The app with ``handle`` as the session's own model (as if its weights had been uploaded)."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["user_models"] = {handle.key: handle}
    at.session_state["model_key"] = handle.key
    at.run()
    at.switch_page(str(ROOT / "pages" / page))
    at.run()
    _ok(at)
    return at


@pytest.fixture(scope="module")
def resnet18():
    from tests.conftest import zoo_handle

    h = zoo_handle("resnet18", 224)
    h.key, h.name = "user:resnet18:test", "ResNet-18 (test weights)"
    return h


@pytest.fixture(scope="module")
def small_cnn():
    from models.classroom.net import ClassroomNet
    from tests.conftest import make_handle

    torch.manual_seed(0)
    h = make_handle(ClassroomNet(6), 64, key="user:classroom:test")
    h.name = "Classroom-sized CNN (test weights)"
    return h


@pytest.mark.parametrize("page", ["filters.py", "activations.py", "receptive_field.py", "top_patches.py",
                                  "feature_vis.py"])
@pytest.mark.parametrize("model", ["resnet18", "small_cnn"])
def test_unit_pages_run_on_other_networks(page, model, request):
    _with_model(request.getfixturevalue(model), page)


def test_resnet_reused_relu_calls_are_selectable(resnet18):
    at = _with_model(resnet18, "activations.py")
    sel = at.selectbox(key=f"acts_layer_{resnet18.key}")
    assert sel.value.startswith("layer2.1 — BasicBlock, 128×28×28")  # the mid-level default
    _select_prefix(sel, "layer1.0.relu")
    _ok(at)
    call = at.selectbox(key=f"acts_call_{resnet18.key}_layer1.0.relu")
    assert call.value == 1 and len(call.options) == 2  # the last call (after the residual add) by default
    call.set_value(0).run()
    _ok(at)
    assert "(call 1 of 2)" in next(c.value for c in at.caption if "channels of" in c.value)


def test_small_cnn_top_patches_and_synthesis(small_cnn):
    at = _with_model(small_cnn, "top_patches.py")
    assert at.selectbox(key=f"tp_layer_{small_cnn.key}").value.startswith("features.16 — ReLU, 48×16×16")
    at.number_input(key="tp_k").set_value(2)
    _press(at, "Scan")
    assert len(at.main.image) == 4
    at.switch_page(str(ROOT / "pages" / "feature_vis.py")).run()
    at.radio(key="syn_preset").set_value("custom").run()
    _ok(at)
    at.number_input(key="syn_steps").set_value(3)
    assert at.selectbox(key="syn_size").value == 64
    _press(at, "Synthesize")
    assert any("3 steps" in m.value for m in at.markdown)


def test_top_patches_server_folder_from_environment(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(_png(4))
    (tmp_path / "sub" / "b.png").write_bytes(_png(5))
    (tmp_path / "junk.jpg").write_bytes(b"no image here")
    (tmp_path / "readme.txt").write_text("not listed")
    monkeypatch.setenv("CNN_LENS_COLLECTION_DIR", str(tmp_path))
    at = _page("top_patches.py")
    at.radio(key="tp_source").set_value("folder").run()
    _ok(at)
    at.number_input(key="tp_k").set_value(2)
    _press(at, "Scan")
    assert "2 images scanned" in next(m.value for m in at.markdown if "images scanned" in m.value)
    assert list(at.dataframe[0].value["file"]) == ["junk.jpg"]
    assert set(at.dataframe[-1].value["image"]) <= {"a.png", "sub/b.png"}
