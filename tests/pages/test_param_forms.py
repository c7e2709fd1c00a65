"""Method parameter forms: every parameter has a human label and help from its spec, fields that apply to one
choice appear only for it, implementation knobs sit behind "Advanced", and Run works like a form submit."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interpret.attribution.registry import METHODS
from tests.apptest_util import navigation_only

ROOT = Path(__file__).resolve().parents[2]
RAW_NAMES = {p.name for spec in METHODS.values() for p in spec.params}
IDENTIFIER = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")  # snake_case, as a parameter's name
# Knobs that change speed, memory or float rounding but not the question the method answers.
IMPLEMENTATION = {"engine", "batch_size", "low_precision", "fast", "coarse_step", "design", "rule", "seg_params"}
WIDGETS = ("selectbox", "number_input", "slider", "checkbox", "text_input", "radio", "multiselect")


def _raw(label: str) -> bool:
    """A label that is a parameter's identifier rather than words (checked with and without a JSON suffix)."""
    core = label.removesuffix(" (JSON, optional)").strip()
    return core in RAW_NAMES or bool(IDENTIFIER.match(core))


# ------------------------------------------------------------------------------------------------ registry

@pytest.mark.parametrize("method", list(METHODS))
def test_every_parameter_is_labelled_and_explained(method):
    spec = METHODS[method]
    seen: dict[str, object] = {}
    for p in spec.params:
        assert p.label, (method, p.name)
        assert not _raw(p.title), (method, p.name, p.title)
        assert len(p.help) >= 30 and not _raw(p.help), (method, p.name, p.help)
        if p.kind == "choice":
            shown = [p.choice_label(c) for c in p.choices]
            assert dict(p.choice_labels).keys() == set(p.choices), (method, p.name)
            assert not any(_raw(s) for s in shown) and len(set(shown)) == len(shown), (method, p.name, shown)
        if p.name in IMPLEMENTATION:
            assert p.advanced, (method, p.name)
        if p.when is not None:  # refers to an earlier parameter and one of its possible values
            other, value = p.when
            assert other in seen, (method, p.name, "must follow", other)
            ctl = next(q for q in spec.params if q.name == other)
            assert value in (ctl.choices if ctl.kind == "choice" else (True, False)), (method, p.name)
        seen[p.name] = p


def test_applies_follows_the_controlling_value():
    blur = next(p for p in METHODS["occlusion"].params if p.name == "blur_sigma")
    assert blur.when == ("baseline", "blur")
    assert blur.applies({"baseline": "blur"})
    assert not blur.applies({"baseline": "zero"}) and not blur.applies({"baseline": "mean"})
    seed = next(p for p in METHODS["integrated_gradients"].params if p.name == "seed")
    assert seed.applies({"baseline": "noise"}) and not seed.applies({"baseline": "black"})


# ------------------------------------------------------------------------------------------------ the pages

@pytest.fixture(scope="module")
def app():
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        at.switch_page(str(ROOT / "pages" / "explain.py")).run()
        assert not at.exception, at.exception
        yield at


def _widgets(block) -> list:
    return [w for kind in WIDGETS for w in block.get(kind)]


def _keys(block) -> set[str]:
    return {w.key for w in _widgets(block) if w.key}


def _advanced(at):
    return next((e for e in at.main.expander if e.label == "Advanced"), None)


def _pick(at, method: str) -> None:
    at.selectbox(key="explain_method").select(method).run()
    assert not at.exception, at.exception


def test_explain_shows_no_raw_identifier(app):
    at = app
    for method in METHODS:
        _pick(at, method)
        for w in _widgets(at.main):
            assert not _raw(w.label), (method, w.label)
            for option in getattr(w, "options", None) or ():
                assert not IDENTIFIER.match(str(option)), (method, w.label, option)


def test_compare_shows_no_raw_identifier(app):
    at = app
    at.switch_page(str(ROOT / "pages" / "compare.py")).run()
    try:
        assert not at.exception, at.exception
        labels = [w.label for w in _widgets(at.main)]
        assert labels and not [l for l in labels if _raw(l)], labels
    finally:
        at.switch_page(str(ROOT / "pages" / "explain.py")).run()


@pytest.mark.parametrize("method", ["occlusion", "occlusion_approx"])
def test_blur_radius_only_for_the_blur_baseline(app, method):
    at = app
    _pick(at, method)
    key = f"explain_{method}_blur_sigma"
    assert at.selectbox(key=f"explain_{method}_baseline").value == "zero"
    assert key not in _keys(at.main)
    at.selectbox(key=f"explain_{method}_baseline").select("blur").run()
    assert key in _keys(at.main)
    assert next(w for w in _widgets(at.main) if w.key == key).label == "Blur radius σ (px)"
    at.selectbox(key=f"explain_{method}_baseline").select("mean").run()
    assert key not in _keys(at.main)
    at.selectbox(key=f"explain_{method}_baseline").select("zero").run()


def test_integrated_gradients_seed_only_for_the_noise_baseline(app):
    at = app
    _pick(at, "integrated_gradients")
    assert "explain_integrated_gradients_seed" not in _keys(at.main)
    at.selectbox(key="explain_integrated_gradients_baseline").select("noise").run()
    assert "explain_integrated_gradients_seed" in _keys(_advanced(at))
    at.selectbox(key="explain_integrated_gradients_baseline").select("black").run()


@pytest.mark.parametrize("method", [m for m in METHODS if METHODS[m].params])
def test_implementation_knobs_inside_the_advanced_expander(app, method):
    at = app
    _pick(at, method)
    spec = METHODS[method]
    shown = _keys(at.main)
    exp = _advanced(at)
    inside = _keys(exp) if exp is not None else set()
    for p in spec.params:
        key = f"explain_{method}_{p.name}"
        if key not in shown:  # a parameter that does not apply to the current choices
            assert p.when is not None, (method, p.name)
            continue
        assert (key in inside) == p.advanced, (method, p.name, "advanced" if p.advanced else "basic")
    if any(p.advanced for p in spec.params):
        assert exp is not None, method


def test_batched_engine_shows_its_option(app):
    at = app
    _pick(at, "occlusion")
    assert "explain_occlusion_fast" not in _keys(at.main)  # incremental engine: folding does not apply
    at.selectbox(key="explain_occlusion_engine").select("batched").run()
    assert "explain_occlusion_fast" in _keys(_advanced(at))
    at.selectbox(key="explain_occlusion_engine").select("incremental").run()


def _click_run(at) -> None:
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, at.exception


def test_run_submits_like_a_form(app):
    """Run computes with the values shown; edits made afterwards change nothing until Run is pressed again."""
    at = app
    _pick(at, "occlusion")
    at.number_input(key="explain_occlusion_window").set_value(56)
    at.number_input(key="explain_occlusion_stride").set_value(56)
    at.selectbox(key="explain_occlusion_baseline").select("blur").run()
    at.slider(key="explain_occlusion_blur_sigma").set_value(3.0)
    _click_run(at)
    assert at.get("plotly_chart")
    stats = at.dataframe[0].value
    assert len(stats) == 1 and stats["seconds"][0] > 0
    at.number_input(key="explain_occlusion_window").set_value(40)  # edited, not run
    at.slider(key="explain_opacity").set_value(0.3).run()  # a rerun of the page from outside the panel
    assert at.get("plotly_chart") and not [i for i in at.info if "press **Run**" in i.value]
    _, _, method, params = at.session_state["explain_request"]  # what the shown result was computed with
    params = dict(params)
    assert method == "occlusion" and params["window"] == 56 and params["stride"] == 56
    assert params["baseline"] == "blur" and params["blur_sigma"] == 3.0
    _click_run(at)  # now the edit counts
    assert dict(at.session_state["explain_request"][3])["window"] == 40
