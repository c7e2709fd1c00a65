"""AppTest: the Explain, Compare and Trust pages run every method on the default model without exception."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest_util import navigation_only, click, assert_clean

from interpret.attribution.registry import METHODS

ROOT = Path(__file__).resolve().parents[2]
LIGHT = {"occlusion": {"window": 56, "stride": 56}, "occlusion_approx": {"window": 56, "stride": 28}, "lime": {"num_samples": 40}, "lime_fast": {"num_samples": 60}, "smoothgrad": {"samples": 3},
         "integrated_gradients": {"steps": 4}}


@pytest.fixture(scope="module")
def app():
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        yield at


def test_explain_runs_every_method(app):
    at = app
    at.switch_page(str(ROOT / "pages" / "explain.py")).run()
    assert_clean(at)
    for method in list(METHODS) + ["backprop_trio"]:
        at.selectbox(key="explain_method").select(method).run()
        for name, value in LIGHT.get(method, {}).items():
            at.number_input(key=f"explain_{method}_{name}").set_value(value)
        click(at, "Run")
        assert_clean(at)
        assert at.get("plotly_chart"), method
        if method == "cam":
            assert not at.warning  # CAM is defined on EfficientNet-Lite0 (conv → GAP → linear)
        if method not in ("backprop_trio",):
            assert any(m.value.startswith("Explaining **espresso**") for m in at.markdown), method
            labels = [b.label for b in at.get("download_button")]
            assert labels == ["PNG", "Map (.npy)", "Figure (.html)", "Settings (.json)"], labels


def test_compare_runs_all_methods(app):
    at = app
    at.switch_page(str(ROOT / "pages" / "compare.py")).run()
    assert_clean(at)
    click(at, "Run all")
    assert_clean(at)
    table = at.dataframe[0].value
    assert len(table) == len(METHODS)  # every method defined on the default model, CAM included
    assert (table["seconds"] > 0).all()


def test_trust_runs_both_checks(app):
    at = app
    at.switch_page(str(ROOT / "pages" / "trust.py")).run()
    assert_clean(at)
    at.slider[0].set_value(8)  # deletion/insertion steps
    click(at, "Run")
    assert_clean(at)
    di = at.dataframe[0].value
    assert len(di) == 4 and di["deletion AUC ↓"].between(0, 1).all()
    at.slider[1].set_value(2)  # two cascade steps
    click(at, "Run sanity check")
    assert_clean(at)
    assert len(at.get("plotly_chart")) >= 3
