"""In a real browser: on "What if I hide this?" a user drags a rectangle over the espresso cup with the mouse, the
prediction of the edited photo appears at once (lower than before), then the maps' shares of the region; Undo and
Clear remove the rectangles. Screenshot: /tmp/work/shots/brush.png (or $CNN_LENS_SHOTS/brush.png)."""
from __future__ import annotations

import os
import re

import pytest

from tests.e2e.test_browser import ERROR_SEL, go, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = os.environ.get("CNN_LENS_SHOTS", "/tmp/work/shots")
MAIN = '[data-testid="stMain"]'
CANVAS = 'iframe[title="streamlit_image_coordinates.streamlit_image_coordinates"]'


def _open_page(page, title: str) -> None:
    """``go``, after expanding the sidebar's navigation when Streamlit folds long menus ("View n more")."""
    link = page.locator('[data-testid="stSidebarNavLink"]', has_text=title)
    more = page.locator('[data-testid="stSidebarNavViewButton"]')
    if link.count() == 0 and more.count():
        more.first.click()
    go(page, title)


def _drag(page, fx0: float, fy0: float, fx1: float, fy1: float) -> None:
    """Press at (fx0, fy0) and release at (fx1, fy1), as fractions of the drawn photo, in small steps."""
    img = page.frame_locator(CANVAS).locator("#image")
    img.wait_for()
    page.locator(CANVAS).scroll_into_view_if_needed()
    page.wait_for_function(f"""() => {{ const f = document.querySelector('{CANVAS}');
        const i = f && f.contentDocument.getElementById('image');
        return i && i.complete && i.naturalWidth > 0 && i.height > 50; }}""")
    box = page.locator(CANVAS).bounding_box()
    inner = img.bounding_box()  # in the page's coordinates already
    assert inner["width"] > 100 and box["height"] > 100, (box, inner)
    x0, y0 = inner["x"] + fx0 * inner["width"], inner["y"] + fy0 * inner["height"]
    x1, y1 = inner["x"] + fx1 * inner["width"], inner["y"] + fy1 * inner["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=8)
    page.mouse.up()
    wait_idle(page)


def _target_p(page) -> float:
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Target class").first
    text = box.evaluate("el => el.textContent + ' ' + [...el.querySelectorAll('input')].map(i => i.value).join(' ')")
    return float(re.search(r"— ([\d.]+)%", text).group(1))


def test_drag_a_rectangle_and_see_the_prediction_change(page):
    wait_idle(page)
    _open_page(page, "What if I hide this?")
    page.get_by_text("Nothing is painted yet").wait_for()
    before = _target_p(page)                      # espresso on the bundled coffee photo
    _drag(page, 0.25, 0.2, 0.75, 0.8)            # over the cup
    metric = page.locator(f'{MAIN} [data-testid="stMetric"]')
    metric.wait_for()
    value = float(re.search(r"([\d.]+)%", metric.locator('[data-testid="stMetricValue"]').inner_text()).group(1))
    delta = metric.locator('[data-testid="stMetricDelta"]').inner_text()
    assert value < before - 5, (before, value)   # hiding the cup lowers P(espresso) a lot
    assert re.search(r"-\d+\.\d points", delta), delta
    chart = page.locator(f'{MAIN} [data-testid="stPlotlyChart"]').first
    chart.locator(".gtitle").first.wait_for()
    title = chart.locator(".gtitle").first.text_content()
    assert re.match(r"Top classes before / after hiding\s*target espresso \(#967\): [\d.]+% → [\d.]+%$", title), title
    page.get_by_role("button", name="Compute the maps").click()
    wait_idle(page)
    table = page.locator(f'{MAIN} [data-testid="stDataFrame"]')
    table.wait_for()
    page.get_by_text(re.compile(r"Hiding the region changed P\(espresso\) by -\d")).wait_for()
    page.set_viewport_size({"width": 1400, "height": 2150})  # the whole page in one picture (the main area
    page.wait_for_timeout(800)                                # scrolls inside the window)
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, "brush.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})
    assert page.locator(ERROR_SEL).count() == 0

    _drag(page, 0.05, 0.05, 0.15, 0.15)          # a second rectangle accumulates
    page.get_by_text(re.compile(r"^2 rectangle\(s\)")).wait_for()
    page.get_by_role("button", name="Undo", exact=True).click()
    wait_idle(page)
    page.get_by_text(re.compile(r"^1 rectangle\(s\)")).wait_for()
    page.get_by_role("button", name="Clear", exact=True).click()
    wait_idle(page)
    page.get_by_text("Nothing is painted yet").wait_for()
    _drag(page, 0.5, 0.5, 0.5, 0.5)              # a click paints nothing: a message, no prediction
    page.get_by_text(re.compile(r"That stroke painted nothing")).wait_for()
    assert page.locator(f'{MAIN} [data-testid="stMetric"]').count() == 0
    assert page.locator(ERROR_SEL).count() == 0
