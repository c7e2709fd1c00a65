"""LRP in the browser: a user picks "LRP (ε-plus-flat)" on Explain for the bundled coffee photo and sees the relevance
map and its per-channel panel, with no error; the downloaded map is relevance at input size.
(Its values are checked against Zennit itself in tests/interpret/attribution/test_lrp.py.)"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from tests.e2e.test_browser import ERROR_SEL, explain_with

SHOTS = os.environ.get("CNN_LENS_SHOTS")


@pytest.mark.slow
def test_lrp_on_explain(page, tmp_path):
    explain_with(page, "LRP (ε-plus-flat)")
    page.get_by_text(re.compile(r"Explaining espresso")).wait_for()
    page.locator('[data-testid="stPlotlyChart"]').nth(1).wait_for()  # the map and the per-channel relevance
    assert page.locator(ERROR_SEL).count() == 0
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(SHOTS, "lrp.png"))
    with page.expect_download() as dl:
        page.get_by_role("button", name="Map (.npy)").click()
    path = tmp_path / "map.npy"
    dl.value.save_as(path)
    got = np.load(path)
    assert got.shape == (224, 224) and np.isfinite(got).all()
    assert np.abs(got).max() > 0  # relevance reached the pixels (z⁺ and flat rules may leave it all positive)
