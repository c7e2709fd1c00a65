"""Reducers: what a worker computes over one shard of a collection and how shard results merge exactly.

A reducer is a small picklable object sent once to every worker:

- ``params()``: the JSON settings that must agree for parts to be merged (part of a resumable run's identity);
- ``prepare(handle)``: per-worker set-up, run once when the worker starts (receptive-field table, traced
  copies, warm-up), never per shard;
- ``run(handle, ctx, images, progress, cancel)``: the part of one shard (``images`` keeps global indices);
- ``merge(parts)``: parts in shard order → the one-run result, exactly;
- ``save(part, path)`` / ``load(path)``: a part on disk (no pickles), or ``resumable = False``.

``TopPatchesReducer`` reuses ``interpret.units.top_patches`` (its scan, state, merge and file format);
``ExplainReducer`` explains every image and merges by concatenation in collection order. Per-unit quantiles
and IoU tallies (dissection) fit the same shape: a streaming state per shard and an exact merge.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from interpret.attribution.registry import explain
from interpret.core.errors import InputError
from interpret.core.result import Attribution
from interpret.units import top_patches as tp
from interpret.units.receptive_field import rf_table
from models.collections import ImageCollection
from models.handle import ModelHandle, label_index


class Reducer(Protocol):
    name: str
    resumable: bool

    def params(self) -> dict[str, Any]: ...

    def prepare(self, handle: ModelHandle) -> Any: ...

    def run(self, handle: ModelHandle, ctx: Any, images: ImageCollection,
            progress: Callable[[int, int | None], Any] | None, cancel: Callable[[], bool] | None) -> Any: ...

    def merge(self, parts: Sequence[Any]) -> Any: ...

    def n_images(self, part: Any) -> int: ...

    def finish(self, result: Any, listing: ImageCollection, seconds: float, cancelled: bool) -> Any: ...


# ---------------------------------------------------------------------------------------------------------
# Top-k patches

@dataclass(frozen=True)
class TopPatchesReducer:
    """Top-k patches of one layer (``interpret.units.top_patches.scan``); ``batch_size`` fixes the batches, so
    shards of whole batches merge to the one-run result bit for bit."""

    layer: str
    channels: tuple[int, ...] | None = None
    k: int = 9
    per_image: int = 1
    batch_size: int = 16
    call_index: int = -1
    name: str = "top_patches"
    resumable: bool = True

    def params(self) -> dict[str, Any]:
        return {"reducer": self.name, "layer": self.layer, "channels": None if self.channels is None
                else list(self.channels), "k": self.k, "per_image": self.per_image, "batch_size": self.batch_size,
                "call_index": self.call_index}

    def prepare(self, handle: ModelHandle) -> Any:
        try:
            return rf_table(handle)  # once per worker: the geometry of every layer
        except NotImplementedError:
            return None

    def run(self, handle, ctx, images, progress=None, cancel=None) -> tp.TopPatches:
        return tp.scan(handle, images, self.layer, self.channels, k=self.k, per_image=self.per_image,
                       batch_size=self.batch_size, call_index=self.call_index, progress=progress, cancel=cancel,
                       table=ctx)

    def merge(self, parts: Sequence[tp.TopPatches]) -> tp.TopPatches:
        return tp.merge(parts)

    def n_images(self, part: tp.TopPatches) -> int:
        return part.n_images + len(part.skipped)

    def finish(self, result: tp.TopPatches, listing: ImageCollection, seconds: float, cancelled: bool
               ) -> tp.TopPatches:
        """The merged parts as the one-run scan reports them: the listing's skips first, its source, wall time."""
        result.skipped = list(listing.skipped) + list(result.skipped)
        result.source, result.seconds, result.cancelled = listing.source, seconds, cancelled
        return result

    def save(self, part: tp.TopPatches, path: str | os.PathLike) -> None:
        tp.save(part, path)

    def load(self, path: str | os.PathLike) -> tp.TopPatches:
        return tp.load(path)


# ---------------------------------------------------------------------------------------------------------
# Batch explanations

@dataclass
class Explained:
    """One explained image: what the driver needs to write its map, overlay, settings record and index row."""

    index: int
    name: str
    attr: Attribution
    probs: np.ndarray  # softmax over the classes
    display: np.ndarray  # H×W×3 float in [0, 1]: the image as the model sees it
    sha256: str  # of the image as decoded (RGB pixels), to tie the record to its input


@dataclass
class ExplainPart:
    items: list[Explained] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def pixels_sha256(img) -> str:
    """sha256 of a PIL image's RGB pixels and size (the decoded input, independent of its file encoding)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    h = hashlib.sha256(f"{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def explain_one(handle: ModelHandle, img, method: str, target: int | str | None, params: dict[str, Any]
                ) -> tuple[Attribution, np.ndarray, np.ndarray]:
    """(attribution, probabilities, display image) of one image: the target is the predicted class when
    ``target`` is None or "predicted", else a class index or label."""
    x = handle.input_tensor(img)
    probs = handle.predict(x)
    t = int(np.argmax(probs)) if target is None or str(target) == "predicted" else label_index(handle, target)
    with torch.set_grad_enabled(True):
        attr = explain(handle, x, t, method, **params)
    return attr, probs, handle.preprocess.to_display(x[0])


@dataclass(frozen=True)
class ExplainReducer:
    """An attribution map per image (``interpret.attribution.registry.explain``); parts hold the maps and merge
    by concatenation in collection order (each image is explained on its own, so the map equals a plain loop's).
    """

    method: str
    target: int | str | None = None
    method_params: tuple[tuple[str, Any], ...] = ()
    name: str = "explain"
    resumable: bool = False

    def params(self) -> dict[str, Any]:
        return {"reducer": self.name, "method": self.method, "target": self.target,
                "params": dict(self.method_params)}

    def prepare(self, handle: ModelHandle) -> Any:
        return None

    def run(self, handle, ctx, images, progress=None, cancel=None) -> ExplainPart:
        part = ExplainPart()
        total = len(images)
        done = 0
        for idx, name, img in images:
            attr, probs, display = explain_one(handle, img, self.method, self.target, dict(self.method_params))
            part.items.append(Explained(idx, name, attr, probs, display, pixels_sha256(img)))
            done += 1
            if progress is not None:
                progress(done + len(images.skipped), total)
            if cancel is not None and cancel():
                break
        part.skipped = list(images.skipped)
        return part

    def merge(self, parts: Sequence[ExplainPart]) -> ExplainPart:
        if not parts:
            raise InputError("nothing to merge")
        items = sorted((it for p in parts for it in p.items), key=lambda it: it.index)
        return ExplainPart(items, [s for p in parts for s in p.skipped])

    def n_images(self, part: ExplainPart) -> int:
        return len(part.items) + len(part.skipped)

    def finish(self, result: ExplainPart, listing: ImageCollection, seconds: float, cancelled: bool
               ) -> ExplainPart:
        result.skipped = list(listing.skipped) + list(result.skipped)
        return result
