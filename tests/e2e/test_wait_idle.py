"""In a real browser: wait_idle sees the app's real run state (a long run is waited for, not slept past), and the
method parameter panel shows human labels, fields that apply only to one choice only for it, and the
implementation knobs behind "Advanced"."""
from __future__ import annotations

import os
import re

import pytest

from tests.e2e.test_browser import ERROR_SEL, go, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = os.environ.get("CNN_LENS_SHOTS")  # a folder for pictures a person can look at
RAW = ("blur_sigma", "coarse_step", "low_precision", "batch_size", "num_samples", "hide_color", "seg_params")


def _pick_method(page, label: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=re.compile(r"^Method$")).click()
    page.get_by_role("option", name=label).click()
    wait_idle(page)


def _choose(page, box_label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=box_label).first.click()
    page.get_by_role("option", name=option).click()
    wait_idle(page)


def test_the_run_state_is_rendered_and_read(page):
    """The attribute wait_idle relies on exists in this Streamlit and reads idle after a run."""
    seen = wait_idle(page)
    assert page.locator('[data-testid="stApp"][data-test-script-state]').count() == 1
    assert seen["state"] == "notRunning/CONNECTED"
    assert seen["runs"] >= 1  # the first run of the app, watched from page load


def test_wait_idle_waits_for_a_long_run(page):
    """Run a method that takes seconds; wait_idle must see the run start and return only once its result is on
    the page (a fixed short sleep would return while it still runs)."""
    wait_idle(page)
    go(page, "Explain")
    _pick_method(page, "Integrated Gradients")
    steps = page.get_by_label("Integration steps", exact=True).and_(page.locator("input"))
    steps.fill("40")  # a setting no other test uses, so the result is not in the server's cache
    steps.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Run", exact=True).click()
    seen = wait_idle(page)
    # read at once, without waiting: the run must be over
    assert page.get_by_text(re.compile(r"^Explaining espresso")).count() == 1
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1
    assert page.locator(ERROR_SEL).count() == 0
    assert seen["runs"] >= 1 and seen["state"] == "notRunning/CONNECTED"
    # the run took seconds (40 gradient steps at 224²), so a fixed sleep of under a second would have
    # returned while it was still running; the wait covered it
    assert seen["seconds"] > 1.0, seen
    print("wait_idle saw", seen)


def test_parameter_panel_labels_and_conditional_fields(page):
    wait_idle(page)
    go(page, "Explain")
    _pick_method(page, "Occlusion (approximate, fast)")
    main = page.locator('[data-testid="stMain"]')
    text = main.inner_text()
    for raw in RAW:
        assert raw not in text, raw
    assert main.get_by_text("Patch size (px)").count() == 1
    assert main.get_by_text("Blur radius σ (px)").count() == 0  # zero baseline: no blur radius
    advanced = main.locator('[data-testid="stExpander"]').filter(has_text="Advanced")
    assert not advanced.get_by_text("Batch size").is_visible()  # behind the closed expander
    page.get_by_role("button", name="Run", exact=True).click()
    wait_idle(page)
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    _choose(page, "Patch fill", "Blurred image")  # the field appears at once, the shown result stays
    assert main.get_by_text("Blur radius σ (px)").count() == 1
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1
    advanced.get_by_text("Advanced").click()
    for knob in ("Coarse grid spacing (positions)", "Low precision (bfloat16)", "Batch size"):
        assert advanced.get_by_text(knob).is_visible(), knob
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "parameter_panel.png"), full_page=True)
    _choose(page, "Patch fill", "Image's mean colour")
    assert main.get_by_text("Blur radius σ (px)").count() == 0
    assert page.locator(ERROR_SEL).count() == 0
