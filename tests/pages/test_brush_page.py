"""AppTest of "What if I hide this?": the canvas (a custom component AppTest cannot draw on) is replaced by a fake
that returns the drag values the real one sends; the page's numbers are checked against the core called directly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import streamlit_image_coordinates as sic
from PIL import Image
from streamlit.testing.v1 import AppTest

from interpret.attribution.registry import explain
from interpret.evaluation.edits import apply_edit, input_mask, mean_grey, rect_mask, region_share, segment_image
from pages.brush import DISPLAY_W
from tests.apptest_util import navigation_only, assert_clean

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "brush.py")


class FakeCanvas:
    """Returns the queued drag values one per run; afterwards the last one again, as the component does (per
    widget key: a canvas with a new key starts with no value)."""

    def __init__(self) -> None:
        self.queue: list[dict] = []
        self.values: dict[str, dict] = {}
        self.t = 0

    def __call__(self, source, *, key=None, **kw):
        if self.queue:
            self.values[key] = self.queue.pop(0)
        return self.values.get(key)

    def drag(self, x1, y1, x2, y2, height=320) -> None:
        """A drag in displayed pixels (the photo drawn DISPLAY_W wide)."""
        self.t += 1
        self.queue.append({"x1": x1, "y1": y1, "x2": x2, "y2": y2, "width": DISPLAY_W, "height": height,
                           "unix_time": self.t})


@pytest.fixture
def canvas(monkeypatch):
    fake = FakeCanvas()
    monkeypatch.setattr(sic, "streamlit_image_coordinates", fake)
    return fake


@pytest.fixture
def at(canvas):
    with navigation_only():
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        app.run()
        app.switch_page(PAGE).run()
        yield app


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def test_page_runs_and_asks_for_a_stroke(at):
    assert_clean(at)
    assert at.title[0].value == "What if I hide this?"
    assert any("Nothing is painted yet" in i.value for i in at.info)
    assert not at.metric and _button(at, "Undo").disabled and _button(at, "Use the edited image").disabled


def test_empty_stroke_says_so_and_keeps_the_image(at, canvas):
    image_id = at.session_state["image_id"]
    canvas.drag(100, 80, 100, 80)                     # a click: no area
    at.run()
    assert_clean(at)
    assert any("painted nothing" in w.value for w in at.warning)
    assert at.session_state["brush_rects"] == [] and not at.metric
    assert at.session_state["image_id"] == image_id
    canvas.drag(200, 100, 200, 300)                   # a vertical line: no area either
    at.run()
    assert any("painted nothing" in w.value for w in at.warning) and not at.metric


def test_rectangle_changes_the_prediction_and_shares_match_the_core(at, canvas, default_handle):
    photo = at.session_state["image"]
    W, H = photo.size
    canvas.drag(300, 40, 100, 200, height=round(H * DISPLAY_W / W))   # drawn right-to-left: corners sorted
    at.run()
    assert_clean(at)
    s = W / DISPLAY_W
    want_rect = (int(np.floor(100 * s)), int(np.floor(40 * s)), int(np.ceil(300 * s)), int(np.ceil(200 * s)))
    assert at.session_state["brush_rects"] == [want_rect]
    mask = rect_mask((H, W), [want_rect])
    edited = apply_edit(np.asarray(photo), mask, "grey", grey=mean_grey(default_handle))
    p_before = default_handle.predict(photo)
    p_after = default_handle.predict(Image.fromarray(edited))
    target = int(np.argmax(p_before))
    assert at.metric[0].value == f"{p_after[target]:.1%}"
    assert at.get("plotly_chart")
    at.multiselect(key="brush_methods").set_value(["saliency"])
    next(b for b in at.button if b.label == "Compute the maps").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert len(at.get("plotly_chart")) == 2                          # the bars, and the maps with the region
    x = default_handle.input_tensor(photo)
    want = region_share(explain(default_handle, x, target, "saliency").map, input_mask(mask, default_handle))
    assert table["share of the map in the region"].tolist() == [round(want.value, 3)]
    assert table["share of the image (area)"].tolist() == [round(input_mask(mask, default_handle).mean(), 3)]


def test_undo_clear_and_use_the_edited_image(at, canvas):
    canvas.drag(10, 10, 60, 60)
    at.run()
    canvas.drag(100, 100, 200, 150)
    at.run()
    assert_clean(at)
    assert len(at.session_state["brush_rects"]) == 2
    _button(at, "Undo").click().run()
    assert len(at.session_state["brush_rects"]) == 1
    _button(at, "Clear").click().run()
    assert at.session_state["brush_rects"] == []
    canvas.drag(10, 10, 60, 60)
    at.run()
    photo = np.asarray(at.session_state["image"])
    rect = at.session_state["brush_rects"][0]
    _button(at, "Use the edited image").click().run()
    assert_clean(at)
    assert at.session_state["image_id"].startswith("edit:")
    assert at.session_state["image_name"].endswith("(edited)")
    new = np.asarray(at.session_state["image"])
    mask = rect_mask(photo.shape[:2], [rect])
    np.testing.assert_array_equal(new[~mask], photo[~mask])
    assert (new[mask] != photo[mask]).any()
    assert at.session_state["brush_rects"] == []       # a new photo starts unpainted
    at.run()
    assert at.session_state["image_id"].startswith("edit:")  # the sidebar does not put the sample back


@pytest.mark.parametrize("fill", ["blur", "segment_mean"])
def test_other_fills_predict_the_photo_they_describe(at, canvas, default_handle, fill):
    """Blur (σ from the slider) and superpixel means (LIME's SLIC, seed 0): the shown probability is that of the
    photo edited by the core directly with that fill."""
    canvas.drag(150, 60, 330, 260)
    at.run()
    at.radio(key="brush_fill").set_value(fill).run()
    if fill == "blur":
        at.slider(key="brush_sigma").set_value(12.0).run()
    assert_clean(at)
    photo = np.asarray(at.session_state["image"])
    mask = rect_mask(photo.shape[:2], at.session_state["brush_rects"])
    kw = {"sigma": 12.0} if fill == "blur" else {"segments": segment_image(photo, "slic", 0)}
    edited = Image.fromarray(apply_edit(photo, mask, fill, **kw))
    p = default_handle.predict(edited)
    target = int(np.argmax(default_handle.predict(Image.fromarray(photo))))
    assert at.metric[0].value == f"{p[target]:.1%}"  # the fill chosen, computed by the core (exact: same edit)


def test_classroom_model_sees_the_photo_as_painted(at, canvas):
    """A 64×64 classroom photo on the classroom CNN (no resize, no crop): a rectangle over the object changes the
    probability to that of the core's edit, and the area share is the rectangle's share of the 64² pixels."""
    from models import list_models, load_model

    at.selectbox(key="model_select").select(next(e.name for e in list_models() if e.key == "classroom_clean")).run()
    at.selectbox(key="sample_pick").select(next(n for n in at.selectbox(key="sample_pick").options
                                                if "classroom" in n.lower() or "shape" in n.lower())).run()
    photo = at.session_state["image"]
    assert photo.size == (64, 64), photo.size
    canvas.drag(120, 120, 360, 360, height=DISPLAY_W)        # photo px 16…48: a quarter of the area
    at.run()
    assert_clean(at)
    assert at.session_state["brush_rects"] == [(16, 16, 48, 48)]
    handle = load_model("classroom_clean", "cpu")
    mask = rect_mask((64, 64), [(16, 16, 48, 48)])
    edited = Image.fromarray(apply_edit(np.asarray(photo), mask, "grey", grey=mean_grey(handle)))
    p = handle.predict(edited)
    target = int(np.argmax(handle.predict(photo)))
    assert at.metric[0].value == f"{p[target]:.1%}"
    assert any(c.value.startswith("1 rectangle(s), 25.0% of what the model sees") for c in at.caption)
