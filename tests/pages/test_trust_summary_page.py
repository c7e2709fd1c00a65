"""AppTest: the Trust page's Summary tab runs on a button, shows the numbers the core computes, says so for an
all-zero map, and draws the agreement matrix; the result is cached."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import interpret.evaluation.trust_summary as ts
from models import DEFAULT_MODEL, load_model
from pages._ui.state import cached_samples
from tests.apptest_util import navigation_only

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def calls(monkeypatch):
    """Count the maps made, and make saliency's map all zero (a method whose map cannot rank pixels)."""
    seen: list[str] = []
    real = ts.explain

    def fake(handle, x, target, method, **kw):
        seen.append(method)
        res = real(handle, x, target, method, **kw)
        if method == "saliency":
            res.map = np.zeros_like(res.map)
        return res

    monkeypatch.setattr(ts, "explain", fake)
    return seen


def test_summary_tab(calls):
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        at.switch_page(str(ROOT / "pages" / "trust.py")).run()
        assert not at.exception, at.exception
        assert at.tabs[0].label == "Summary"
        assert any("Run summary" in i.value for i in at.info)
        assert not calls  # nothing runs before the button
        at.multiselect(key="summary_methods").set_value(["saliency", "gradcam", "cam", "guided_backprop"])
        at.number_input(key="summary_steps").set_value(4)
        at.number_input(key="summary_seeds").set_value(2)
        next(b for b in at.button if b.label == "Run summary").click().run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        table = at.dataframe[0].value
        n_calls = len(calls)
        assert n_calls == 1 + 3 * 4  # saliency once (all zero: no perturbed copies), three others × 4
        # the numbers are the core's, for the same settings
        handle = load_model(DEFAULT_MODEL)
        target = int(np.argmax(handle.predict(cached_samples()["coffee"])))
        res = ts.trust_summary(handle, cached_samples()["coffee"], target, ["saliency", "gradcam", "cam",
                                                                            "guided_backprop"],
                               steps=4, seeds=(0, 1), baseline="blur")
        recs = ts.summary_records(res, {"saliency": "Saliency (|gradient|)", "gradcam": "Grad-CAM", "cam": "CAM",
                                        "guided_backprop": "Guided backprop"})
        assert list(table["method"]) == [r["method"] for r in recs]
        for col in ("deletion AUC ↓", "insertion AUC ↑", "× random (del.) ↓", "ρ horizontal flip"):
            got = table[col].to_numpy(dtype=float)
            want = np.array([np.nan if r[col] is None else r[col] for r in recs], dtype=float)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=True)  # float32 net, same input
        sal = table[table["method"] == "Saliency (|gradient|)"].iloc[0]
        assert sal["verdict"] == "no numbers: map is all zero"
        assert any("Saliency" in w.value and "all zero" in w.value for w in at.warning)
        assert any(m.value.startswith("**espresso** · random pixel orders (2)") for m in at.markdown)
        charts = at.get("plotly_chart")
        assert charts  # the agreement matrix
        before = len(calls)
        at.run()  # a rerun with the same settings draws the cached result
        assert len(calls) == before and at.dataframe[0].value.equals(table)
        assert not at.exception
        at.multiselect(key="summary_methods").set_value(["gradcam"])
        next(b for b in at.button if b.label == "Run summary").click().run()
        assert list(at.dataframe[0].value["method"]) == ["Grad-CAM"]
        assert not at.get("plotly_chart")  # one method: no agreement matrix to draw
