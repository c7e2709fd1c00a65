"""End-to-end in a real browser: the served app, driven through Debian's chromium by Playwright."""
from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
from PIL import Image
from skimage import data

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ERROR_SEL = '[data-testid="stException"], [data-testid="stAlertContentError"]'


# The app's run state as the frontend renders it: the stApp element carries data-test-script-state (initial,
# running, notRunning, rerunRequested, stopRequested, compilationError) and data-test-connection-state. A watcher
# in the page records each change of the pair, how many runs it has seen start, and when the page last sent the
# server a message (a widget change is sent at once, but the server reports the run it starts only later).
SCRIPT_WATCH = """() => {
  let w = window.__cnnLensScript;
  if (!w) {
    w = window.__cnnLensScript = {state: null, since: performance.now(), runs: 0, lastSend: -1e9};
    w.read = () => {
      const app = document.querySelector('[data-testid="stApp"]');
      const s = app ? app.getAttribute('data-test-script-state') + '/' + app.getAttribute('data-test-connection-state')
                    : 'absent';
      if (s !== w.state) {
        w.state = s; w.since = performance.now();
        if (s.startsWith('running/')) w.runs += 1;
      }
    };
    new MutationObserver(w.read).observe(document, {subtree: true, childList: true, attributes: true,
      attributeFilter: ['data-test-script-state', 'data-test-connection-state']});
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (...args) { w.lastSend = performance.now(); return send.apply(this, args); };
  }
  w.read();
  return w;
}"""

IDLE = """([settle, grace]) => {
  const w = (""" + SCRIPT_WATCH + """)();
  const now = performance.now();
  if (!/^(notRunning|compilationError)\\/CONNECTED$/.test(w.state)) return false;
  // a message sent after the last state change may still start a run: wait for it, or for the grace period
  if (w.lastSend > w.since && now - w.lastSend < grace) return false;
  return now - Math.max(w.since, w.waitStart ?? -1e9) >= settle;  // no waitStart: the page was reloaded
}"""


def wait_idle(page, timeout: float = 300_000, settle_ms: float = 300, grace_ms: float = 3000) -> dict:
    """Wait until the app's script is not running (nor about to run) and has stayed so for ``settle_ms``.

    Reads the run state the frontend renders (``data-test-script-state`` on stApp) and the connection state;
    a message the page sent after the last state change (a click, a typed value) counts as a run about to
    start until the state changes or ``grace_ms`` pass. Returns what it saw: {"runs": script runs started
    since the previous wait_idle returned (on pages whose watcher was installed at load, as the ``page``
    fixture does), "seconds": how long it waited, "state": the final state}.
    """
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    t0 = page.evaluate(f"() => {{ const w = ({SCRIPT_WATCH})(); w.waitStart = performance.now(); "
                       "return w.waitStart; }")
    page.wait_for_function(IDLE, arg=[settle_ms, grace_ms], timeout=timeout, polling=50)
    seen = page.evaluate("() => { const w = window.__cnnLensScript; const r = {runs: w.runs - (w.runsSeen ?? 0), "
                         "state: w.state, t: performance.now()}; w.runsSeen = w.runs; delete w.waitStart; "
                         "return r; }")
    return {"runs": seen["runs"], "seconds": max(seen["t"] - t0, 0.0) / 1000, "state": seen["state"]}


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
    # wait for the new result (a loaded machine may start the rerun late), then read it
    page.get_by_text(re.compile(r"Top-1: .*(cat|tabby)")).wait_for()
    choose_upload(page, "junk.png", b"this is not an image at all" * 10, "image/png")
    err = sidebar(page).locator('[data-testid="stAlertContentError"]')
    err.wait_for()
    msg = err.inner_text()
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


def go(page, title: str) -> None:
    """Navigate inside the app (a full page load would start a new session)."""
    # exact title: "Compare" must not open "Compare models"
    page.locator('[data-testid="stSidebarNavLink"]').filter(has=page.get_by_text(title, exact=True)).first.click()
    wait_idle(page)


def run_form(page, label: str = "Run") -> None:
    page.get_by_role("button", name=label, exact=True).click()
    wait_idle(page)


def test_explain_and_download(page, app_url, tmp_path):
    wait_idle(page)
    go(page, "Explain")
    run_form(page)  # Grad-CAM is the default method
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    assert page.get_by_text(re.compile(r"Explaining espresso")).count() == 1
    assert page.locator(ERROR_SEL).count() == 0
    with page.expect_download() as dl:
        page.get_by_role("button", name="Map (.npy)").click()
    path = tmp_path / "map.npy"
    dl.value.save_as(path)
    arr = np.load(path)
    assert arr.shape == (224, 224) and np.isfinite(arr).all() and arr.max() > 0
    with page.expect_download() as dl:
        page.get_by_role("button", name="PNG", exact=True).click()
    png = tmp_path / "map.png"
    dl.value.save_as(png)
    assert Image.open(png).format == "PNG"


def explain_with(page, method_label: str) -> None:
    """Open Explain, pick a method by its label and run it with its default parameters."""
    wait_idle(page)
    go(page, "Explain")
    page.get_by_role("button", name="Run", exact=True).wait_for()
    page.locator('[data-testid="stSelectbox"]').filter(has_text=re.compile(r"^Method$")).click()
    page.get_by_role("option", name=method_label).click()
    wait_idle(page)
    run_form(page)


def test_fast_lime_shows_its_stability(page):
    """A user picks the fast LIME on the bundled coffee: the map, the superpixel weights and the stopping report
    (samples used of the cap, settled or not, the top-5 overlap per check) appear, with no error."""
    explain_with(page, "LIME (adaptive, fast)")
    page.get_by_text(re.compile(r"Sampling stopped after \d+ of at most 700 samples")).wait_for()
    page.locator('[data-testid="stPlotlyChart"]').nth(2).wait_for()  # map, weights, stability per check
    if os.environ.get("CNN_LENS_SHOT"):  # a picture of what the user sees, for a person to look at
        page.get_by_text(re.compile(r"Sampling stopped after")).scroll_into_view_if_needed()
        page.screenshot(path=os.environ["CNN_LENS_SHOT"])
    assert page.locator(ERROR_SEL).count() == 0


def test_approximate_occlusion_says_what_it_measured(page):
    """A user picks the approximate occlusion: the map appears with how many patch positions were measured, and the
    expander plots measured vs interpolated positions, with no error."""
    explain_with(page, "Occlusion (approximate, fast)")
    caption = page.get_by_text(re.compile(r"Scored \d+ of 784 patch positions"))
    caption.wait_for()
    n = int(re.search(r"Scored (\d+) of", caption.inner_text()).group(1))
    assert 25 < n < 784  # refined beyond the coarse grid, not every position
    page.get_by_text("Which patch positions were measured").click()
    page.locator('[data-testid="stPlotlyChart"]').nth(1).wait_for()
    assert page.locator(ERROR_SEL).count() == 0


def test_three_sessions_see_their_own_image(browser, app_url):
    """Three browser sessions on one server, each with its own photo: each sees its own prediction and map."""
    photos = {"coffee.jpg": (data.coffee(), "espresso"), "cat.jpg": (data.chelsea(), "cat|tabby"),
              "rocket.jpg": (data.rocket(), "missile|projectile|space shuttle")}
    contexts, pages = [], []
    try:
        for name, (arr, _) in photos.items():
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            contexts.append(ctx)
            pg = ctx.new_page()
            pg.set_default_timeout(180_000)
            pg.goto(app_url)
            wait_idle(pg)
            choose_upload(pg, name, jpeg(arr), "image/jpeg")
            pages.append(pg)
        for pg in pages:  # start all three explanations before reading any result
            go(pg, "Explain")
            pg.get_by_role("button", name="Run", exact=True).click()
        for pg, (name, (_, expect)) in zip(pages, photos.items()):
            wait_idle(pg)
            pg.locator('[data-testid="stPlotlyChart"]').first.wait_for()
            line = pg.get_by_text(re.compile(r"^Explaining ")).inner_text()
            assert re.search(expect, line), (name, line)
            assert name in sidebar(pg).inner_text()
    finally:
        for ctx in contexts:
            ctx.close()


def test_oversize_upload_is_refused_with_a_message(page):
    wait_idle(page)
    choose_upload(page, "huge.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (21 * 2**20), "image/png")
    text = sidebar(page).inner_text()
    assert re.search(r"(must be|larger than|exceeds).{0,40}20", text, re.I | re.S), text[-600:]
    page.get_by_text(re.compile(r"Top-1: espresso")).wait_for()  # the previous image is still in use


def test_unit_views_filters_and_receptive_field(page):
    wait_idle(page)
    go(page, "Filters")
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    assert page.get_by_text(re.compile(r"32 filters|32 ")).count() >= 1
    go(page, "Receptive fields")
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    assert page.locator(ERROR_SEL).count() == 0
    go(page, "Activation maps")
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    assert page.locator(ERROR_SEL).count() == 0


def test_other_class_compare_and_sanity_check(page):
    """Explain a class other than the predicted one, compare all methods, run the sanity check."""
    wait_idle(page)
    choose_upload(page, "kitty.jpg", jpeg(data.chelsea()), "image/jpeg")
    go(page, "Explain")
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Target class").first
    box.click()
    page.keyboard.type("tiger cat")
    page.get_by_role("option", name=re.compile(r"^tiger cat")).first.click()
    wait_idle(page)
    run_form(page)
    page.get_by_text(re.compile(r"Explaining tiger cat")).wait_for()
    assert page.locator(ERROR_SEL).count() == 0
    go(page, "Compare")
    run_form(page, "Run all")
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    assert page.locator(ERROR_SEL).count() == 0
    go(page, "Trust")
    page.get_by_role("tab", name=re.compile("Model randomisation")).click()
    run_form(page, "Run sanity check")
    page.get_by_text(re.compile(r"cascade steps")).wait_for()
    assert page.locator(ERROR_SEL).count() == 0
