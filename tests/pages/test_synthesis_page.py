"""AppTest of the Synthesized images page on the synthesis core: what the page optimises and exports is checked
against the core called directly (same objective, same settings, same seed → the same images, bit for bit), the
objective builder against objectives built by hand, the "like this photo" direction against a forward hook."""
from __future__ import annotations

import io
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from interpret.units.synthesis import export as E
from interpret.units.synthesis import objectives as O
from interpret.units.synthesis import render as R
from tests.apptest_util import assert_clean, click, navigation_only

_REAL_SYNTHESIZE = R.synthesize  # before any monkeypatch: the oracle
ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
MODEL = "efficientnet_lite0"


@pytest.fixture(autouse=True)
def _nav():
    with navigation_only():
        yield


@pytest.fixture
def spy(monkeypatch):
    """Records every ``synthesize`` call of the page (objective, settings, result) and every exported zip."""
    calls, zips = [], []
    real_syn, real_zip = R.synthesize, E.export_zip

    def syn(handle, objective, settings=None, **kw):
        res = real_syn(handle, objective, settings, **kw)
        calls.append((handle, objective, settings, res))
        return res

    def exp(result, stem=None):
        data = real_zip(result, stem)
        zips.append(data)
        return data

    monkeypatch.setattr(R, "synthesize", syn)
    monkeypatch.setattr(E, "export_zip", exp)
    return calls, zips


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(str(ROOT / "pages" / "feature_vis.py"))
    at.run()
    assert_clean(at)
    return at


def _custom(at: AppTest) -> None:
    at.radio(key="syn_preset").set_value("custom").run()
    assert_clean(at)


def _form(at: AppTest, steps: int = 3, size: int = 64, **numbers) -> None:
    """Fill the settings form (just before pressing its button: a rerun from outside a form drops unsent values)."""
    at.number_input(key="syn_steps").set_value(steps)
    at.selectbox(key="syn_size").set_value(size)
    for k, v in numbers.items():
        at.number_input(key=k).set_value(v)


def _run(at: AppTest) -> None:
    click(at, "Synthesize")
    assert_clean(at)


def _page_runs(calls):
    """The page's optimisations (not the quality preset's duration probe, which runs with progress_every=0)."""
    return [c for c in calls if c[2] is not None and c[2].progress_every]


def test_class_a_minus_class_b_equals_the_core_and_the_export_holds_it(spy):
    calls, zips = spy
    at = _page()
    _custom(at)
    at.number_input(key="syn_nrows").set_value(2).run()
    at.selectbox(key=f"syn_cls0_{MODEL}").set_value(967)  # espresso
    at.number_input(key="syn_w1").set_value(-1.0)
    at.selectbox(key="syn_k1").set_value("logit").run()
    at.selectbox(key=f"syn_cls1_{MODEL}").set_value(968)  # cup
    _form(at, syn_batch=2)
    _run(at)
    (handle, obj, settings, res), = _page_runs(calls)
    assert obj == O.logit(967) - O.logit(968)  # the rows, summed with their weights
    assert (settings.steps, settings.size, settings.batch, settings.seed) == (3, 64, 2, 0)
    assert any(m.value.startswith("**class espresso − class cup** — 3 steps") for m in at.markdown)
    # the oracle: the core called directly with the same objective and settings
    want = _REAL_SYNTHESIZE(handle, obj, settings)
    np.testing.assert_array_equal(res.images, want.images)
    assert res.history == want.history
    z = zipfile.ZipFile(io.BytesIO(zips[-1]))
    pngs = sorted(n for n in z.namelist() if n.endswith(".png"))
    assert len(pngs) == 2
    assert [z.read(n) for n in pngs] == [E.png_bytes(im) for im in want.images]
    meta = json.loads(z.read("settings.json"))
    assert meta["history"] == want.history and meta["settings"]["batch"] == 2
    assert at.get("download_button")[0].label == "Download images + settings (zip)"




def test_same_request_is_cached_and_every_switch_off_runs(spy):
    calls, _ = spy
    at = _page()
    _custom(at)
    at.selectbox(key="syn_k0").set_value("channel").run()
    _form(at, steps=2)
    for k in ("syn_pad", "syn_jitter", "syn_scale", "syn_rotate", "syn_jitter2", "syn_upsample", "syn_fourier",
              "syn_decorrelate"):
        at.checkbox(key=k).uncheck()
    for k in ("syn_use_l2", "syn_use_tv", "syn_use_blur"):
        at.checkbox(key=k).check()
    _run(at)
    (_, obj, s, _), = _page_runs(calls)
    assert (s.pad, s.jitter, s.scale, s.rotate, s.jitter2, s.upsample, s.param, s.decorrelate) == \
        (0, 0, 0.0, 0, 0, False, "pixel", False)
    assert s.l2 == 1.0 and s.tv == 1.0 and s.blur_every == 4
    assert obj.terms[0].kind == "channel" and obj.terms[0].channel == 0
    _run(at)  # the same request again: drawn from the cache, no new optimisation
    assert len(_page_runs(calls)) == 1
    assert any("2 steps" in m.value for m in at.markdown)


def test_text_objective_and_its_error_message(spy):
    calls, _ = spy
    at = _page()
    _custom(at)
    at.radio(key="syn_mode").set_value("text").run()
    at.text_input(key="syn_text").set_value("logit(espresso) - 0.5*logit(967").run()
    assert not at.exception
    assert any("unbalanced" in e.value for e in at.error)
    at.text_input(key="syn_text").set_value("channel(_blocks.6, 3) + 0.5*channel(_blocks.6, 7)").run()
    assert_clean(at)
    _form(at, steps=2)
    _run(at)
    (_, obj, _, _), = _page_runs(calls)
    assert obj == O.channel("_blocks.6", 3) + 0.5 * O.channel("_blocks.6", 7)


def test_direction_is_the_photos_channel_means(spy):
    """The direction row's vector equals the current image's channel means at the layer, read by a hook."""
    calls, _ = spy
    at = _page()
    _custom(at)
    at.selectbox(key="syn_k0").set_value("direction").run()
    assert_clean(at)
    _form(at, steps=2)
    _run(at)
    (handle, obj, _, _), = _page_runs(calls)
    t = obj.terms[0]
    assert t.kind == "direction"
    img = at.session_state["image"]  # the session's photo (the coffee sample)
    got = []
    m = dict(handle.net.named_modules())[t.layer]
    h = m.register_forward_hook(lambda mod, i, o: got.append(o.detach().double()))
    try:
        with torch.no_grad():
            handle.net(handle.input_tensor(img))
    finally:
        h.remove()
    want = got[t.call_index].mean(dim=(2, 3))[0].numpy()
    np.testing.assert_allclose(np.array(t.vector), want, rtol=1e-5, atol=1e-6)


def test_quality_preset_shows_its_expected_duration():
    at = _page()
    at.radio(key="syn_preset").set_value("quality").run()
    assert_clean(at)
    cap = next(c.value for c in at.caption if c.value.startswith("Expected duration"))
    assert "512 steps ×" in cap


def test_a_new_run_of_the_page_cancels_the_sessions_old_optimisation():
    at = _page()
    old = threading.Event()
    at.session_state["syn_cancel"] = old
    at.run()
    assert old.is_set()


def test_diversity_weight_adds_a_diversity_term(spy):
    calls, _ = spy
    at = _page()
    _custom(at)
    at.selectbox(key="syn_k0").set_value("channel").run()
    _form(at, steps=2, syn_batch=2, syn_div=2.0)
    _run(at)
    (_, obj, s, res), = _page_runs(calls)
    assert s.batch == 2 and res.images.shape[0] == 2
    assert [t.kind for t in obj.terms] == ["channel", "diversity"]
    assert obj.terms[1].weight == 2.0 and obj.terms[1].layer == obj.terms[0].layer
