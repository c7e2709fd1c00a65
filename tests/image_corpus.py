"""Odd and hostile image files, generated (nothing binary is committed). name → (bytes, expectation).

Expectation: ("ok", check) where check(rgb_uint8_array) asserts the decoded content, or ("error", regex).
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A valid PNG whose IHDR claims w×h pixels, with one tiny compressed row of data: tiny on disk."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _eq(rgb):
    def check(a):
        assert a.shape[2] == 3
        assert np.abs(a.astype(int) - np.array(rgb)).max() <= 3, (a[0, 0], rgb)
    return check


def _size(w, h, extra=None):
    def check(a):
        assert a.shape == (h, w, 3), a.shape
        if extra:
            extra(a)
    return check


def corpus() -> dict[str, tuple[bytes, tuple]]:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    c: dict[str, tuple[bytes, tuple]] = {}
    c["empty.png"] = (b"", ("error", "empty"))
    c["random.jpg"] = (rng.bytes(5000), ("error", "not an image"))
    c["text.png"] = (b"just some text, certainly not pixels\n" * 20, ("error", "not an image"))
    c["page.jpg"] = (b"<!doctype html><html><body><script>alert(1)</script></body></html>", ("error", "not an image"))
    c["truncated.jpg"] = (_enc(photo, "JPEG")[:400], ("error", "damaged or truncated"))
    c["truncated.png"] = (_enc(photo, "PNG")[:700], ("error", "damaged or truncated"))
    c["bomb.png"] = (_png_header_only(30000, 30000), ("error", "megapixels|decompression bomb"))
    c["bomb_mid.png"] = (_png_header_only(9000, 9000), ("error", "megapixels|decompression bomb"))
    c["1x1.png"] = (_enc(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), ("ok", _eq((10, 200, 30))))
    c["4000x3.png"] = (_enc(Image.new("RGB", (4000, 3), "white"), "PNG"), ("error", "sides differ"))
    c["gray.png"] = (_enc(Image.new("L", (40, 30), 77), "PNG"), ("ok", _eq((77, 77, 77))))
    c["gray_alpha.png"] = (_enc(Image.new("LA", (40, 30), (200, 0)), "PNG"), ("ok", _eq((124, 116, 104))))
    c["palette.png"] = (_enc(Image.new("RGB", (40, 30), (0, 0, 255)).convert("P"), "PNG"), ("ok", _eq((0, 0, 255))))
    c["16bit.png"] = (_enc(Image.fromarray(np.full((30, 40), 32896, np.uint16)), "PNG"), ("ok", _eq((128, 128, 128))))
    c["float.tiff"] = (_enc(Image.fromarray(np.full((30, 40), 0.25, np.float32)), "TIFF"), ("ok", _eq((64, 64, 64))))
    c["cmyk.jpg"] = (_enc(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"), ("ok", _eq((255, 0, 0))))
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 255))
    rgba.paste((0, 255, 0, 0), (0, 0, 20, 30))
    def half(a):
        assert np.abs(a[5, 5].astype(int) - (124, 116, 104)).max() <= 1 and tuple(a[5, 30]) == (255, 0, 0)
    c["rgba.png"] = (_enc(rgba, "PNG"), ("ok", _size(40, 30, half)))
    frames = [Image.new("RGB", (40, 30), col) for col in ("red", "blue", "green")]
    c["animated.gif"] = (_enc(frames[0], "GIF", save_all=True, append_images=frames[1:]), ("ok", _eq((255, 0, 0))))
    rot = Image.new("RGB", (60, 20), "white")
    rot.paste((0, 0, 0), (0, 0, 10, 20))  # black band on the left
    exif = rot.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    def rotated(a):
        assert a.shape == (60, 20, 3) and a[2, 10].max() < 40 and a[50, 10].min() > 200
    c["exif_rotated.jpg"] = (_enc(rot, "JPEG", exif=exif, quality=95), ("ok", rotated))
    c["png_named.jpg"] = (_enc(Image.new("RGB", (40, 30), (9, 99, 199)), "PNG"), ("ok", _eq((9, 99, 199))))
    c["image.webp"] = (_enc(Image.new("RGB", (40, 30), (250, 250, 0)), "WEBP", lossless=True), ("ok", _eq((250, 250, 0))))
    c["image.bmp"] = (_enc(Image.new("RGB", (40, 30), (1, 2, 3)), "BMP"), ("ok", _eq((1, 2, 3))))
    c["photo.jpg"] = (_enc(photo, "JPEG", quality=95), ("ok", _size(160, 120)))
    c["image.ico"] = (_enc(Image.new("RGB", (32, 32), "red"), "ICO"), ("error", "not an image"))
    c["eps.png"] = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", ("error", "not an image"))
    return c
