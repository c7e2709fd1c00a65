"""The classroom walk-through runs every step on both classroom models, and its Clever Hans step shows the
spurious model flipping to the cue class because of the tag while the clean model does not."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest_util import navigation_only


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def at():
    with navigation_only():
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        app.run()
        app.switch_page(str(ROOT / "pages" / "classroom.py")).run()
        yield app


@pytest.mark.parametrize("variant", ["classroom_clean", "classroom_spurious"])
def test_every_step(at, variant):
    from models.classroom import VARIANTS

    at.selectbox(key="model_select").select(VARIANTS[variant]).run()   # the one model selector: the sidebar's
    for step in at.radio(key="classroom_step").options:
        at.radio(key="classroom_step").set_value(step).run()
        for b in at.button:
            if b.label == "Synthesize":
                b.click().run()
        assert not at.exception, (step, at.exception)
        assert not at.error, (step, [e.value for e in at.error])
        assert not at.warning, (step, [w.value for w in at.warning])
        if step.startswith("7"):
            assert any("Grad-CAM" in m.value and "0." in m.value for m in at.markdown)
        elif step.startswith("5"):
            assert at.get("plotly_chart")


def test_clever_hans_step_shows_the_flip(at):
    at.radio(key="classroom_step").set_value("8 · Clever Hans").run()
    texts = [m.value for m in at.markdown if "predicts" in m.value]
    assert len(texts) == 4
    preds = [re.search(r"predicts \*\*(\w+)\*\*.*true: (\w+)", t, re.S).groups() for t in texts]
    (spur_tag, true), (spur_plain, _), (clean_tag, _), (clean_plain, _) = preds
    assert spur_tag == "star" and true != "star"
    assert spur_plain == true and clean_tag == true and clean_plain == true
