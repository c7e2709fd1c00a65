"""What new users hit (issue 12, points 7, 9, 10, 11): class names in every title and file name, titles that
cannot run into each other, one target choice per session, one model selector on the classroom page, upload
errors that do not follow the user around, one source for the classroom accuracies, Material page icons."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from interpret.plots import export
from interpret.plots import attribution as plots
from interpret.attribution.registry import METHODS
from interpret.plots.attribution import grid_figure, overlay_figure, rgb_figure
from interpret.core.result import Attribution
from tests.apptest_util import navigation_only

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "pages"


# ---------------------------------------------------------------- titles name classes (point 7)

def _attr(method: str = "gradcam", target: int = 4, signed: bool = False, seconds: float = 0.05) -> Attribution:
    return Attribution(method, target, np.linspace(0, 1, 64).reshape(8, 8), signed, seconds=seconds)


def test_overlay_title_names_the_class():
    fig = overlay_figure(np.zeros((8, 8, 3)), _attr(), label="star", method_label=METHODS["gradcam"].label)
    assert fig.layout.title.text == "Grad-CAM · star (#4)"
    assert "class 4" not in fig.layout.title.text


def test_grid_title_names_the_class():
    fig = grid_figure(np.zeros((8, 8, 3)), [_attr(), _attr("saliency")], label="espresso")
    assert fig.layout.title.text == "Attribution maps for espresso (#4)"


def test_png_title_and_file_name_use_the_label():
    a = _attr(target=667)
    assert export.png_title(a, "mortarboard", method_label=METHODS["gradcam"].label) == "Grad-CAM · mortarboard (#667)"
    assert export.file_stem("efficientnet_lite0", a, "mortarboard") == "efficientnet_lite0_gradcam_mortarboard_667"
    # labels and user model keys may hold anything a file system dislikes
    stem = export.file_stem("user:resnet18:0a1b", a, 'crane / "bird"?')
    assert stem == "user_resnet18_0a1b_gradcam_crane_bird_667"
    assert re.fullmatch(r"[0-9A-Za-z_-]+", export.file_stem("m", a, "ö/\\:*?<>|")) is not None


def test_png_draws_the_label_title():
    """The PNG's default title is the label title (pixel-identical to drawing that title), not 'class 667'."""
    a = _attr(target=667)
    img = np.full((8, 8, 3), 0.5)
    named = export.overlay_png(img, a, label="mortarboard", method_label=METHODS["gradcam"].label)
    assert named == export.overlay_png(img, a, title="Grad-CAM · mortarboard (#667)")
    assert named != export.overlay_png(img, a, title="gradcam · class 667")


# ---------------------------------------------------------------- titles that fit (point 9)

def test_ig_side_panel_is_not_called_a_gradient():
    """IG's colour image is the attribution per channel ((x − baseline) × mean path gradient), not a gradient."""
    t = plots.rgb_title("integrated_gradients", "espresso", 967)
    assert "gradient per" not in t.lower() and "Integrated gradients per colour channel" in t
    assert "(input − baseline) × mean gradient" in t and "espresso (#967)" in t
    assert plots.rgb_title("grad_x_input").startswith("Gradient × input")
    fig = rgb_figure(np.zeros((4, 4, 3)), t)
    title = fig.layout.title
    assert title.yref == "container" and title.yanchor == "top"   # drawn down from the top, not centred
    lines = t.count("<br>") + 1
    assert fig.layout.margin.t >= title.pad.t + lines * 1.3 * title.font.size  # every line above the image


def _row_gaps_px(fig) -> list[float]:
    """Vertical gap in px between consecutive subplot rows."""
    plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    tops = sorted({fig.layout[k].domain[1] for k in fig.layout if k.startswith("yaxis")}, reverse=True)
    bottoms = sorted({fig.layout[k].domain[0] for k in fig.layout if k.startswith("yaxis")}, reverse=True)
    return [(bottoms[i] - tops[i + 1]) * plot_h for i in range(len(tops) - 1)]


@pytest.mark.parametrize("width", [640, 1000])
def test_compare_titles_cannot_overlap(width):
    """Every method on Compare's 4-column grid at a narrow (640 px) and a wide figure: each title line fits in
    its column's pitch even at 0.62 em per character (wider than the average of plotly's Open Sans), and
    the rows leave room for every title line (line height ≥ 1.3 em)."""
    attrs = [_attr(m, seconds=12.34) for m in METHODS]
    fig = grid_figure(np.zeros((8, 8, 3)), attrs, cols=4, method_labels={m: s.label for m, s in METHODS.items()})
    titles = [a for a in fig.layout.annotations]
    assert len(titles) == len(attrs)
    dom = fig.layout.xaxis.domain
    pitch = (dom[1] - dom[0] + fig.layout.xaxis2.domain[0] - dom[1]) * (width - 20 - 80)  # margins, colour bars
    size = titles[0].font.size or 12
    for t in titles:
        for line in t.text.split("<br>"):
            assert 0.62 * size * len(line) <= pitch, (line, pitch)
    lines = max(t.text.count("<br>") + 1 for t in titles)
    assert all(gap >= lines * 1.3 * size for gap in _row_gaps_px(fig)), _row_gaps_px(fig)
    assert fig.layout.margin.t >= lines * 1.3 * size + 1.4 * 12 * 1.3  # first row's titles + the figure title


def test_top_patch_title_sits_above_the_value_labels():
    from interpret.plots.units import top_patches_figure

    res = _fake_top_patches()
    fig = top_patches_figure(res, 0, cols=4)
    title = fig.layout.title
    assert title.yref == "container" and title.yanchor == "top"
    title_bottom = (title.pad.t or 0) + 1.3 * 17          # plotly's title font: 1.4 × 12 px
    labels_top = fig.layout.margin.t - 1.3 * fig.layout.annotations[0].font.size
    assert title_bottom <= labels_top, (title_bottom, labels_top)


def _fake_top_patches():
    from interpret.units import top_patches as tp
    from models.collections import from_images

    import torch
    from models.handle import ModelHandle, Preprocess

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(2, 2)).eval()
    h = ModelHandle(key="tiny", name="tiny", net=net, preprocess=Preprocess(resize=16, crop=16, mean=(0.5,) * 3,
                                                                           std=(0.5,) * 3), labels=["a", "b"],
                    source="test")
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = [(f"im{i}", Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))) for i in range(4)]
    return tp.scan(h, from_images(imgs), "1", channels=[0], k=4)


# ---------------------------------------------------------------- page icons (point 11)

def test_page_icons_are_material_icons():
    from streamlit.string_util import validate_material_icon

    tree = ast.parse((ROOT / "app.py").read_text())
    pages = next(ast.literal_eval(n.value) for n in ast.walk(tree)
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PAGES")
    for _, _, title, icon in pages:
        assert icon.startswith(":material/"), (title, icon)
        validate_material_icon(icon)
    assert ':material/' in re.search(r"page_icon=([^,)]+)", (ROOT / "app.py").read_text()).group(1)


# ---------------------------------------------------------------- the app (point 10)

@pytest.fixture
def app():
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()
        yield at


def _go(at, page: str) -> None:
    at.switch_page(str(PAGES / page)).run()
    assert not at.exception, at.exception


def _target_box(at):
    boxes = [s for s in at.selectbox if s.label.startswith("Target class")]
    assert len(boxes) == 1
    return boxes[0]


def _model(at, name: str) -> None:
    sel = at.selectbox(key="model_select")
    sel.select(next(o for o in sel.options if o.startswith(name))).run()
    assert not at.exception, at.exception


def _shown(box) -> int:
    """The class index the target box shows."""
    return int(re.search(r"\(#(\d+)\)", box.options[box.index]).group(1))


def _pick(box, position: int) -> None:
    """Choose the option at ``position`` as a user would (the box's values may be indices or option texts)."""
    option = box.options[position]
    box.select(option if isinstance(box.value, str) else int(re.search(r"\(#(\d+)\)", option).group(1))).run()


def test_target_is_one_choice_for_explain_compare_and_trust(app):
    at = app
    _go(at, "compare.py")
    top = _shown(_target_box(at))
    _pick(_target_box(at), 3)                                   # the 4th most probable class
    other = _shown(_target_box(at))
    assert other != top
    for page in ("trust.py", "explain.py", "compare.py"):
        _go(at, page)
        assert _shown(_target_box(at)) == other, page
    at.selectbox(key="sample_pick").select("chelsea").run()    # a new image keeps the chosen class
    assert _shown(_target_box(at)) == other
    _model(at, "Classroom CNN (shapes, clean)")                # a new model starts from its prediction
    box = _target_box(at)
    assert _shown(box) == int(re.search(r"\(#(\d+)\)", box.options[0]).group(1))
    _model(at, "EfficientNet-Lite0")
    assert _shown(_target_box(at)) != other                    # the old model's choice was reset, not kept
    at.selectbox(key="sample_pick").select("coffee").run()
    assert _shown(_target_box(at)) == top


def test_classroom_has_one_model_selector(app):
    at = app
    _go(at, "classroom.py")
    assert not [r for r in at.main.radio if r.label == "Model"]              # no second selector on the page
    assert not [s for s in at.main.selectbox if "model" in s.label.lower() or "network" in s.label.lower()]
    assert at.selectbox(key="model_select").value.startswith("Classroom CNN (shapes, clean)")  # switched
    assert any("Switched the network from EfficientNet-Lite0" in c.value for c in at.caption)
    _model(at, "Classroom CNN (shapes, Clever Hans)")                       # the sidebar drives the page
    assert any("Network: **Classroom CNN (shapes, Clever Hans)**" in c.value for c in at.caption)
    assert not any("Switched" in c.value for c in at.caption)                # said once
    _model(at, "EfficientNet-Lite0")                                        # chosen on the page: respected
    assert at.selectbox(key="model_select").value.startswith("EfficientNet-Lite0")
    assert any("runs on the classroom CNNs" in i.value for i in at.info)
    assert not at.error and not at.exception


def _image_uploader(at):
    return next(f for f in at.sidebar.file_uploader if f.label == "Image file")


def test_refused_upload_error_is_shown_once(app):
    at = app
    at.radio(key="image_source").set_value("Upload").run()
    _image_uploader(at).set_value(("junk.png", b"this is not an image at all" * 10, "image/png")).run()
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1 and "junk.png" in errors[0] and "previous image is kept" in errors[0]
    assert at.subheader[0].value.startswith("Top-1: espresso")               # the previous image is kept
    _go(at, "explain.py")
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]          # not on the next page
    assert not _image_uploader(at).value                                    # the refused file is gone too
    _go(at, "predict.py")
    assert not at.error and at.subheader[0].value.startswith("Top-1: espresso")


_PCT = re.compile(r"(\d+(?:\.\d+)?) ?%")


def _accuracies_in(text: str) -> list[str]:
    return [m.group(0) for m in _PCT.finditer(text)]


def test_classroom_accuracies_have_one_source_and_name_their_split(app):
    """The caption (model note), step 7's footnote and README print the stored accuracies with one formatter,
    each with its count of images, so equal splits give equal numbers and different ones say so."""
    from models import classroom as cr
    from interpret.evaluation import localization as L

    at = app
    _go(at, "classroom.py")
    readme = (ROOT / "README.md").read_text()
    for key in cr.VARIANTS:
        _model(at, cr.VARIANTS[key])
        caption = next(c.value for c in at.caption if "Network:" in c.value)
        for split, (acc, n) in cr.accuracies(key).items():
            assert n == 1200
            shown = cr.format_accuracy(acc, n)
            assert shown in caption, (shown, caption)
            assert shown in readme, shown
        # every percentage in the caption comes with its count of images
        assert all(re.search(re.escape(p) + r" \(\d+/\d+\)", caption) for p in _accuracies_in(caption))
    at.radio(key="classroom_step").set_value("7 · Localization scores").run()
    res = L.load_result()
    foot = next(m.value for m in at.markdown if "Accuracy on these" in m.value)
    assert f"Accuracy on these {res['n']} images per split" in foot
    for s in res["sets"]:
        assert cr.format_accuracy(s["accuracy"], res["n"]) in foot
    assert L.markdown(res).splitlines()[-1] in readme                         # README shows the same footnote
    assert (ROOT / "models/classroom/weights/localization.md").read_text().strip() == L.markdown(res)
