"""Camera page: the one-pass frame views equal the separate methods called directly, and the page (AppTest with a
camera snapshot) shows the prediction and maps, says what to do without a camera, and hands a frame to the app."""
from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import assert_same_state, model_state
from interpret.attribution.cam import cam, gradcam
from interpret.units.activations import layer_activations
from models.images import decode_image
from pages._ui.camera_views import frame_views
from tests.apptest_util import navigation_only

ROOT = Path(__file__).resolve().parents[2]


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def coffee_frame() -> Image.Image:
    from models.images import sample_images

    return decode_image(_jpeg(dict(sample_images())["coffee"].resize((640, 480))))


def _check_against_oracles(handle, img, layer, call_index=-1, channel=None):
    before = model_state(handle.net)
    v = frame_views(handle, img, layer, channel, call_index)
    assert_same_state(before, handle.net)  # every hook removed, nothing changed
    assert [i for i, _, _ in v.top] == [i for i, _, _ in handle.topk(img, 5)]
    np.testing.assert_allclose([p for *_, p in v.top], [p for *_, p in handle.topk(img, 5)], rtol=0, atol=0)
    x = handle.input_tensor(img)
    target = v.top[0][0]
    oracle = cam(handle, x, target) if v.cam.method == "cam" else gradcam(handle, x, target)
    # the same operations on the same input in the same order: equal, not merely close
    np.testing.assert_array_equal(v.cam.map, oracle.map)
    acts = layer_activations(handle, img, layer, call_index)
    np.testing.assert_array_equal(v.acts.maps, acts.maps)
    assert (v.acts.call_index, v.acts.n_calls) == (acts.call_index, acts.n_calls)
    assert v.channel == (int(acts.order("max")[0]) if channel is None else channel)
    np.testing.assert_allclose(v.image, handle.preprocess.to_display(x[0]), rtol=0, atol=0)
    return v


def test_frame_views_equal_the_separate_methods_on_the_default_model(default_handle, coffee_frame):
    v = _check_against_oracles(default_handle, coffee_frame, "_blocks.5")
    assert v.cam.method == "cam" and v.cam_note is None  # Lite0 ends conv → GAP → linear
    assert v.top[0][1] == "espresso"
    _check_against_oracles(default_handle, coffee_frame, "_act_head", channel=7)


def test_frame_views_fall_back_to_gradcam_where_cam_is_undefined(vgg16_handle, photos):
    img = photos["astronaut"]
    v = _check_against_oracles(vgg16_handle, img, "features.10")
    assert v.cam.method == "gradcam" and "CAM" in v.cam_note
    # the Grad-CAM layer itself as the activation layer (one hook serves both)
    _check_against_oracles(vgg16_handle, img, v.cam.params["layer"])


def test_frame_views_pick_the_call_of_a_reused_module(resnet18_handle, photos):
    for call in (0, 1, -1):  # a torchvision BasicBlock's relu runs after conv1 and after the residual add
        v = _check_against_oracles(resnet18_handle, photos["chelsea"], "layer1.0.relu", call_index=call)
        assert v.acts.n_calls == 2


def test_frame_views_refuse_a_channel_out_of_range(default_handle, coffee_frame):
    from interpret.core.errors import InputError

    with pytest.raises(InputError, match="channel 9999 out of range"):
        frame_views(default_handle, coffee_frame, "_blocks.5", 9999)


def test_two_threads_see_their_own_frames(resnet18_handle, photos):
    imgs = {"a": photos["chelsea"], "b": photos["astronaut"]}
    serial = {k: frame_views(resnet18_handle, im, "layer2") for k, im in imgs.items()}
    out: dict = {}

    def run(k):
        for _ in range(3):
            out.setdefault(k, []).append(frame_views(resnet18_handle, imgs[k], "layer2"))

    threads = [threading.Thread(target=run, args=(k,)) for k in imgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in imgs:
        for v in out[k]:
            np.testing.assert_array_equal(v.cam.map, serial[k].cam.map)
            np.testing.assert_array_equal(v.acts.maps, serial[k].acts.maps)


# ---- the page -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app():
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()
        at.switch_page(str(ROOT / "pages" / "camera.py")).run()
        yield at


def test_page_without_a_frame_says_how_to_allow_the_camera(app):
    at = app
    assert not at.exception, at.exception
    assert at.title[0].value == "Camera"
    assert len(at.camera_input) == 1
    info = " ".join(i.value for i in at.info)
    assert "Allow this site to use the camera" in info and "Upload" in info
    assert not at.get("plotly_chart")


def test_a_snapshot_shows_top5_cam_and_activation_then_becomes_the_image(app, coffee_frame):
    at = app
    data = _jpeg(coffee_frame)
    at.camera_input[0].set_value(("frame.jpg", data, "image/jpeg")).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.subheader[0].value.startswith("Top-1: espresso")
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    caption = next(c.value for c in at.caption if c.value.startswith("server time"))
    seconds = float(caption.split()[2])
    assert seconds > 0
    assert "strongest in this frame" in caption
    # a picked channel is the one drawn
    at.radio(key="camera_channel_mode").set_value("pick").run()
    at.number_input(key="camera_channel").set_value(5).run()
    assert any("channel 5 of" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Use this frame").click().run()
    assert not at.exception, at.exception
    ss = at.session_state
    assert ss["image_name"].startswith("camera frame") and ss["image_source"] == "Upload"
    assert np.array_equal(np.asarray(ss["image"]), np.asarray(decode_image(data)))
    at.switch_page(str(ROOT / "pages" / "predict.py")).run()
    assert not at.exception, at.exception
    assert at.subheader[0].value.startswith("Top-1: espresso")
    assert at.session_state["image_name"].startswith("camera frame")  # the sidebar did not put a sample back


def test_a_broken_frame_is_a_message_not_a_traceback():
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()
        at.switch_page(str(ROOT / "pages" / "camera.py")).run()
        at.camera_input[0].set_value(("frame.jpg", b"\xff\xd8\xff not really a jpeg", "image/jpeg")).run()
    assert not at.exception, at.exception
    assert at.error and "image" in at.error[0].value.lower()
    assert not at.get("plotly_chart")
