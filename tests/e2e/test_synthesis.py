"""In a real browser: the Synthesized images page runs the quick preset for a batch of 3 images of the photo's class,
shows the batch as a row (3 image panels), the objective curve with labelled axes, and exports a zip holding 3 PNGs
of the page's size and settings.json whose history has one value per step.
Screenshot: /tmp/work/shots/synthesis.png (or $CNN_LENS_SHOTS/synthesis.png)."""
from __future__ import annotations

import io
import json
import os
import re
import zipfile

import pytest
from PIL import Image

from tests.e2e.test_browser import ERROR_SEL, go, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = os.environ.get("CNN_LENS_SHOTS", "/tmp/work/shots")
MAIN = '[data-testid="stMain"]'


def test_quick_batch_of_three_row_curve_and_export(page, tmp_path):
    wait_idle(page)
    go(page, "Synthesized images")
    main = page.locator(MAIN)
    main.get_by_text("Quick", exact=True).click()
    wait_idle(page)
    box = main.get_by_label("Batch (images)", exact=True)
    box.fill("3")
    box.press("Tab")
    div = main.get_by_label("Diversity weight", exact=True)
    div.fill("1")
    div.press("Tab")
    main.get_by_role("button", name="Synthesize").click()
    wait_idle(page, timeout=900_000, settle_ms=500)
    assert page.locator(ERROR_SEL).count() == 0, page.locator(ERROR_SEL).all_inner_texts()
    assert main.get_by_text(re.compile(r"class espresso \+ diversity at .+ — 64 steps in")).count() == 1
    charts = main.locator('[data-testid="stPlotlyChart"]')
    charts.nth(1).locator(".scatterlayer").wait_for()
    page.wait_for_timeout(500)  # let plotly finish its layout
    row, curve = charts.nth(0), charts.nth(1)
    assert row.locator("image").count() == 3  # one RGB panel per image of the batch
    titles = row.locator(".annotation-text").all_text_contents()
    # (plotly draws a wrapped title as lines whose text runs together)
    assert [t.replace(" ", "") for t in titles] == [f"image{i}:classespresso" for i in range(3)], titles
    assert curve.locator(".xtitle").text_content() == "step"
    assert "objective" in curve.locator(".ytitle").text_content()
    with page.expect_download() as dl:
        main.get_by_role("button", name="Download images + settings (zip)").click()
    path = tmp_path / "synth.zip"
    dl.value.save_as(path)
    z = zipfile.ZipFile(path)
    pngs = sorted(n for n in z.namelist() if n.endswith(".png"))
    assert len(pngs) == 3
    for n in pngs:
        assert Image.open(io.BytesIO(z.read(n))).size == (128, 128)
    meta = json.loads(z.read("settings.json"))
    assert meta["settings"]["batch"] == 3 and len(meta["history"]) == 64 and meta["steps_done"] == 64
    os.makedirs(SHOTS, exist_ok=True)
    page.mouse.move(5, 5)  # no tooltip in the screenshot
    row.scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(SHOTS, "synthesis.png"), full_page=False)
