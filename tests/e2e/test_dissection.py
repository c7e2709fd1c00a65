"""In a real browser: dissect the Clever Hans classroom model on the Dissection page, click a unit, and see its
map with the concept mask outline (screenshot to $CNN_LENS_SHOTS or /tmp/work/shots/dissection.png)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from interpret.units import dissection as DS
from models.registry import load_model
from tests.e2e.test_browser import ERROR_SEL, go, sidebar, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SHOTS = Path(os.environ.get("CNN_LENS_SHOTS", "/tmp/work/shots"))


def test_dissect_classroom_and_click_a_unit(page):
    wait_idle(page)
    box = sidebar(page).locator('[data-testid="stSelectbox"]').first
    box.click()
    page.get_by_role("option", name=re.compile("Clever Hans")).click()
    wait_idle(page)
    go(page, "Dissection")
    page.get_by_role("heading", name="Dissection").wait_for()
    images = page.get_by_role("spinbutton", name="Images")
    images.fill("120")
    images.press("Tab")
    page.get_by_role("button", name="Run dissection", exact=True).click()
    wait_idle(page)
    page.get_by_text(re.compile(r"120 images, 4 layer\(s\)")).wait_for()
    assert page.locator(ERROR_SEL).count() == 0, page.locator(ERROR_SEL).all_inner_texts()
    page.get_by_text("units detecting each concept").first.wait_for()
    # click the second unit of the ranking
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "dissection_run.png"), full_page=True)
    unit_box = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.locator("label", has_text=re.compile(r"^Unit$")))
    # the second unit of the ranking the page shows first (features.2), computed here directly
    ref = DS.dissect(load_model("classroom_spurious"), DS.classroom_dissection_data("test", 120, spurious=True),
                     ["features.2"], batch_size=50).layers["features.2"].best()
    u, c, _ = ref[1]
    field = unit_box.locator("input")
    field.click()
    field.fill(f"unit {u} — ")
    page.keyboard.press("Enter")
    unit = re.match(r"(\d+) (\S+)", f"{u} {c}")
    wait_idle(page)
    assert page.locator(ERROR_SEL).count() == 0, page.locator(ERROR_SEL).all_inner_texts()
    page.get_by_text(re.compile(rf"unit {unit.group(1)} \({re.escape(unit.group(2).rstrip(','))}\) on image")) \
        .first.wait_for()
    page.get_by_text(f"Unit {unit.group(1)}").first.scroll_into_view_if_needed()
    page.set_viewport_size({"width": 1400, "height": 3000})  # the app scrolls inside its own container
    wait_idle(page)
    page.screenshot(path=str(SHOTS / "dissection.png"))
