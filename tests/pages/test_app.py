"""AppTest smoke tests: every page runs with the default model without an exception or error element."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest_util import navigation_only

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")


def _pages() -> list[str]:
    import ast
    tree = ast.parse((ROOT / "app.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PAGES":
            files = [elt.elts[1].value for elt in node.value.elts]
            return [f for f in files if (ROOT / "pages" / f).is_file()]
    raise AssertionError("PAGES not found in app.py")


@pytest.fixture(autouse=True)
def _navigation_only():
    with navigation_only():
        yield


def _run(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    if page:
        at.switch_page(str(ROOT / "pages" / page))
        at.run()
    return at


def test_predict_page_shows_espresso_for_coffee():
    at = _run()
    assert not at.exception
    assert at.subheader[0].value.startswith("Top-1: espresso")
    assert not at.error


@pytest.mark.parametrize("page", _pages())
def test_every_page_runs(page):
    at = _run(page)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_sample_switch_changes_prediction():
    at = _run()
    at.selectbox(key="sample_pick").select("chelsea").run()
    assert not at.exception
    assert "cat" in at.subheader[0].value.lower()


def test_missing_zoo_weights_warns_and_keeps_default(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    at = _run()
    sel = at.selectbox(key="model_select")
    label = next(o for o in sel.options if o.startswith("VGG16"))
    sel.select(label).run()
    assert not at.exception
    assert any("vgg16-397923af.pth" in w.value for w in at.sidebar.warning)
    assert at.subheader[0].value.startswith("Top-1: espresso")  # still the default model
