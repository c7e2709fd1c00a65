"""End-to-end in a real browser: the served app, driven through Debian's chromium by Playwright."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from skimage import data

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ERROR_SEL = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def wait_idle(page, timeout: float = 180_000) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !/Running|Connecting/.test(document.querySelector('[data-testid=\"stStatusWidget\"]').innerText)",
        timeout=timeout)
    page.wait_for_timeout(200)


def sidebar(page):
    return page.locator('[data-testid="stSidebar"]')


def choose_upload(page, name: str, payload: bytes, mime: str) -> None:
    sidebar(page).get_by_test_id("stRadioGroup").get_by_text("Upload", exact=True).click()
    wait_idle(page)
    sidebar(page).get_by_label("Image file").locator('input[type="file"]').set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": payload}])
    wait_idle(page)


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def nav_links(page) -> list[str]:
    return page.locator('[data-testid="stSidebarNavLink"]').evaluate_all("els => els.map(e => e.href)")


def test_default_model_classifies_bundled_coffee(page):
    wait_idle(page)
    page.get_by_text(re.compile(r"Top-1: espresso")).wait_for()
    assert page.locator(ERROR_SEL).count() == 0


def test_every_page_loads_without_error(page):
    wait_idle(page)
    links = nav_links(page) or [page.url]  # a single page has no navigation links
    for href in links:
        page.goto(href)
        wait_idle(page)
        page.wait_for_selector("h1")
        assert page.locator(ERROR_SEL).count() == 0, (href, page.locator(ERROR_SEL).all_inner_texts())


def test_uploaded_jpeg_is_classified_and_junk_png_refused(page):
    wait_idle(page)
    choose_upload(page, "kitty.jpg", jpeg(data.chelsea()), "image/jpeg")
    top = page.get_by_text(re.compile(r"Top-1: ")).inner_text()
    assert re.search(r"cat|tabby", top), top
    choose_upload(page, "junk.png", b"this is not an image at all" * 10, "image/png")
    msg = sidebar(page).locator('[data-testid="stAlertContentError"]').inner_text()
    assert "not an image" in msg and "previous image is kept" in msg
    # the session keeps working with the previous image
    assert re.search(r"cat|tabby", page.get_by_text(re.compile(r"Top-1: ")).inner_text())


def test_switch_model_and_back(page):
    wait_idle(page)
    box = sidebar(page).locator('[data-testid="stSelectbox"]').first
    box.click()
    options = page.locator('[role="option"]')
    labels = options.all_inner_texts()
    other = next((l for l in labels if "Classroom" in l), None) or next(l for l in labels if "VGG16" in l)
    page.get_by_role("option", name=other).click()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    box.click()
    page.get_by_role("option", name=re.compile("EfficientNet-Lite0")).click()
    wait_idle(page)
    page.get_by_text(re.compile(r"Top-1: espresso")).wait_for()
