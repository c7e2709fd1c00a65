"""Network Dissection on Ray: two runs of ``DissectionReducer`` over the classroom split written as a folder of
PNGs — phase 1 merges the per-shard top activations into exact thresholds, phase 2 (the thresholds sent along)
merges the integer IoU tallies. Both merges are exact (``interpret.units.dissection``), so the result equals the
in-process ``dissect`` bit for bit when the batches agree (shards are whole batches).

Workers re-render the concept masks of their shard's images from the split's arguments (``ClassroomConcepts``: a
few bytes sent, not the masks) and check that the PNGs they were given are exactly those images.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from interpret.core.errors import InputError
from interpret.scale import ray_engine
from interpret.units import dissection as DS
from models.collections import CollectionSpec, ImageCollection


@dataclass(frozen=True)
class DissectionReducer:
    """One phase of a dissection: ``thresholds`` None → pass 1 (top activations per unit), else pass 2 (IoU
    tallies against those thresholds, given per layer as float tuples)."""

    data: DS.ClassroomConcepts
    layers: tuple[str, ...]
    quantile: float = 0.005
    thresholds: tuple[tuple[str, tuple[float, ...]], ...] | None = None
    batch_size: int = 64
    name: str = "dissection"
    resumable: bool = False

    def params(self) -> dict[str, Any]:
        return {"reducer": self.name, "data": [self.data.split, self.data.n, self.data.seed, self.data.spurious],
                "layers": list(self.layers), "quantile": self.quantile, "batch_size": self.batch_size,
                "phase": 1 if self.thresholds is None else 2}

    def prepare(self, handle) -> Any:
        return None

    def run(self, handle, ctx, images: ImageCollection, progress=None, cancel=None):
        indices = [int(i) for i, _ in images.items]
        if self.thresholds is None:
            expect, _ = self.data.batch(indices)
            for k, (i, name, img) in enumerate(images):
                if not np.array_equal(np.asarray(img.convert("RGB")), expect[indices.index(i)]):
                    raise InputError(f"image {name!r} of the collection is not image {i} of {self.data.source}")
            if images.skipped:
                raise InputError(f"unreadable images in the dissection folder: {images.skipped[:3]}")
            return DS.quantile_pass(handle, self.data, list(self.layers), self.quantile, indices=indices,
                                    n_total=len(self.data), batch_size=self.batch_size, progress=progress,
                                    cancel=cancel)
        thr = {name: np.asarray(v, np.float64) for name, v in self.thresholds}
        return DS.iou_pass(handle, self.data, thr, indices=indices, batch_size=self.batch_size, progress=progress,
                           cancel=cancel)

    def merge(self, parts: Sequence[Any]):
        return DS.merge_quantiles(parts) if self.thresholds is None else DS.merge_iou(parts)

    def n_images(self, part) -> int:
        return part.n_images

    def finish(self, result, listing: ImageCollection, seconds: float, cancelled: bool):
        result.cancelled = result.cancelled or cancelled
        return result


def write_folder(data: DS.ClassroomConcepts, folder: str | os.PathLike) -> CollectionSpec:
    """The split's images as ``NNNNN.png`` (lossless) in ``folder``; the folder's collection spec (listing order =
    image index)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    step = 256
    for s in range(0, len(data), step):
        images, _ = data.batch(range(s, min(s + step, len(data))))
        for k, im in enumerate(images):
            Image.fromarray(im).save(root / f"{s + k:05d}.png")
    return CollectionSpec("folder", str(root.resolve()))


def dissect_on_ray(model_key: str, data: DS.ClassroomConcepts, layers: Sequence[str], quantile: float = 0.005,
                   iou_threshold: float = 0.04, batch_size: int = 64, folder: str | os.PathLike | None = None,
                   progress: Callable[[float, str], Any] | None = None, **run_kwargs) -> tuple[DS.Dissection, list]:
    """``dissect`` of a registry model on Ray: (Dissection, the two runs' RunInfo). ``progress(fraction, text)``
    over both phases; ``run_kwargs`` go to ``ray_engine.run`` (address, workers, n_shards, …)."""
    t0 = time.perf_counter()
    DS._check_quantile(quantile)
    if not layers:
        raise InputError("choose at least one layer")
    with tempfile.TemporaryDirectory(prefix="cnn-lens-dissect-") as tmp:
        spec = write_folder(data, folder or tmp)
        listing = spec.open()
        infos = []

        def phase(k: int):
            if progress is None:
                return None
            return lambda p: progress((k + p.fraction) / 2, f"pass {k + 1}/2: {p.text()}")

        red1 = DissectionReducer(data, tuple(layers), float(quantile), None, int(batch_size))
        q, info = ray_engine.run(red1, model_key, spec, listing, progress=phase(0), **run_kwargs)
        infos.append(info)
        thr = DS.thresholds_of(q)
        red2 = DissectionReducer(data, tuple(layers), float(quantile),
                                 tuple((n, tuple(float(v) for v in thr[n])) for n in layers), int(batch_size))
        s, info = ray_engine.run(red2, model_key, spec, listing, progress=phase(1), **run_kwargs)
        infos.append(info)
    return DS.finish(q, s, iou_threshold, data.source, time.perf_counter() - t0), infos
