"""In a real browser, charts show exactly the colour scale their figure defines: the zero of an unsigned map is
Inferno's black (Streamlit's frontend used to turn #000004 into pink), and signed activations are drawn on the
diverging scale centred at 0. Read from plotly's own state in the page and from the rendered pixels."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image
from plotly.colors import hex_to_rgb, sample_colorscale, unlabel_rgb

from tests.e2e.test_browser import ERROR_SEL, go, run_form, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = os.environ.get("CNN_LENS_SHOTS")  # a folder for pictures a person can look at

# The first heatmap on the page: its colour scale and range as plotly.js resolved them, the cell of the value
# nearest to `target` (relative position in [0, 1] of the range) and that cell's centre in pixels within the
# plot's div.
READ = """([rel, band]) => {
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const i = (gd._fullData || []).findIndex(t => t.type === 'heatmap');
    if (i < 0) continue;
    const t = gd._fullData[i], L = gd._fullLayout;
    const xa = L[(t.xaxis || 'x').replace('x', 'xaxis')], ya = L[(t.yaxis || 'y').replace('y', 'yaxis')];
    const want = t.zmin + rel * (t.zmax - t.zmin);
    let best = null;
    t.z.forEach((row, r) => row.forEach((v, c) => {
      if (v === null || Number.isNaN(v) || r === 0 || c === 0 || r === t.z.length - 1 || c === row.length - 1) return;
      // a cell whose neighbours have about the same value, so the pixel read at its centre is that value's colour
      const near = [row[c - 1], row[c + 1], t.z[r - 1][c], t.z[r + 1][c]].every(
        u => u !== null && !Number.isNaN(u) && Math.abs(u - v) <= band * (t.zmax - t.zmin));
      const d = Math.abs(v - want);
      if (near && (best === null || d < best.d)) best = {d, v, r, c};
    }));
    const x = t.x ? t.x[best.c] : best.c, y = t.y ? t.y[best.r] : best.r;
    return {colorscale: t.colorscale, zmin: t.zmin, zmax: t.zmax, value: best.v,
            px: xa._offset + xa.d2p(x), py: ya._offset + ya.d2p(y), index: i,
            div: Array.from(document.querySelectorAll('.js-plotly-plot')).indexOf(gd)};
  }
  return null;
}"""


def _rgb(c: str) -> np.ndarray:
    return np.array(hex_to_rgb(c) if c.startswith("#") else unlabel_rgb(c)[:3], dtype=float)


def _heatmap_read(page, rel: float, name: str) -> tuple[dict, np.ndarray]:
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                           ".some(gd => (gd._fullData || []).some(t => t.type === 'heatmap'))")
    info = page.evaluate(READ, [rel, BAND])
    assert info is not None, "no heatmap on the page"
    plot = page.locator(".js-plotly-plot").nth(info["div"])
    png = Image.open(io.BytesIO(plot.screenshot())).convert("RGB")
    if SHOTS:
        png.save(os.path.join(SHOTS, f"{name}.png"))
    x, y = int(info["px"]), int(info["py"])  # the pixel whose area holds the cell's centre
    return info, np.asarray(png, dtype=float)[y, x]


BAND = 0.02  # READ picks a cell whose 4 neighbours lie within this share of the range of its value


def _expected(info: dict, scale: str) -> tuple[np.ndarray, float]:
    """The colour the figure defines for the cell's value (the named plotly scale sampled in Python) and how far a
    correctly drawn pixel may be from it: if the browser scales the heatmap image smoothly, the pixel mixes the
    cell with neighbours at most BAND of the range away, so it differs by at most the scale's change over BAND,
    plus 1 per channel for each side rounding its 8-bit interpolation."""
    u = (info["value"] - info["zmin"]) / (info["zmax"] - info["zmin"])
    at = [min(max(v, 0.0), 1.0) for v in (u, u - BAND, u + BAND)]
    want, lo, hi = (_rgb(c) for c in sample_colorscale(scale, at))
    return want, float(max(np.abs(lo - want).max(), np.abs(hi - want).max())) + 2.0


def _scale_is(info: dict, scale: str) -> None:
    from plotly.colors import get_colorscale

    got = [(round(float(v), 9), tuple(_rgb(c))) for v, c in info["colorscale"]]
    want = [(round(float(v), 9), tuple(_rgb(c))) for v, c in get_colorscale(scale)]
    assert got == want, (got[:2], want[:2])


def test_unsigned_map_zero_is_inferno_black_in_the_browser(page):
    """Grad-CAM (unsigned, zero where the ReLU cuts) at full opacity: the scale plotly.js uses is Inferno from 0,
    and the pixel drawn where the map is at its minimum is Inferno's #000004 — not Streamlit's pink #ffabab."""
    wait_idle(page)
    go(page, "Explain")
    run_form(page)  # Grad-CAM is the default method
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Map opacity").get_by_role("slider")
    slider.focus()
    page.keyboard.press("End")  # opacity 1: the pixels are the map's colours, not blended with the photo
    wait_idle(page)
    page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot')).some("
                           "gd => (gd._fullData || []).some(t => t.type === 'heatmap' && t.opacity === 1))")
    info, pixel = _heatmap_read(page, 0.0, "unsigned_gradcam")
    assert info["zmin"] == 0 and info["zmax"] > 0
    want, tol = _expected(info, "Inferno")
    assert info["value"] <= BAND * info["zmax"] and want.max() < 40  # a cell at the bottom of the scale: dark
    assert np.abs(pixel - want).max() <= tol, (pixel, want, tol)  # the rendered pixel (pink was 255, 171, 171)
    _scale_is(info, "Inferno")
    assert page.locator(ERROR_SEL).count() == 0


def test_signed_activations_are_diverging_around_zero_in_the_browser(page):
    """EfficientNet-Lite0's _blocks.4 outputs run from about −20 to 30 (no ReLU at a block output): the grid and the
    channel map are drawn with RdBu_r on a symmetric range, and a near-zero cell is drawn near-white."""
    wait_idle(page)
    go(page, "Activation maps")
    info, pixel = _heatmap_read(page, 0.5, "signed_activations")
    _scale_is(info, "RdBu_r")
    assert info["zmin"] == -info["zmax"] and info["zmax"] > 0
    assert abs(info["value"]) <= BAND * info["zmax"]
    want, tol = _expected(info, "RdBu_r")
    assert want.min() > 200  # near zero: the scale's white middle
    assert np.abs(pixel - want).max() <= tol, (pixel, want, tol)
    ranges = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(gd => "
                           "(gd._fullData || []).filter(t => t.type === 'heatmap').map(t => [t.zmin, t.zmax]))")
    assert len(ranges) >= 2 and all(lo == -hi for lo, hi in ranges), ranges  # the channel map too
    assert page.locator(ERROR_SEL).count() == 0
