"""AppTest of the Dissection page: on the Clever Hans classroom model the dissection table shows exactly what
``dissect`` computes on the same generated images, a chosen unit gets its map with the mask outline; the class
selectivity view equals a direct ``selectivity_of_arrays``; a model without masks says so and offers selectivity
only; an unlabelled folder is a message, not a traceback."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from interpret.units import dissection as DS
from interpret.units import selectivity as SE
from models.classroom import VARIANTS
from models.registry import load_model
from tests.apptest_util import navigation_only

ROOT = Path(__file__).resolve().parents[2]
N = 60
LAYER = "features.9"


@pytest.fixture(scope="module")
def at(tmp_path_factory):
    flat = tmp_path_factory.mktemp("flat")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(flat / "one.png")
    mp = pytest.MonkeyPatch()
    mp.setenv("CNN_LENS_COLLECTION_DIR", str(flat))
    with navigation_only():
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        app.run()
        app.switch_page(str(ROOT / "pages" / "dissection.py")).run()
        app.selectbox(key="model_select").select(VARIANTS["classroom_spurious"]).run()
        yield app
    mp.undo()


def _ok(at):
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _press(at, label):
    next(b for b in at.button if b.label == label).click().run()
    _ok(at)


def test_dissection_table_equals_dissect(at):
    _ok(at)
    assert at.title[0].value == "Dissection"
    at.multiselect(key="dis_layers_classroom_spurious").set_value([LAYER])
    at.number_input(key="dis_n").set_value(N)
    _press(at, "Run dissection")
    h = load_model("classroom_spurious")
    ref = DS.dissect(h, DS.classroom_dissection_data("test", N, spurious=True), [LAYER], batch_size=50)
    df = at.dataframe[0].value
    best = ref.layers[LAYER].best()
    assert list(df["unit"]) == [u for u, _, _ in best] and list(df["concept"]) == [c for _, c, _ in best]
    assert np.array_equal(df["IoU"].to_numpy(), np.round([v for _, _, v in best], 4))
    assert any("60 images" in m.value for m in at.markdown)
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("units detecting each concept" in t for t in titles)
    # pick the second unit: its map is drawn with its concept in the title
    sel = at.selectbox(key=f"dis_unit_classroom_spurious_{LAYER}")
    sel.select(sel.options[1]).run()
    _ok(at)
    u, c, _ = best[1]
    assert any(f"unit {u} ({c})" in t for t in (ch.proto.spec for ch in at.get("plotly_chart")))


def test_selectivity_view_equals_direct(at):
    at.radio(key="dis_view_2").set_value("Class selectivity").run()
    _ok(at)
    at.radio(key="sel_source_classroom_spurious").set_value("classroom").run()
    at.multiselect(key="sel_layers_classroom_spurious").set_value(["features.23"])
    _press(at, "Compute selectivity")
    data = DS.classroom_dissection_data("test", 600, spurious=True)
    ref = SE.selectivity_of_arrays(load_model("classroom_spurious"), data.images, data.labels, data.label_names,
                                   ["features.23"]).layers["features.23"]
    df = at.dataframe[0].value
    si = ref.index()
    # the page rounds SI to 3 decimals; units sorted by SI (ties within rounding may swap)
    assert np.allclose(df["SI"].to_numpy(), np.round(np.sort(si)[::-1], 3), atol=1.5e-3)
    top_unit = int(df["unit"].iloc[0])
    assert abs(si[top_unit] - si.max()) < 1e-6


def test_unlabelled_folder_is_a_message(at):
    at.radio(key="sel_source_classroom_spurious").set_value("folder").run()
    next(b for b in at.button if b.label == "Compute selectivity").click().run()
    assert not at.exception
    assert any("no class labels" in e.value for e in at.error)


def test_model_without_masks_offers_selectivity_only(at):
    at.selectbox(key="model_select").select_index(0).run()
    assert not at.exception
    assert any("has no concept masks" in i.value for i in at.info)
    assert at.radio(key="dis_view_1").options == ["Class selectivity"]
