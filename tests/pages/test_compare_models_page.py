"""AppTest: the Compare models page — default pair, the classroom pair's maps and CKA (values equal to the core
called directly), models of different input sizes and label sets, the same model twice, no layer picked, and a
session with a single model."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest_util import navigation_only, click, assert_clean

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "compare_models.py")


@pytest.fixture(scope="module")
def app():
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        at.switch_page(PAGE).run()
        yield at


def _charts(at) -> list[dict]:
    """The page's plotly figures, as the browser receives them."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _array(v) -> np.ndarray:
    """A figure's array as sent to the browser: a list, or plotly's typed array {dtype, bdata, shape}."""
    if isinstance(v, dict):
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        return a.reshape([int(n) for n in str(shape).split(",")] if shape else -1).astype(float)
    return np.array(v, dtype=float)


def _titles(at) -> list[str]:
    return [c["layout"].get("title", {}).get("text", "") for c in _charts(at)]


def _select_sidebar_model(at, key: str) -> None:
    from models import list_models

    name = next(e.name for e in list_models() if e.key == key)
    at.selectbox(key="model_select").select(name).run()


def test_default_pair_shows_both_top5(app):
    at = app
    assert_clean(at)
    assert at.title[0].value == "Compare models"
    a, b = at.selectbox(key="cm_a_efficientnet_lite0"), at.selectbox(key="cm_b_efficientnet_lite0")
    assert a.value == "efficientnet_lite0" and b.value == "efficientnet_lite1"  # the next model of its family
    titles = _titles(at)
    assert len(titles) == 2 and all("top-1" in t for t in titles)
    assert "espresso" in titles[0] and "Lite0" in titles[0] and "Lite1" in titles[1]


def test_classroom_pair_maps_and_cka_equal_the_core(app):
    from interpret.evaluation.cka import cka_scan, default_layers
    from interpret.evaluation.model_compare import compare_models
    from models import classroom, load_model
    from models.collections import ImageCollection, classroom_shapes

    at = app
    at.selectbox(key="sample_pick").select("classroom: star without cue").run()
    _select_sidebar_model(at, "classroom_clean")
    assert_clean(at)
    assert at.selectbox(key="cm_a_classroom_clean").value == "classroom_clean"
    assert at.selectbox(key="cm_b_classroom_clean").value == "classroom_spurious"
    click(at, "Compare maps")  # Grad-CAM, each model's own top class
    assert_clean(at)
    clean, spur = load_model("classroom_clean", "cpu"), load_model("classroom_spurious", "cpu")
    img = classroom.sample_images()["classroom: star without cue"]
    want = compare_models(clean, spur, img, "gradcam")
    metric = next(m for m in at.metric if "Spearman" in m.label)
    assert metric.value == f"{want.rank_correlation:.3f}"
    titles = _titles(at)
    assert any("Grad-CAM" in t and want.a.label in t for t in titles)
    assert any("Difference B − A" in t for t in titles)
    diff = next(c for c in _charts(at) if "Difference" in c["layout"]["title"]["text"])
    heat = next(t for t in diff["data"] if t["type"] == "heatmap")
    assert heat["colorscale"][0][1] != heat["colorscale"][-1][1] and heat["zmid"] == 0  # diverging, centred
    # the figure carries the map as float32 (|d| ≤ 2: rounding ≤ 2·2⁻²⁴)
    np.testing.assert_allclose(_array(heat["z"]), want.difference, rtol=0, atol=2 * 2.0 ** -24)

    click(at, "Run CKA")
    assert_clean(at)
    cka = next(c for c in _charts(at) if "Linear CKA" in c["layout"]["title"]["text"])
    heat = cka["data"][0]
    assert heat["zmin"] == 0 and heat["zmax"] == 1 and "zmid" not in heat  # sequential 0..1
    bc = classroom_shapes()
    res = cka_scan(clean, spur, ImageCollection([(k, n) for k, n in enumerate(bc.names)], bc.load), batch_size=16)
    assert heat["y"] == default_layers(clean) == res.layers_a and heat["x"] == res.layers_b
    np.testing.assert_array_equal(_array(heat["z"]), res.matrix)  # the same batches: the same arithmetic
    assert any("300 images" in c.value and "diagonal" in c.value for c in at.caption)
    assert at.dataframe  # best match per layer


def test_different_sizes_and_label_sets_just_work(app):
    at = app
    _select_sidebar_model(at, "classroom_clean")
    at.selectbox(key="cm_b_classroom_clean").select("efficientnet_lite0").run()
    assert_clean(at)
    assert any("share no class" in i.value for i in at.info)
    assert at.selectbox(key="cm_class_classroom_clean_efficientnet_lite0").options == \
        ["Each model's own top class"]
    click(at, "Compare maps")
    assert_clean(at)
    assert any("224×224 px" in c.value for c in at.caption)  # the common frame: Lite0's detail
    assert any("Spearman" in m.label for m in at.metric)


def test_same_model_twice_and_no_layers(app):
    at = app
    _select_sidebar_model(at, "classroom_clean")
    at.selectbox(key="cm_b_classroom_clean").select("classroom_clean").run()
    assert_clean(at)
    assert any("same model" in i.value for i in at.info)
    at.multiselect(key="cm_la_classroom_clean").set_value([])
    click(at, "Run CKA")
    assert any("at least one layer" in w.value for w in at.warning)
    assert_clean(at)


def test_a_single_model_says_how_to_add_one(monkeypatch):
    import pages._ui.state as state

    only = [e for e in state.cached_entries() if e.key == "efficientnet_lite0"]
    monkeypatch.setattr(state, "cached_entries", lambda: only)
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()
        at.switch_page(PAGE).run()
    assert_clean(at)
    msg = " ".join(w.value for w in at.warning)
    assert "needs two models" in msg and "Use your own weights" in msg and "Download weights" in msg
