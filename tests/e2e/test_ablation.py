"""In a real browser: the unit-ablation page on the Clever Hans model zeroes the tag detectors of its last layer
and shows the accuracy chart (intact, ablated, random control with error bars) and the top 5 before and after,
without an error. Screenshot: /tmp/work/shots/ablation.png (or $CNN_LENS_SHOTS/ablation.png)."""
from __future__ import annotations

import os
import re

import pytest

from tests.e2e.test_browser import ERROR_SEL, go, run_form, sidebar, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = os.environ.get("CNN_LENS_SHOTS", "/tmp/work/shots")
MAIN = '[data-testid="stMain"]'


def test_ablation_of_tag_detectors_in_the_browser(page):
    wait_idle(page)
    go(page, "Unit ablation")
    box = sidebar(page).locator('[data-testid="stSelectbox"]').first
    box.click()
    page.get_by_role("option", name="Classroom CNN (shapes, Clever Hans)").click()
    wait_idle(page)
    main = page.locator(MAIN)
    main.get_by_text("Detectors of a concept (dissection)", exact=True).click()
    wait_idle(page)
    main.get_by_role("spinbutton", name="Generated images per set").fill("60")
    main.get_by_role("spinbutton", name="Random control draws").fill("3")
    run_form(page)
    chart = main.locator('[data-testid="stPlotlyChart"]').first
    chart.locator(".barlayer").wait_for()
    page.wait_for_timeout(500)  # let plotly finish its layout
    assert page.locator(ERROR_SEL).count() == 0, page.locator(ERROR_SEL).all_inner_texts()
    assert main.get_by_text(re.compile(r"Detectors of 'tag'")).count() == 1
    assert main.get_by_text(re.compile(r"^\d+ units zeroed: features\.20 \[")).count() == 1
    title = chart.locator(".gtitle").text_content()
    assert "Classroom CNN (shapes, Clever Hans)" in title and "units zeroed" in title
    # three bar groups (intact, ablated, random) over the two data sets, and the random bars carry error bars
    assert chart.locator(".barlayer .trace.bars").count() == 3
    assert chart.locator(".errorbar").count() >= 2
    assert main.get_by_text("Top 5, intact", exact=True).count() == 1
    os.makedirs(SHOTS, exist_ok=True)
    chart.scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(SHOTS, "ablation.png"))
