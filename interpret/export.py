"""Exports of an attribution: PNG of the map over the image, the raw map as .npy, the interactive figure as
HTML and a JSON record of the settings that reproduce it. Pure functions returning bytes/strings/dicts, shared
by the pages' download buttons and the CLI.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import plotly.graph_objects as go

from .plots import DIVERGING, SEQUENTIAL
from .result import Attribution


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


def overlay_png(image: np.ndarray, attr: Attribution, opacity: float = 0.5, scale: int = 2,
                title: str | None = None) -> bytes:
    """The map over the image (H×W×3 in [0, 1]) with a colour bar and a title, drawn with Pillow (no browser)."""
    from PIL import Image, ImageDraw

    lut = colour_lut(attr.signed)
    unit, lo, hi = scaled_map(attr.map, attr.signed)
    heat = lut[np.rint(unit * (len(lut) - 1)).astype(int)].astype(np.float64)
    base = np.clip(np.asarray(image, dtype=np.float64), 0, 1) * 255
    over = ((1 - opacity) * base + opacity * heat).round().astype(np.uint8)
    h, w = over.shape[:2]
    pic = Image.fromarray(over).resize((w * scale, h * scale), Image.Resampling.BILINEAR)
    bar_w, pad, top = 16, 8, 24
    canvas = Image.new("RGB", (pic.width + bar_w + 90, pic.height + top + pad), "white")
    canvas.paste(pic, (0, top))
    bar = lut[::-1][np.linspace(0, len(lut) - 1, pic.height).astype(int)]
    canvas.paste(Image.fromarray(np.repeat(bar[:, None, :], bar_w, axis=1)), (pic.width + pad, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title or f"{attr.method} · class {attr.target}", fill="black")
    draw.text((pic.width + pad + bar_w + 4, top), f"{hi:.3g}", fill="black")
    draw.text((pic.width + pad + bar_w + 4, top + pic.height - 12), f"{lo:.3g}", fill="black")
    if attr.signed:
        draw.text((pic.width + pad + bar_w + 4, top + pic.height // 2 - 6), "0", fill="black")
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
    import torch

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
