"""Uploaded bytes → a validated RGB PIL image, or an ImageError with a message a user can act on.

The content is checked, not the file name: only real image decoders are allowed, sizes are bounded before
any pixel is decoded (decompression bombs), EXIF orientation is applied, transparency is composited on a
neutral grey, 16- and 32-bit integer images are scaled by the bit depth their file declares (never guessed from
the pixel values, so a dark 16-bit image stays dark), float images from [0, 1], animations give their first frame.
"""
from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decoders we accept. Others Pillow knows (EPS runs Ghostscript, PSD, ICO, …) are refused.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # ~ 8000 × 5000: photos from any phone, far below a bomb
MAX_ASPECT = 20.0  # beyond this the shorter side resized to 256 would give an absurd width
# The neutral background for transparent pixels: ImageNet's mean colour, close to "no signal" after normalization.
BACKGROUND = (124, 116, 104)


class ImageError(ValueError):
    """The upload is not an image we can use; str(e) is the message to show."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mode: str
    size: tuple[int, int]
    frames: int
    notes: tuple[str, ...]


INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def declared_max(img: Image.Image, data: bytes) -> float:
    """The largest value an integer ("I", "I;16…") pixel can take, as the file declares it.

    PNG: the bit depth in IHDR (always the first chunk); PNM: Pillow's decoder already rescales the declared maxval
    (2…65535) to 0…65535; TIFF: BitsPerSample and SampleFormat (signed: 2^(bits−1) − 1). Depths that Pillow
    unpacks wrongly (a 12-bit TIFF comes out as scrambled 16-bit values) are refused rather than shown garbled.
    """
    fmt = img.format
    if fmt == "PNG" and len(data) > 24:
        return float(2 ** data[24] - 1)
    if fmt == "PPM":
        return 65535.0
    if fmt == "TIFF":
        def tag(code: int, default: int) -> int:
            v = img.tag_v2.get(code, default)
            return int(v[0] if isinstance(v, tuple) else v)

        bits, signed = tag(258, 1), tag(339, 1) == 2
        allowed = (16,) if img.mode.startswith("I;16") else (16, 32)
        if bits not in allowed:
            raise ImageError(f"This TIFF declares {bits} bits per sample, which cannot be decoded reliably. "
                             "Please save it with 8 or 16 bits per sample.")
        return float(2 ** (bits - 1) - 1 if signed else 2 ** bits - 1)
    raise ImageError(f"This {fmt or 'image'} file holds integer pixels without a declared bit depth.")


def _scale_int(arr: np.ndarray, top: float, notes: list[str]) -> Image.Image:
    """Integer pixels on the declared scale 0…top → 8-bit grey (rounded; negative values, possible in signed
    TIFFs, are clipped to black)."""
    out = np.rint(np.clip(arr.astype(np.float64), 0, top) / top * 255.0).astype(np.uint8)
    kind = "16-bit image" if top == 65535 else "integer image"
    notes.append(f"{kind} scaled to 8 bits by its declared range 0–{int(top)}")
    return Image.fromarray(out, "L").convert("RGB")


def _to_rgb(img: Image.Image, notes: list[str], int_max: float | None = None) -> Image.Image:
    """Any decoded mode → RGB. Integer ("I", "I;16…") images need ``int_max``, the top of their declared scale."""
    mode = img.mode
    if mode in INT_MODES:
        if int_max is None:
            raise ImageError("The image holds integer pixels without a declared bit depth.")
        return _scale_int(np.asarray(img), int_max, notes)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        finite = np.isfinite(arr)
        if not finite.any():
            raise ImageError("The image holds no finite pixel values (all NaN or infinite).")
        arr = np.where(finite, arr, 0.0)
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
        if lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
            notes.append("float image in [0, 1] scaled to 8 bits")
        else:
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
            notes.append(f"float image rescaled from its range [{lo:.3g}, {hi:.3g}]")
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info) or (
            mode in ("L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparent areas placed on a neutral grey background")
        bg = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return img.convert("RGB")


def decode_image_info(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
                      ) -> tuple[Image.Image, ImageInfo]:
    """Decode and validate; returns the RGB image and what was done to it."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError("No image data was received.")
    data = bytes(data)
    if len(data) == 0:
        raise ImageError("The file is empty.")
    if len(data) > max_bytes:
        raise ImageError(f"The file is {len(data) / 2**20:.1f} MB; images up to {max_bytes / 2**20:.0f} MB "
                         "are accepted.")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            w, h = img.size
            if w < 1 or h < 1:
                raise ImageError("The image has no pixels.")
            if w * h > max_pixels:
                raise ImageError(f"The image is {w}×{h} pixels ({w * h / 1e6:.0f} megapixels); at most "
                                 f"{max_pixels / 1e6:.0f} megapixels are accepted. Please downscale it.")
            if max(w, h) / min(w, h) > MAX_ASPECT:
                raise ImageError(f"The image is {w}×{h} pixels: its sides differ by more than {MAX_ASPECT:.0f}×, "
                                 "which leaves nothing useful after the centre crop. Please crop it first.")
            fmt = img.format or "?"
            int_max = declared_max(img, data) if img.mode in INT_MODES else None
            frames = int(getattr(img, "n_frames", 1) or 1)
            if frames > 1:
                img.seek(0)
                notes.append(f"first of {frames} frames used")
            img.load()
            orientation = img.getexif().get(0x0112, 1)
            img = ImageOps.exif_transpose(img) or img
            if orientation not in (1, None):
                notes.append("EXIF orientation applied")
            rgb = _to_rgb(img, notes, int_max)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("The image declares an enormous size (a possible decompression bomb) and was refused.")
    except UnidentifiedImageError:
        raise ImageError("This file is not an image we can read. Accepted formats: "
                         + ", ".join(ALLOWED_FORMATS) + ". The content is checked, not the file name.") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, MemoryError,
            ZeroDivisionError, struct.error) as e:
        raise ImageError(f"The image file is damaged or truncated and cannot be decoded ({type(e).__name__}).") from None
    rgb.load()
    return rgb, ImageInfo(fmt, img.mode, (w, h), frames, tuple(notes))


def decode_image(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bytes → RGB PIL image, or ImageError with a clear message."""
    return decode_image_info(data, max_bytes, max_pixels)[0]


def from_array(arr: np.ndarray) -> Image.Image:
    """A numpy image (H×W, H×W×1/3/4; uint8, other integers scaled by their dtype's range, bool or float) → RGB PIL
    image via the same rules."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise ImageError(f"An image array must be H×W, H×W×3 or H×W×4; got shape {a.shape}.")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        finite = np.isfinite(a)
        if not finite.any():
            raise ImageError("The image holds no finite pixel values.")
        a = np.where(finite, a, 0.0)
        lo, hi = float(a.min()), float(a.max())
        a = a * 255.0 if (lo >= 0 and hi <= 1) else ((a - lo) / (hi - lo) * 255.0 if hi > lo else a * 0)
        a = np.clip(a, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.integer):
            raise ImageError(f"Unsupported image array type {a.dtype}.")
        # the dtype declares the scale (uint16: 0…65535), whatever values the pixels happen to take
        top = float(np.iinfo(a.dtype).max)
        a = np.rint(np.clip(a.astype(np.float64), 0, top) / top * 255.0).astype(np.uint8)
    img = Image.fromarray(a)
    return _to_rgb(img, [])


def image_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def sample_images() -> dict[str, Image.Image]:
    """The real photos bundled with scikit-image, by name (no network)."""
    from skimage import data

    out = {}
    for name in ("coffee", "chelsea", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry"):
        fn = getattr(data, name, None)
        if fn is None:
            continue
        try:
            out[name] = from_array(fn())
        except Exception:  # noqa: BLE001 - a missing optional sample must not break the list
            continue
    return out
