"""The Camera page in a real browser: Chromium's fake camera takes a snapshot, the prediction and both maps appear,
and "Use this frame" makes it the app's image; without a camera the page says what to do."""
from __future__ import annotations

import os
import re

import pytest

from tests.e2e.conftest import CHROMIUM
from tests.e2e.test_browser import ERROR_SEL, SCRIPT_WATCH, go, sidebar, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = os.environ.get("CNN_LENS_SHOTS")
CHARTS = '[data-testid="stMain"] [data-testid="stPlotlyChart"]'


@pytest.fixture(scope="module")
def camera_browser(browser):
    """A second Chromium whose camera is the built-in fake device, allowed without asking."""
    b = browser.browser_type.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                          "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
    yield b
    b.close()


@pytest.fixture
def camera_page(camera_browser, app_url):
    ctx = camera_browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    ctx.add_init_script(f"({SCRIPT_WATCH})()")
    pg = ctx.new_page()
    pg.set_default_timeout(120_000)
    pg.goto(app_url)
    yield pg
    ctx.close()


def test_snapshot_shows_prediction_and_maps(camera_page):
    page = camera_page
    wait_idle(page)
    go(page, "Camera")
    # the fake camera's stream must be playing before the snapshot (a click before that takes no photo)
    page.wait_for_function("() => { const v = document.querySelector('[data-testid=\"stCameraInput\"] video');"
                           " return v && v.readyState >= 2 && v.videoWidth > 0; }")
    page.get_by_role("button", name="Take Photo").click()
    wait_idle(page)
    page.get_by_text(re.compile(r"^server time \d+\.\d\d s")).wait_for()
    assert page.locator(ERROR_SEL).count() == 0
    assert page.locator(CHARTS).count() == 3
    assert page.get_by_role("heading", name=re.compile(r"^Top-1: ")).count() == 1
    titles = page.locator(f"{CHARTS} .gtitle").all_text_contents()
    assert any(t.startswith("CAM · ") for t in titles), titles
    caption = page.get_by_text(re.compile(r"^server time")).inner_text()
    seconds = float(re.search(r"server time (\d+\.\d+) s", caption).group(1))
    print(f"server time per frame in the browser test: {caption}")
    assert seconds > 0
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.get_by_role("heading", name=re.compile(r"^Top-1: ")).scroll_into_view_if_needed()
        page.locator('[data-testid="stMain"]').evaluate("el => el.scrollBy(0, -120)")
        page.screenshot(path=os.path.join(SHOTS, "camera.png"))
    page.get_by_role("button", name="Use this frame").click()
    wait_idle(page)
    assert "camera frame" in sidebar(page).inner_text()
    go(page, "Predict")
    assert "camera frame" in page.locator('[data-testid="stMain"]').inner_text()  # the image's caption
    assert page.locator(ERROR_SEL).count() == 0


def test_without_a_camera_the_page_says_what_to_do(page):
    """The plain test browser has no camera device: Streamlit's widget says so, and the page explains."""
    wait_idle(page)
    go(page, "Camera")
    page.get_by_text(re.compile("Allow this site to use the camera")).wait_for()
    assert "Upload" in page.locator('[data-testid="stAlertContainer"]').first.inner_text()
    assert page.locator(ERROR_SEL).count() == 0
    assert page.locator(CHARTS).count() == 0
