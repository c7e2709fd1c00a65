"""The Trust page's Summary tab in a real browser: Run, the progress bar's run, the table and the agreement matrix."""
from __future__ import annotations

import os
import re

import pytest

from tests.e2e.test_browser import ERROR_SEL, go, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = os.environ.get("CNN_LENS_SHOTS")


def test_summary_tab_shows_table_and_agreement(page):
    wait_idle(page)
    go(page, "Trust")
    assert page.get_by_role("tab", name="Summary").get_attribute("aria-selected") == "true"  # the first tab
    page.get_by_role("button", name="Run summary").click()
    wait_idle(page)
    page.get_by_text(re.compile(r"random pixel orders \(3\)")).wait_for()
    assert page.locator(ERROR_SEL).count() == 0
    grid = page.locator('[data-testid="stMain"] [data-testid="stDataFrame"]').first
    grid.wait_for()
    chart = page.locator('[data-testid="stMain"] [data-testid="stPlotlyChart"]').first
    chart.locator(".gtitle").first.wait_for()
    assert chart.locator(".gtitle").first.text_content().startswith("Agreement between maps (Spearman ρ) · espresso")
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.get_by_text(re.compile(r"random pixel orders \(3\)")).scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(SHOTS, "trust.png"))
