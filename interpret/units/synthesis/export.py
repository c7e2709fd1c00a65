"""A synthesis result as files: one PNG per image of the batch and ``settings.json`` (objective, every setting,
the per-step values) — what the page's download and the CLI's ``--out`` write, so an image can be made again."""
from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
from PIL import Image

__all__ = ["png_bytes", "export_files", "export_zip", "safe_stem"]


def safe_stem(text: str, limit: int = 60) -> str:
    """A file-name stem from an objective's description (letters, digits, ``._-``)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.")
    return (stem or "synthesis")[:limit]


def png_bytes(image: np.ndarray) -> bytes:
    """An H×W×3 float image in [0, 1] as 8-bit PNG bytes (rounded, not truncated)."""
    arr = np.clip(np.asarray(image, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def export_files(result, stem: str | None = None) -> dict[str, bytes]:
    """{file name: bytes}: ``<stem>_<i>.png`` for each image and ``settings.json``."""
    stem = safe_stem(stem or result.objective)
    files = {f"{stem}_{i}.png": png_bytes(img) for i, img in enumerate(result.images)}
    files["settings.json"] = (json.dumps(result.to_json(), indent=1) + "\n").encode()
    return files


def export_zip(result, stem: str | None = None) -> bytes:
    """The files of ``export_files`` in one zip archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in export_files(result, stem).items():
            z.writestr(name, data)
    return buf.getvalue()
