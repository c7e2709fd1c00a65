"""Colour scales: signed data → diverging, centred at 0 with a symmetric range; non-negative data → sequential
from 0 — in every figure function, decided in one place (interpret/plots/colour.py); and every page draws through the
one chart helper, which keeps the figure's own colours (no Streamlit theme)."""
from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest

from interpret.plots import colour as C
from interpret.plots import attribution as P
from interpret.plots import units as UP
from interpret.plots import synthesis as SP
from interpret.units.activations import ActivationMaps
from interpret.units.filters import FilterBank, depthwise_kernels, filter_norms, kernel_grid
from interpret.core.result import Attribution

ROOT = Path(__file__).resolve().parents[3]
RDBU = go.Heatmap(colorscale="RdBu_r").colorscale
INFERNO = go.Heatmap(colorscale="Inferno").colorscale


# ---------------------------------------------------------------- the rule itself

def test_signedness_and_range_follow_the_data():
    assert not C.is_signed([0.0, 1.0, 2.0])
    assert C.is_signed([-1e-9, 5.0])  # any negative value makes the data signed
    assert C.is_signed([-3.0, -1.0])  # all-negative data is signed too (no sequential scale from 0 fits it)
    assert C.is_signed([0.0, 1.0], declared=True)  # a declared-signed result stays diverging
    assert not C.is_signed([np.nan, 0.0, 2.0])  # NaN (mosaic gaps) is not data
    s = C.colour_scale([-1.0, 3.0])
    assert s.heatmap() == dict(colorscale="RdBu_r", zmin=-3.0, zmax=3.0, zmid=0.0)
    assert s.axis() == dict(colorscale="RdBu_r", cmin=-3.0, cmax=3.0, cmid=0.0)
    u = C.colour_scale([0.5, 2.0])
    assert u.heatmap() == dict(colorscale="Inferno", zmin=0.0, zmax=2.0)  # from 0, not from the minimum
    assert C.colour_scale(np.zeros(4)).heatmap() == dict(colorscale="Inferno", zmin=0.0, zmax=1.0)
    assert C.colour_scale([-1.0, 3.0], limit=0.5).heatmap()["zmin"] == -0.5
    assert C.colour_scale([0.0, 1.0], declared=True).gap_colour != "white"  # white is 0 on the diverging scale
    # the scales' ends: Inferno is black at 0; RdBu_r's middle (0) is near-white
    assert INFERNO[0][1].lower() in ("#000004", "rgb(0,0,4)") and RDBU[0][1] != RDBU[-1][1]


# ---------------------------------------------------------------- every figure function

def _attr(m: np.ndarray, signed: bool, method: str = "gradient") -> Attribution:
    return Attribution(method, 3, m, signed, seconds=0.1)


def _bank(w: np.ndarray, groups: int = 1) -> FilterBank:
    return FilterBank("conv", w.astype(np.float32), groups, w.shape[1] * groups, (1, 1), (1, 1))


def _acts(maps: np.ndarray) -> ActivationMaps:
    return ActivationMaps("block", maps.astype(np.float32), 0, 1, (16, 16))


IMG = np.full((8, 8, 3), 0.5, np.float32)
RNG = np.random.default_rng(0)
SIGNED_MAP = np.linspace(-2.0, 1.0, 64).reshape(8, 8)  # min < 0 < max, |min| ≠ max
POSITIVE_MAP = np.linspace(0.5, 4.0, 64).reshape(8, 8)  # min > 0: the scale must still start at 0
SIGNED_W = RNG.normal(size=(4, 3, 3, 3))
SIGNED_ACTS = RNG.normal(size=(6, 5, 5)) * 10 + 3  # like _blocks.4 of EfficientNet-Lite0: −20 … 30
RELU_ACTS = np.maximum(RNG.normal(size=(6, 5, 5)), 0) + 0.25


def _windows(drops: np.ndarray, signed: bool) -> Attribution:
    scored = np.zeros(drops.shape, bool)
    scored[::2] = True
    return Attribution("occlusion_approx", 3, np.zeros((8, 8)), signed,
                       extra={"logit_drops": drops, "scored": scored, "grid": ([0, 4], [0, 2, 4])})


# name → (signed case, non-negative case); a case returns a figure. None: the data has no sign choice
# (kernel weights are always signed; norms are never negative).
CASES = {
    "overlay_figure": (lambda: P.overlay_figure(IMG, _attr(SIGNED_MAP, False)),  # undeclared, but negative
                       lambda: P.overlay_figure(IMG, _attr(POSITIVE_MAP, False, "gradcam"))),
    "grid_figure": (lambda: P.grid_figure(IMG, [_attr(SIGNED_MAP, True), _attr(SIGNED_MAP, False)]),
                    lambda: P.grid_figure(IMG, [_attr(POSITIVE_MAP, False, "gradcam")])),
    "grid_figure(common_norm=False)": (
        lambda: P.grid_figure(IMG, [_attr(SIGNED_MAP, True), _attr(SIGNED_MAP, False)], common_norm=False),
        lambda: P.grid_figure(IMG, [_attr(POSITIVE_MAP, False, "gradcam")], common_norm=False)),
    "scored_windows_figure": (lambda: P.scored_windows_figure(_windows(np.array([[-1., 2., .5], [0., 1., -3.]]),
                                                                       True)),
                              lambda: P.scored_windows_figure(_windows(np.array([[1., 2., .5], [.1, 1., 3.]]),
                                                                       False))),
    "kernel_grid_figure": (lambda: UP.kernel_grid_figure(kernel_grid(_bank(SIGNED_W), 1), _bank(SIGNED_W), 1), None),
    "depthwise_figure": (lambda: UP.depthwise_figure(depthwise_kernels(_bank(SIGNED_W[:, :1], groups=4)),
                                                     _bank(SIGNED_W[:, :1], groups=4)), None),
    "filter_norms_figure": (None, lambda: UP.filter_norms_figure(filter_norms(_bank(SIGNED_W + 5)), "conv")),
    "activation_grid_figure": (lambda: UP.activation_grid_figure(_acts(SIGNED_ACTS)),
                               lambda: UP.activation_grid_figure(_acts(RELU_ACTS))),
    "activation_grid_figure(per_map=False)": (
        lambda: UP.activation_grid_figure(_acts(SIGNED_ACTS), per_map=False),
        lambda: UP.activation_grid_figure(_acts(RELU_ACTS), per_map=False)),
    "channel_map_figure": (lambda: UP.channel_map_figure(_acts(SIGNED_ACTS), 2, (1, 1)),
                           lambda: UP.channel_map_figure(_acts(RELU_ACTS), 2, (1, 1))),
}

# Figures that draw no data through a colour scale (images, bars, curves); any heatmap in them must be a
# single-colour tint (the receptive-field footprint).
_patch = SimpleNamespace(value=1.5, patch=np.zeros((4, 4, 3), np.uint8), image_name="a.png", unit=(0, 0),
                         box=(0, 0, 4, 4))
_row = SimpleNamespace(name="conv", call=0, r=(3, 3), S=(1, 1))
NO_SCALE = {
    "rgb_figure": lambda: P.rgb_figure(RNG.normal(size=(8, 8, 3)), "gradient"),
    "topk_figure": lambda: P.topk_figure([(1, "cat", 0.7), (2, "dog", 0.2)]),
    "bar_figure": lambda: P.bar_figure([(1, "cat", 0.7)]),
    "filters_figure": lambda: UP.filters_figure(SimpleNamespace(images=RNG.uniform(size=(4, 3, 3, 3)),
                                                                mode="minmax")),
    "image_box_figure": lambda: UP.image_box_figure(IMG, (1, 1, 5, 5), footprint=np.eye(8, dtype=bool)),
    "rf_growth_figure": lambda: UP.rf_growth_figure(SimpleNamespace(rows=[_row], input_size=(16, 16))),
    "top_patches_figure": lambda: UP.top_patches_figure(
        SimpleNamespace(patches={0: [_patch]}, layer="conv", n_images=1), 0),
    "batch_row_figure": lambda: SP.batch_row_figure(SimpleNamespace(images=np.stack([IMG, IMG]), objective="x")),
    "objective_curve_figure": lambda: SP.objective_curve_figure(
        SimpleNamespace(history=[0.0, 1.0], terms={"a": [0.0, 0.5], "b": [0.0, 0.5]})),
    "synthesis_figure": lambda: SP.synthesis_figure(SimpleNamespace(images=IMG[None], history=[0.0, 1.0],
                                                                    terms={}, objective="x")),
}


def _figure_functions() -> set[str]:
    names = set()
    for mod in (P, UP, SP):
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ == mod.__name__ and name.endswith("_figure") and not name.startswith("_"):
                names.add(name)
    names.add("bar_figure")  # an alias of topk_figure
    return names


def test_every_figure_function_has_a_colour_case():
    covered = {k.split("(")[0] for k in CASES} | set(NO_SCALE)
    missing = _figure_functions() - covered
    assert not missing, f"add colour-scale cases for {sorted(missing)} to tests/interpret/plots/test_colour_scales.py"


def _scales(fig: go.Figure) -> list[tuple[str, tuple, float | None, float | None, float | None]]:
    """(what, colorscale, low, high, mid) of every data-coloured trace: heatmaps (own scale or coloraxis)
    and colour-mapped markers."""
    out = []
    for t in fig.data:
        if t.type == "heatmap":
            if t.coloraxis:
                ax = fig.layout[t.coloraxis]
                out.append((t.coloraxis, ax.colorscale, ax.cmin, ax.cmax, ax.cmid))
            else:
                out.append(("heatmap", t.colorscale, t.zmin, t.zmax, t.zmid))
        elif t.type == "scatter" and t.marker is not None and t.marker.colorscale is not None:
            out.append(("marker", t.marker.colorscale, t.marker.cmin, t.marker.cmax, t.marker.cmid))
    return out


@pytest.mark.parametrize("name", sorted(k for k, v in CASES.items() if v[0] is not None))
def test_signed_data_gets_a_diverging_scale_centred_at_zero(name):
    scales = _scales(CASES[name][0]())
    assert scales, name
    for what, cs, lo, hi, mid in scales:
        assert cs == RDBU, (name, what)
        assert mid == 0 and hi is not None and hi > 0 and lo == -hi, (name, what, lo, hi, mid)


@pytest.mark.parametrize("name", sorted(k for k, v in CASES.items() if v[1] is not None))
def test_non_negative_data_gets_a_sequential_scale_from_zero(name):
    scales = _scales(CASES[name][1]())
    assert scales, name
    for what, cs, lo, hi, mid in scales:
        assert cs == INFERNO, (name, what)
        assert lo == 0 and hi is not None and hi > 0 and mid is None, (name, what, lo, hi, mid)


@pytest.mark.parametrize("name", sorted(NO_SCALE))
def test_figures_without_data_colours_only_tint(name):
    fig = NO_SCALE[name]()
    for t in fig.data:
        if t.type == "heatmap":
            assert len({c for _, c in t.colorscale}) == 1, (name, t.colorscale)
    assert not [s for s in _scales(fig) if s[0] == "marker"], name


# ---------------------------------------------------------------- zero stays zero in the drawn values

def _tiles(fig: go.Figure, n: int, h: int, w: int) -> np.ndarray:
    z = np.asarray(fig.data[0].z, dtype=np.float64)
    cols = fig.layout.meta["cols"] if fig.layout.meta else int(round((z.shape[1] + 1) / (w + 1)))
    return np.stack([z[(t // cols) * (h + 1):(t // cols) * (h + 1) + h, (t % cols) * (w + 1):(t % cols) * (w + 1) + w]
                     for t in range(n)])


def test_activation_grid_per_map_keeps_zero_at_the_centre():
    """Each map is divided by its own max |a| (hand-computed oracle), so 0 is drawn as 0 (white) — a min-max
    rescale would move it and hide the sign."""
    maps = np.array([[[-4.0, 0.0], [2.0, 1.0]], [[0.0, 3.0], [-1.0, 0.0]]])
    acts = _acts(maps)
    fig = UP.activation_grid_figure(acts, order=[0, 1], cols=2)
    want = np.array([[[-1.0, 0.0], [0.5, 0.25]], [[0.0, 1.0], [-1 / 3, 0.0]]])
    np.testing.assert_allclose(_tiles(fig, 2, 2, 2), want, rtol=1e-6)
    assert fig.data[0].zmid == 0 and fig.data[0].zmin == -1 and fig.data[0].zmax == 1
    assert fig.layout.plot_bgcolor != "white"  # gaps must not look like zeros
    pos = UP.activation_grid_figure(_acts(np.abs(maps) + 1.0), order=[0, 1], cols=2)
    np.testing.assert_allclose(_tiles(pos, 2, 2, 2), (np.abs(maps) + 1) / (np.abs(maps) + 1).max((1, 2), keepdims=True),
                               rtol=1e-6)
    assert pos.data[0].zmin == 0


def test_kernel_heatmaps_draw_weights_relative_to_the_largest_weight():
    """z = w / max|w| of the filter (kernel grid: one scale per filter; depthwise: one per channel)."""
    w = np.array([[[[1.0, -2.0], [0.0, 0.5]], [[4.0, 0.0], [-1.0, 0.0]]],
                  [[[0.0, 0.0], [0.0, 0.25]], [[0.5, -0.5], [0.0, 0.0]]]])
    g = UP.kernel_grid_figure(kernel_grid(_bank(w), 0), _bank(w), 0, cols=2)
    np.testing.assert_allclose(_tiles(g, 2, 2, 2), w[0] / 4.0, rtol=1e-6)
    d = UP.depthwise_figure(depthwise_kernels(_bank(w[:, :1], groups=2)), _bank(w[:, :1], groups=2), cols=2)
    np.testing.assert_allclose(_tiles(d, 2, 2, 2), w[:, 0] / np.array([2.0, 0.25])[:, None, None], rtol=1e-6)


# ---------------------------------------------------------------- pages draw only through the helper

PAGE_SOURCES = [ROOT / "app.py", *sorted((ROOT / "pages").rglob("*.py"))]


def test_pages_draw_charts_only_through_show_chart():
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in PAGE_SOURCES if p.name != "charts.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"plotly_chart\s*\(", line)]
    assert not offenders, f"use pages._ui.charts.show_chart instead of st.plotly_chart: {offenders}"
    assert any("show_chart(" in p.read_text() for p in PAGE_SOURCES)


def test_pages_do_not_choose_colour_scales():
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in PAGE_SOURCES
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"colorscale\s*=|DIVERGING|SEQUENTIAL", line)]
    assert not offenders, f"take the scale from interpret.plots.colour.colour_scale: {offenders}"


def _rgb(c: str) -> tuple[int, ...]:
    from plotly.colors import hex_to_rgb, unlabel_rgb
    return tuple(int(v) for v in (hex_to_rgb(c) if c.startswith("#") else unlabel_rgb(c)))


def test_show_chart_renders_without_the_streamlit_theme_and_keeps_placeholder_colours():
    """Streamlit's browser code replaces the strings #000001…#000040 in a chart's JSON (its template's
    placeholders) — Inferno's zero, #000004, among them. The helper sends the same colours spelled as rgb()."""
    import plotly.io as pio

    from pages._ui.charts import PLACEHOLDER, show_chart

    calls = []

    class Column:
        def plotly_chart(self, fig, **kw):
            calls.append((fig, kw))
            return "state"

    fig = P.overlay_figure(IMG, _attr(POSITIVE_MAP, False, "gradcam"))
    want = [(v, _rgb(c)) for v, c in fig.data[1].colorscale]
    assert fig.data[1].colorscale[0][1] == "#000004"  # the case that was drawn pink
    fig.add_scatter(x=[0], y=[0], marker=dict(color="#000010"), line=dict(color="#00002580"))
    fig.add_annotation(text="<span style='color:#000040'>note</span>", x=0, y=0)
    assert show_chart(fig, key="k", container=Column(), on_select="rerun") == "state"
    assert calls == [(fig, {"key": "k", "theme": None, "on_select": "rerun"})]
    d = fig.to_dict()
    d["layout"].pop("template", None)  # the template's placeholders are meant to be replaced
    own = pio.to_json(d, validate=False)
    assert not PLACEHOLDER.search(own), PLACEHOLDER.findall(own)
    assert [(v, _rgb(c)) for v, c in fig.data[1].colorscale] == want  # same colours, other spelling
    assert _rgb(fig.data[2].marker.color) == (0, 0, 16) and fig.data[2].line.color == "rgba(0,0,37,0.502)"
    assert "rgb(0,0,64)" in fig.layout.annotations[0].text
    with pytest.raises(TypeError, match="theme"):
        show_chart(fig, key="k", container=Column(), theme="streamlit")
