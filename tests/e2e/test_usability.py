"""In a real browser (issue 12, points 7, 9 and 10): the classroom's Clever Hans maps are large and titled with
class names, there is one model selector, the target class follows the user from page to page and into the
exported file name, a refused upload's message does not follow the user to other pages, and Compare's subplot
titles do not run into each other."""
from __future__ import annotations

import os
import re

import pytest

from interpret.attribution.registry import METHODS
from tests.e2e.test_browser import ERROR_SEL, choose_upload, go, run_form, sidebar, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = os.environ.get("CNN_LENS_SHOTS")  # a folder: pictures of what the user sees, for a person to look at
MAIN = '[data-testid="stMain"]'
CHARTS = '[data-testid="stPlotlyChart"]'

# Rendered size of the largest raster (go.Image / heatmap) in each chart, and the chart's title text.
CHART_INFO = """els => els.map(el => {
  const imgs = [...el.querySelectorAll('svg image')].map(i => i.getBoundingClientRect());
  const t = el.querySelector('.gtitle');
  return {w: Math.max(0, ...imgs.map(r => r.width)), h: Math.max(0, ...imgs.map(r => r.height)),
          title: t ? t.textContent : ''};
})"""

# Bounding boxes of a chart's annotation texts (plotly draws subplot titles as annotations).
ANNOTATION_BOXES = """el => [...el.querySelectorAll('g.annotation')].map(a => {
  const r = a.getBoundingClientRect();
  return {text: a.textContent, x0: r.left, x1: r.right, y0: r.top, y1: r.bottom};
})"""


def _shot(page, name: str, at=None) -> None:
    """A screenshot of the window (Streamlit's main area scrolls inside it), scrolled to ``at`` if given."""
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        if at is not None:
            at.scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(SHOTS, name))


# What a selectbox shows: its text and the value of its input (the chosen option is drawn in either).
SHOWN = "el => el.textContent + ' ' + [...el.querySelectorAll('input')].map(i => i.value).join(' ')"


def _target_text(page) -> str:
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Target class").first
    return box.evaluate(SHOWN).removeprefix("Target class (type to search)").strip()


def test_classroom_has_one_model_selector(page):
    """Entering the walk-through switches the sidebar's network to the classroom CNN and says so; the page has
    no model selector of its own; the Clever Hans CNN is picked in the sidebar and drives the page."""
    wait_idle(page)
    go(page, "Classroom walk-through")
    page.get_by_text(re.compile(r"Network: Classroom CNN \(shapes, clean\)")).wait_for()
    assert page.get_by_text(re.compile(r"Switched the network from EfficientNet-Lite0")).count() == 1
    network = sidebar(page).locator('[data-testid="stSelectbox"]').first
    assert "Classroom CNN (shapes, clean)" in network.evaluate(SHOWN)
    page.locator(MAIN).get_by_role("radiogroup", name="Step").wait_for()
    radios = page.locator(f'{MAIN} [role="radiogroup"]').evaluate_all("els => els.map(e => e.ariaLabel)")
    assert radios == ["Step"], radios                                  # no "Model" radio beside the steps
    network.click()
    page.get_by_role("option", name="Classroom CNN (shapes, Clever Hans)").click()
    wait_idle(page)
    page.get_by_text(re.compile(r"Network: Classroom CNN \(shapes, Clever Hans\)")).wait_for()
    assert page.locator(ERROR_SEL).count() == 0


def test_clever_hans_maps_are_large_and_named(page):
    """Step 8's four maps are drawn at least 300 px wide and high, titled with the predicted class's name."""
    wait_idle(page)
    go(page, "Classroom walk-through")
    page.locator(MAIN).get_by_text("8 · Clever Hans", exact=True).click()
    wait_idle(page)
    charts = page.locator(f"{MAIN} {CHARTS}")
    charts.nth(3).locator("svg image").first.wait_for()
    page.wait_for_timeout(500)  # let plotly finish its layout
    info = charts.evaluate_all(CHART_INFO)
    _shot(page, "clever_hans_top.png", charts.nth(1))
    _shot(page, "clever_hans_bottom.png", charts.nth(3))
    assert len(info) == 4, info
    for c in info:
        assert c["w"] >= 300 and c["h"] >= 300, info
        assert re.search(r" · (circle|square|triangle|cross|star|ring) \(#\d\)$", c["title"]), c["title"]
        assert "class " not in c["title"]
    assert "· star (#4)" in info[0]["title"]                     # the Clever Hans model, tagged: "star"
    assert page.locator(ERROR_SEL).count() == 0


def test_target_class_follows_the_user_and_names_the_export(page):
    """A class picked on Compare is the one Trust and Explain use; Explain's figure and PNG name carry it."""
    wait_idle(page)
    go(page, "Compare")
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Target class").first
    box.click()
    page.keyboard.type("tiger cat")
    page.get_by_role("option", name=re.compile(r"^tiger cat")).first.click()
    wait_idle(page)
    assert _target_text(page).startswith("tiger cat (#282)")
    go(page, "Trust")
    assert _target_text(page).startswith("tiger cat (#282)")
    go(page, "Explain")
    assert _target_text(page).startswith("tiger cat (#282)")
    run_form(page)
    page.get_by_text(re.compile(r"Explaining tiger cat")).wait_for()
    chart = page.locator(f"{MAIN} {CHARTS}").first
    chart.locator(".gtitle").first.wait_for()
    title = chart.locator(".gtitle").first.text_content()
    assert title == "Grad-CAM · tiger cat (#282)", title
    with page.expect_download() as dl:
        page.get_by_role("button", name="PNG", exact=True).click()
    assert dl.value.suggested_filename == "efficientnet_lite0_gradcam_tiger_cat_282.png"
    _shot(page, "explain_tiger_cat.png")
    assert page.locator(ERROR_SEL).count() == 0


def test_refused_upload_message_stays_where_it_happened(page):
    """A refused file's message (the app's for a non-image, the browser's for an oversize file) is shown on the
    page where it was uploaded and is gone on the next page; the previous image is kept throughout."""
    wait_idle(page)
    choose_upload(page, "junk.png", b"this is not an image at all" * 10, "image/png")
    err = sidebar(page).locator('[data-testid="stAlertContentError"]')
    err.wait_for()
    assert "not an image" in err.inner_text()
    go(page, "Explain")
    assert sidebar(page).locator('[data-testid="stAlertContentError"]').count() == 0
    assert "junk.png" not in sidebar(page).inner_text()
    sidebar(page).get_by_label("Image file").locator('input[type="file"]').set_input_files(
        files=[{"name": "huge.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + b"\0" * (21 * 2**20)}])
    wait_idle(page)
    assert "File must be 20.0MB or smaller" in sidebar(page).inner_text()
    go(page, "Trust")
    assert "File must be" not in sidebar(page).inner_text()
    assert _target_text(page).startswith("espresso")              # still the bundled coffee
    _shot(page, "after_refused_uploads.png")


def test_compare_titles_do_not_overlap(page):
    """Compare with ten methods (three rows of four, long labels beside each other): no two subplot titles'
    boxes intersect and the figure title names the class."""
    wait_idle(page)
    go(page, "Compare")
    # keep the ten fast methods (saliency … guided Grad-CAM, labels long and short): Backspace drops the last
    methods = page.locator('[data-testid="stMultiSelect"]').first
    methods.locator("input").first.click()
    for _ in range(len(METHODS) - 10):
        page.keyboard.press("Backspace")
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Run all", exact=True).click()
    wait_idle(page, timeout=600_000)
    chart = page.locator(f"{MAIN} {CHARTS}").first
    chart.locator("g.annotation").first.wait_for()
    page.wait_for_timeout(500)
    boxes = chart.evaluate(ANNOTATION_BOXES)
    _shot(page, "compare_top.png", chart)
    _shot(page, "compare_bottom.png", page.locator('[data-testid="stDataFrame"]').first)
    assert len(boxes) == 10, [b["text"] for b in boxes]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = a["x1"] <= b["x0"] or b["x1"] <= a["x0"] or a["y1"] <= b["y0"] or b["y1"] <= a["y0"]
            assert apart, (a, b)
    title = chart.locator(".gtitle").first.text_content()
    assert title == "Attribution maps for espresso (#967)", title
    assert page.locator(ERROR_SEL).count() == 0
