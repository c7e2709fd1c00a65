"""Image decoding: every odd or hostile file gives the right RGB image or the app's own clear error."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from models.default import LITE_PREPROCESS
from models.images import ImageError, decode_image, decode_image_info, from_array, sample_images
from tests.image_corpus import corpus

CORPUS = corpus()


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_case(name):
    data, (kind, spec) = CORPUS[name]
    if kind == "error":
        with pytest.raises(ImageError) as e:
            decode_image(data)
        assert re.search(spec, str(e.value), re.I), str(e.value)
        assert "Traceback" not in str(e.value)
    else:
        img = decode_image(data)
        assert img.mode == "RGB"
        spec(np.asarray(img))
        x = LITE_PREPROCESS(img)
        assert x.shape == (3, 224, 224) and torch.isfinite(x).all()


def test_notes_describe_what_was_done():
    assert "first of 3 frames used" in decode_image_info(CORPUS["animated.gif"][0])[1].notes
    assert "EXIF orientation applied" in decode_image_info(CORPUS["exif_rotated.jpg"][0])[1].notes
    assert any("16-bit" in n for n in decode_image_info(CORPUS["16bit.png"][0])[1].notes)


def test_byte_limit():
    with pytest.raises(ImageError, match="MB"):
        decode_image(b"\x89PNG" + b"\0" * 100, max_bytes=50)


def test_samples_are_real_photos():
    s = sample_images()
    assert {"coffee", "chelsea", "astronaut", "rocket"} <= set(s)
    assert s["coffee"].size == (600, 400) and s["coffee"].mode == "RGB"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_raise_own_error(data):
    try:
        img = decode_image(data)
    except ImageError:
        return
    x = LITE_PREPROCESS(img)
    assert x.shape == (3, 224, 224) and torch.isfinite(x).all()


@st.composite
def arrays(draw):
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    ch = draw(st.sampled_from([None, 1, 3, 4]))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, bool]))
    shape = (h, w) if ch is None else (h, w, ch)
    if dtype is bool:
        a = draw(st.lists(st.booleans(), min_size=h * w * (ch or 1), max_size=h * w * (ch or 1)))
        return np.array(a, dtype=bool).reshape(shape)
    if dtype in (np.float32, np.float64):
        vals = st.floats(allow_nan=True, allow_infinity=True, width=32)
    else:
        vals = st.integers(0, np.iinfo(dtype).max)
    a = draw(st.lists(vals, min_size=h * w * (ch or 1), max_size=h * w * (ch or 1)))
    return np.array(a, dtype=dtype).reshape(shape)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(), st.sampled_from(["PNG", "TIFF", "none"]))
def test_arbitrary_arrays(a, container):
    try:
        if container == "none":
            img = from_array(a)
        else:
            import io
            try:
                pil = Image.fromarray(a)
                buf = io.BytesIO()
                pil.save(buf, container)
            except (TypeError, ValueError, OSError, KeyError):
                return  # Pillow cannot even write this array: nothing a browser could send
            img = decode_image(buf.getvalue())
    except ImageError:
        return
    assert img.mode == "RGB"
    x = LITE_PREPROCESS(img)
    assert x.shape == (3, 224, 224) and torch.isfinite(x).all()
