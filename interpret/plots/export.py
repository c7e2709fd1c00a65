"""Exports of an attribution: PNG of the map over the image, the raw map as .npy, the interactive figure as
HTML and a JSON record of the settings that reproduce it. Pure functions returning bytes/strings/dicts, shared
by the pages' download buttons and the CLI. Titles name the method by the caller's ``method_label`` (default the
method key): exports never import the method registry.
"""
from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import plotly.graph_objects as go

from interpret.core.result import Attribution
from interpret.plots.colour import DIVERGING, SEQUENTIAL


def colour_lut(signed: bool, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours of the same scales as the interactive figures (plotly's RdBu_r / Inferno)."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    cols = sample_colorscale(DIVERGING if signed else SEQUENTIAL, list(np.linspace(0, 1, n)))
    return np.array([unlabel_rgb(c) for c in cols], dtype=np.float64).round().astype(np.uint8)


def scaled_map(attr_map: np.ndarray, signed: bool) -> tuple[np.ndarray, float, float]:
    """Map → values in [0, 1] for the colour scale, with the (low, high) ends: ±max|map| if signed, else min…max."""
    m = np.asarray(attr_map, dtype=np.float64)
    if signed:
        hi = float(np.abs(m).max()) or 1.0
        lo = -hi
    else:
        lo, hi = float(m.min()), float(m.max())
        if hi <= lo:
            hi = lo + 1.0
    return np.clip((m - lo) / (hi - lo), 0, 1), lo, hi


def png_title(attr: Attribution, label: str | None = None, *, method_label: str | None = None) -> str:
    """The PNG's title: method label (default ``attr.method``) and class name, e.g. 'Grad-CAM · espresso (#967)'."""
    what = f"{label} (#{int(attr.target)})" if label else f"class {int(attr.target)}"
    return f"{method_label or attr.method} · {what}"


def file_stem(model_key: str, attr: Attribution, label: str | None = None) -> str:
    """A download's file name without extension, e.g. 'efficientnet_lite0_gradcam_espresso_967': model, method,
    class name and index, reduced to letters, digits, '-' and '_' (safe on every file system)."""
    parts = [model_key, attr.method] + ([label] if label else []) + [str(int(attr.target))]
    clean = [re.sub(r"[^0-9A-Za-z-]+", "_", p).strip("_") for p in parts]
    return "_".join(c for c in clean if c)[:120]


def _font(size: int):
    from PIL import ImageFont

    # DejaVu Sans (Debian's fonts-dejavu-core, installed by .ci/run) has Greek and arrows for titles like "ε-γ-box";
    # Pillow's built-in font has neither.
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def overlay_png(image: np.ndarray, attr: Attribution, opacity: float = 0.5, scale: int = 2,
                title: str | None = None, label: str | None = None, *, method_label: str | None = None) -> bytes:
    """The map over the image (H×W×3 in [0, 1]) with a colour bar and a title (default: ``png_title`` of
    ``method_label`` and the class ``label``), drawn with Pillow (no browser); text is sized to stay readable
    when projected."""
    from PIL import Image, ImageDraw

    lut = colour_lut(attr.signed)
    unit, lo, hi = scaled_map(attr.map, attr.signed)
    heat = lut[np.rint(unit * (len(lut) - 1)).astype(int)].astype(np.float64)
    base = np.clip(np.asarray(image, dtype=np.float64), 0, 1) * 255
    over = ((1 - opacity) * base + opacity * heat).round().astype(np.uint8)
    h, w = over.shape[:2]
    pic = Image.fromarray(over).resize((w * scale, h * scale), Image.Resampling.BILINEAR)
    font, small = _font(18), _font(14)
    text = title or png_title(attr, label, method_label=method_label)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = int(probe.textlength(text, font=font)) + 12
    bar_w, pad, top = 16, 8, 34
    canvas = Image.new("RGB", (max(pic.width + bar_w + 90, text_w), pic.height + top + pad), "white")
    canvas.paste(pic, (0, top))
    bar = lut[::-1][np.linspace(0, len(lut) - 1, pic.height).astype(int)]
    canvas.paste(Image.fromarray(np.repeat(bar[:, None, :], bar_w, axis=1)), (pic.width + pad, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 6), text, fill="black", font=font)
    x_txt = pic.width + pad + bar_w + 4
    draw.text((x_txt, top), f"{hi:.3g}", fill="black", font=small)
    draw.text((x_txt, top + pic.height - 16), f"{lo:.3g}", fill="black", font=small)
    if attr.signed:
        draw.text((x_txt, top + pic.height // 2 - 8), "0", fill="black", font=small)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def figure_html(fig: go.Figure) -> str:
    """A self-contained interactive HTML file (plotly.js embedded: it opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True)


def jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 64 else f"array{tuple(v.shape)}"
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def map_stats(m: np.ndarray) -> dict[str, Any]:
    m = np.asarray(m, dtype=np.float64)
    return {"shape": list(m.shape), "min": float(m.min()), "max": float(m.max()), "mean": float(m.mean()),
            "abs_mean": float(np.abs(m).mean()), "sum": float(m.sum()),
            "argmax_yx": [int(i) for i in np.unravel_index(int(np.argmax(m)), m.shape)]}


def settings_record(attr: Attribution, handle, image_ref: str, probs: np.ndarray | None = None) -> dict[str, Any]:
    """Everything needed to reproduce the map: image reference (name or content hash), model, method, class,
    parameters, and the map's statistics to check a re-run against."""
    import torch  # only for its version: the exports otherwise need numpy, plotly and Pillow only

    rec: dict[str, Any] = {
        "image": image_ref, "model": handle.key, "model_name": handle.name, "model_source": handle.source,
        "method": attr.method, "target": int(attr.target), "target_label": handle.labels[attr.target],
        "params": jsonable(attr.params), "seconds": round(float(attr.seconds), 4), "signed": bool(attr.signed),
        "map": map_stats(attr.map),
        "extra": {k: jsonable(v) for k, v in attr.extra.items()
                  if isinstance(v, (int, float, str, bool, list, tuple, dict, np.generic))},
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    if probs is not None:
        rec["target_probability"] = float(probs[attr.target])
        rec["top5"] = [{"index": int(i), "label": handle.labels[i], "probability": float(probs[i])}
                       for i in np.argsort(-probs)[:5]]
    return rec
