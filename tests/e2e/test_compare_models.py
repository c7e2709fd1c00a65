"""In a real browser: the Compare models page with the two classroom models — both top-5 charts, both maps and
their difference with the rank correlation, then the CKA heat map — without an error.
Screenshot: /tmp/work/shots/compare_models.png (or $CNN_LENS_SHOTS/compare_models.png)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e.test_browser import ERROR_SEL, sidebar, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = os.environ.get("CNN_LENS_SHOTS", "/tmp/work/shots")
MAIN = '[data-testid="stMain"]'
CLEAN, SPURIOUS = "Classroom CNN (shapes, clean)", "Classroom CNN (shapes, Clever Hans)"


def _pick(page, box, option: str) -> None:
    box.click()
    page.keyboard.type(option)  # the list is long and drawn only in part: filter it first
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def test_compare_the_classroom_models(page):
    wait_idle(page)
    sb = sidebar(page)
    _pick(page, sb.get_by_role("combobox", name="Network"), CLEAN)
    _pick(page, sb.locator('[data-testid="stSelectbox"]').filter(has_text="Sample").get_by_role("combobox"),
          "classroom: square with cue")
    # exact title: "Compare" (the method comparison) is a different page
    page.locator('[data-testid="stSidebarNavLink"]').filter(
        has=page.get_by_text("Compare models", exact=True)).first.click()
    wait_idle(page)
    main = page.locator(MAIN)
    main.get_by_role("heading", name="Compare models").wait_for()
    assert main.get_by_role("combobox", name="Model A").input_value() == CLEAN
    assert main.get_by_role("combobox", name="Model B").input_value() == SPURIOUS
    charts = main.locator('[data-testid="stPlotlyChart"]')
    charts.nth(1).locator(".barlayer").wait_for()
    titles = [charts.nth(i).locator(".gtitle").text_content() for i in range(2)]
    assert "clean" in titles[0] and "Clever Hans" in titles[1] and all("top-1" in t for t in titles), titles

    main.get_by_role("button", name="Compare maps").click()
    wait_idle(page)
    main.get_by_text(re.compile(r"Spearman rank correlation")).wait_for()
    assert charts.count() == 5
    assert "Difference B − A" in charts.nth(4).locator(".gtitle").text_content()

    main.get_by_role("button", name="Run CKA").click()
    wait_idle(page)
    heat = charts.nth(5)
    heat.locator(".gtitle").wait_for()
    assert "Linear CKA" in heat.locator(".gtitle").text_content()
    main.get_by_text(re.compile(r"300 images in [\d.]+ s")).wait_for()
    page.wait_for_timeout(500)  # let plotly finish its layout
    assert page.locator(ERROR_SEL).count() == 0, page.locator(ERROR_SEL).all_inner_texts()
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    # Streamlit scrolls inside its main block, not the document: a tall window shows the whole page at once
    page.set_viewport_size({"width": 1400, "height": 3400})
    page.wait_for_timeout(1500)
    main.get_by_role("heading", name="Compare models").scroll_into_view_if_needed()
    page.screenshot(path=str(Path(SHOTS) / "compare_models.png"))
