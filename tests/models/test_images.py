"""Image decoding: every odd or hostile file gives the right RGB image or the app's own clear error."""
from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from models.default import LITE_PREPROCESS
from models.images import ImageError, decode_image, decode_image_info, from_array, sample_images
from tests.image_corpus import corpus

CORPUS = corpus()


def _enc(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


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


# ---- integer images: scaled by the bit depth the file declares, never by the pixel values ---------------------

def _expected(values, top) -> list[int]:
    """Hand-computed 8-bit grey: round(v · 255 / top)."""
    return [int(np.rint(v * 255 / top)) for v in values]


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def _png(width: int, depth: int, colour_type: int, row: bytes) -> bytes:
    """A one-row PNG written by hand (Pillow cannot write 16-bit RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, 1, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" + row))
            + _png_chunk(b"IEND", b""))


def _tiff(samples: list[int], width: int, bits: int, per_pixel: int, signed: bool = False,
          big_endian: bool = False) -> bytes:
    """A one-row baseline TIFF written by hand: any BitsPerSample, grey (1 sample) or RGB (3)."""
    e = ">" if big_endian else "<"
    dtype = {8: "u1", 16: "u2", 32: "i4" if signed else "u4"}.get(bits, "u2")
    body = np.array(samples, e + dtype).tobytes()
    entries = [(256, 3, 1, width), (257, 3, 1, 1), (258, 3, 1, bits), (259, 3, 1, 1),
               (262, 3, 1, 2 if per_pixel == 3 else 1), (273, 4, 1, 0), (277, 3, 1, per_pixel), (278, 3, 1, 1),
               (279, 4, 1, len(body)), (339, 3, 1, 2 if signed else 1)]
    if per_pixel == 3:
        entries[2] = (258, 3, 3, 0)  # three BitsPerSample values, stored after the IFD
    ifd = 8
    extra = ifd + 2 + 12 * len(entries) + 4
    data_at = extra + (6 if per_pixel == 3 else 0)
    out = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "IH", ifd, len(entries))
    for tag, typ, count, value in entries:
        if tag == 258 and per_pixel == 3:
            value = extra
        if tag == 273:
            value = data_at
        out += struct.pack(e + "HHI", tag, typ, count)
        out += struct.pack(e + "HH", value, 0) if typ == 3 and count == 1 else struct.pack(e + "I", value)
    out += struct.pack(e + "I", 0)
    if per_pixel == 3:
        out += struct.pack(e + "HHH", bits, bits, bits)
    return out + body


def _pnm(magic: bytes, width: int, maxval: int, samples: list[int]) -> bytes:
    head = magic + b"\n%d 1\n%d\n" % (width, maxval)
    if magic in (b"P2", b"P3"):
        return head + " ".join(map(str, samples)).encode() + b"\n"
    return head + (np.array(samples, ">u2").tobytes() if maxval > 255 else bytes(samples))


def _grey(data: bytes) -> list[int]:
    a = np.asarray(decode_image(data))
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()
    return a[0, :, 0].tolist()


FULL = [0, 255, 1000, 32768, 65535]
DARK = [0, 100, 200, 255]  # 16-bit pixels that all fit in 8 bits: a dark image, not a full-range one


def _i16(values, raw: str) -> Image.Image:
    return Image.frombytes(raw, (len(values), 1), np.array(values, ">u2" if raw == "I;16B" else "<u2").tobytes())


@pytest.mark.parametrize("values", [FULL, DARK], ids=["full", "dark"])
@pytest.mark.parametrize("make", [
    lambda v: _enc(_i16(v, "I;16"), "PNG"),
    lambda v: _enc(_i16(v, "I;16"), "TIFF"),
    lambda v: _enc(_i16(v, "I;16B"), "TIFF"),
    lambda v: _tiff(v, len(v), 16, 1, big_endian=True),
    lambda v: _pnm(b"P5", len(v), 65535, v),
    lambda v: _pnm(b"P2", len(v), 65535, v),
], ids=["png-I;16", "tiff-I;16", "tiff-I;16B", "tiff-MM", "pgm-P5", "pgm-P2"])
def test_16bit_grey_scaled_by_declared_depth(make, values):
    assert _grey(make(values)) == _expected(values, 65535)


@pytest.mark.parametrize("maxval,values", [(1023, [0, 255, 512, 1023]), (1023, [0, 1, 2, 3]),
                                           (4095, [0, 1000, 2048, 4095]), (4095, [0, 3, 10, 255])])
@pytest.mark.parametrize("magic", [b"P5", b"P2"])
def test_pnm_scaled_by_its_maxval(magic, maxval, values):
    """maxval 1023 → 1023 is white and 3 is (nearly) black, whatever the largest pixel in the file is."""
    assert _grey(_pnm(magic, len(values), maxval, values)) == _expected(values, maxval)


@pytest.mark.parametrize("make", [
    lambda px: _png(len(px) // 3, 16, 2, np.array(px, ">u2").tobytes()),
    lambda px: _tiff(px, len(px) // 3, 16, 3),
    lambda px: _pnm(b"P6", len(px) // 3, 65535, px),
    lambda px: _pnm(b"P3", len(px) // 3, 65535, px),
], ids=["png", "tiff", "ppm-P6", "ppm-P3"])
def test_16bit_rgb_scaled_by_declared_depth(make):
    # 257·k is exactly k on the 8-bit scale, by the high byte (Pillow's conversion) and by rounding alike
    px = [0, 257 * 64, 257 * 255, 257 * 128, 257 * 32, 0]
    a = np.asarray(decode_image(make(px)))
    assert a.reshape(-1).tolist() == [0, 64, 255, 128, 32, 0]
    assert np.asarray(decode_image(make([100, 200, 255] * 2))).max() <= 1  # dark stays dark


def test_32bit_tiff_by_declared_depth_and_odd_depths_refused():
    signed = _tiff([0, 1000, 65535, 2 ** 30, 2 ** 31 - 1], 5, 32, 1, signed=True)
    assert _grey(signed) == _expected([0, 1000, 65535, 2 ** 30, 2 ** 31 - 1], 2 ** 31 - 1) == [0, 0, 0, 128, 255]
    info = decode_image_info(signed)[1]
    assert any("declared range 0–2147483647" in n for n in info.notes)
    with pytest.raises(ImageError, match="12 bits per sample"):
        decode_image(_tiff([0, 100, 4095, 7], 4, 12, 1))


def test_integer_arrays_scaled_by_dtype():
    assert np.asarray(from_array(np.array([[0, 100, 255]], np.uint16)))[0, :, 0].tolist() == [0, 0, 1]
    assert np.asarray(from_array(np.array([[0, 32768, 65535]], np.uint16)))[0, :, 0].tolist() == [0, 128, 255]
