"""Top-activating image patches (Zeiler & Fergus 2014): scan a collection of images and keep, for each chosen
channel of a layer, the k strongest units with the image patch inside their receptive field.

- Streaming: per channel a heap of at most k entries, so memory grows with k × channels, never with the
  collection; images are read lazily and forwarded in batches. Small fields are copied out per entry; when
  the field covers over a quarter of the image (deep layers) the model-view image is kept once per distinct
  image still in some heap and patches are cut from it at the end (views), instead of k × channels copies.
- Per image, each channel contributes its ``per_image`` strongest positions (default 1: the maximally
  activated unit, as in Zeiler & Fergus; more gives several patches of one image).
- Ranking is total and deterministic: higher value first, then lower image index (position in the whole
  collection), then lower unit index (row-major). Ties therefore never depend on batching or sharding.
- Shards (``ImageCollection.shard``, ``models.collections``) are contiguous runs of whole batches, so every
  image is computed in exactly the batch it would be in one run — merged shard results equal the one-run
  result bit for bit.
- Patches are cropped from the image as the model sees it (resized + centre-cropped), to the unit's
  receptive field clipped to the image (``box``, half-open y0, x0, y1, x1).
"""
from __future__ import annotations

import heapq
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from interpret.core.errors import InputError
from interpret.core.runtime import cancelled as _cancelled
from interpret.core.layers import capture, get_module
from interpret.core.memory import run_chunks
from interpret.core.tensors import device_of, to_numpy
from interpret.units.receptive_field import RFRow, RFTable, rf_table
from models.collections import iter_images


# ---------------------------------------------------------------------------------------------------------
# Results

@dataclass
class Patch:
    """One top-activating unit: its activation, where it is, and the image patch it sees."""

    channel: int
    value: float
    image_index: int  # position in the whole collection (tie-break and shard merge key)
    image_name: str
    unit: tuple[int, int]  # (i, j) in the layer's map
    box: tuple[int, int, int, int]  # receptive field clipped to the image: half-open (y0, x0, y1, x1)
    patch: np.ndarray  # uint8 (y1 − y0, x1 − x0, 3), cropped from the image as the model sees it (a view
    # into that image, shared by the patches of one image)

    def key(self) -> tuple:
        """Sort key, best first."""
        return (-self.value, self.image_index, self.unit[0], self.unit[1])


@dataclass
class TopPatches:
    """Per channel, the top-k patches, best first."""

    layer: str
    call_index: int
    channels: list[int]
    k: int
    per_image: int
    input_size: tuple[int, int]
    rf: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (r, S, P) of the layer, per axis
    patches: dict[int, list[Patch]]
    n_images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    source: str = ""

    def params(self) -> dict[str, Any]:
        """The settings that must agree for two results to be merged."""
        return {"layer": self.layer, "call_index": self.call_index, "channels": list(self.channels), "k": self.k,
                "per_image": self.per_image, "input_size": list(self.input_size)}

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per patch (no arrays), for tables and JSON."""
        return [{"channel": c, "rank": r, "value": p.value, "image_index": p.image_index, "image": p.image_name,
                 "unit": list(p.unit), "box": list(p.box)}
                for c in self.channels for r, p in enumerate(self.patches.get(c, []))]


def save(result: TopPatches, path: str | os.PathLike) -> None:
    """Write a result as one ``.npz``: JSON metadata plus one uint8 array per patch (no pickles)."""
    meta = {**result.params(), "rf": result.rf, "n_images": result.n_images, "skipped": result.skipped,
            "cancelled": result.cancelled, "seconds": result.seconds, "source": result.source,
            "patches": result.records()}
    arrays = {f"p{c}_{r}": p.patch for c in result.channels for r, p in enumerate(result.patches.get(c, []))}
    with open(path, "wb") as f:
        np.savez_compressed(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def load(path: str | os.PathLike) -> TopPatches:
    """Read a result written by ``save``."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        patches: dict[int, list[Patch]] = {c: [] for c in meta["channels"]}
        for rec in meta["patches"]:
            c, r = rec["channel"], rec["rank"]
            patches[c].append(Patch(c, float(rec["value"]), int(rec["image_index"]), rec["image"],
                                    tuple(rec["unit"]), tuple(rec["box"]), z[f"p{c}_{r}"]))
    return TopPatches(meta["layer"], meta["call_index"], list(meta["channels"]), meta["k"], meta["per_image"],
                      tuple(meta["input_size"]), tuple(tuple(v) for v in meta["rf"]), patches, meta["n_images"],
                      [tuple(s) for s in meta["skipped"]], meta["cancelled"], meta["seconds"], meta["source"])


def merge(results: Sequence[TopPatches]) -> TopPatches:
    """Merge results over disjoint parts of one collection (shards) into the result of one run."""
    if not results:
        raise InputError("nothing to merge")
    first = results[0]
    for r in results[1:]:
        if r.params() != first.params():
            raise InputError(f"cannot merge results of different scans: {r.params()} vs {first.params()}")
    patches = {}
    for c in first.channels:
        allp = [p for r in results for p in r.patches.get(c, [])]
        seen = {(p.image_index, p.unit) for p in allp}
        if len(seen) != len(allp):
            raise InputError("the results overlap (the same image scanned twice)")
        patches[c] = sorted(allp, key=Patch.key)[:first.k]
    return TopPatches(first.layer, first.call_index, list(first.channels), first.k, first.per_image,
                      first.input_size, first.rf, patches, sum(r.n_images for r in results),
                      [s for r in results for s in r.skipped], any(r.cancelled for r in results),
                      sum(r.seconds for r in results), " + ".join(r.source for r in results))


# ---------------------------------------------------------------------------------------------------------
# The scan

def _candidates(a: torch.Tensor, per_image: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, h, w) → values and flat positions (B, C, m), best first; ties → lower position first."""
    flat = a.flatten(2)
    if per_image == 1:
        v, idx = flat.max(2)  # first maximal index on ties (documented by torch for CPU and CUDA)
        return v[..., None], idx[..., None]
    v, idx = torch.sort(flat, dim=2, descending=True, stable=True)
    m = min(per_image, flat.shape[2])
    return v[..., :m], idx[..., :m]


def scan(handle, images, layer: str, channels: Sequence[int] | None = None, k: int = 9, per_image: int = 1,
         batch_size: int = 16, call_index: int = -1, progress: Callable[[int, int | None], Any] | None = None,
         cancel: Callable[[], bool] | threading.Event | None = None, table: RFTable | None = None) -> TopPatches:
    """Top-k patches of ``layer`` for ``channels`` (default: all) over ``images``.

    ``images``: an ImageCollection (global indices, lazily decoded, bad files skipped) or any iterable of
    PIL images or (name, image) pairs. ``progress(done, total)`` is called after every batch (total None if
    unknown); ``cancel`` (a callable returning True, or a threading.Event) stops after the current batch, and
    the result so far is returned with ``cancelled=True``.
    """
    t0 = time.perf_counter()
    pre = handle.preprocess
    get_module(handle.net, layer)  # a wrong layer name fails here, before any image is read
    if table is None:
        try:
            table = rf_table(handle)
        except NotImplementedError:  # e.g. upsampling layers: no box geometry, patches are whole images
            table = None
    total = len(images) if hasattr(images, "__len__") else None
    heaps: dict[int, list[tuple]] = {}
    # Viewed images still referenced by some heap entry, shared between channels; patches are cut from them
    # at the end. Memory: at most min(k × channels, collection) images, released as they fall out of every heap.
    store: dict[int, np.ndarray] = {}
    refs: dict[int, int] = {}
    n_images, cancelled = 0, False
    n_calls: int | None = None
    ch_idx: torch.Tensor | None = None
    share = False
    chans: list[int] = []
    row = None
    device = device_of(handle)
    limit = max(1, int(batch_size))  # images per forward pass; lowered for good after an out-of-memory retry

    def forward(x: torch.Tensor) -> torch.Tensor:
        # A negative call_index needs one whole pass to count the layer's calls; every later pass (and every pass
        # for call_index >= 0) stops once the wanted call has run: the rest of the network is not needed.
        nonlocal n_calls
        with capture(handle, layer, call_index if n_calls is None else call_index % n_calls, stop=True) as cap:
            cap.run(x)
        a = cap.output
        if n_calls is None:
            n_calls = cap.n_calls
        return a

    def candidates(batch: list[tuple[int, str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, int]:
        """(values, flat positions) of the best cells per image and channel (B, C', m) as CPU numpy, and the
        map width; sets up the channels, heaps and field geometry on the first batch."""
        nonlocal ch_idx, chans, row, share
        u8 = torch.from_numpy(np.stack([b[2] for b in batch])).permute(0, 3, 1, 2).to(device).contiguous()
        x = pre.normalize(u8.float() / 255.0)  # contiguous NCHW, as ModelHandle.input_tensor gives
        a = forward(x)
        if a.dim() != 4:
            raise InputError(f"layer {layer!r} output has shape {tuple(a.shape)}; top patches need a spatial map")
        if ch_idx is None:
            chans = list(range(a.shape[1])) if channels is None else [int(c) for c in channels]
            bad = [c for c in chans if not 0 <= c < a.shape[1]]
            if bad:
                raise InputError(f"channels {bad} out of range 0..{a.shape[1] - 1}")
            ch_idx = torch.tensor(chans, dtype=torch.long, device=device)
            if table is not None:
                row = table.row(layer, call_index % n_calls)
            else:
                H, W = handle.input_size
                row = RFRow(layer, 0, "", "unknown", (1, 1), (1, 1), (0, 0), (1, 1), (H, W), (0, 0), (0, 0),
                            (int(a.shape[2]), int(a.shape[3])), int(a.shape[1]))
            H, W = handle.input_size
            share = 4 * row.r[0] * row.r[1] >= H * W  # big fields: keep whole images once, not a crop per entry
            for c in chans:
                heaps[c] = []
        w = a.shape[3]
        sel = a if len(chans) == a.shape[1] and chans == list(range(a.shape[1])) else a.index_select(1, ch_idx)
        vals, pos = _candidates(sel.float(), per_image)  # (B, C', m)
        return to_numpy(vals), to_numpy(pos), int(w)

    def flush(batch: list[tuple[int, str, np.ndarray]]) -> None:
        nonlocal limit
        parts: list[tuple[np.ndarray, np.ndarray, int]] = []
        asked = min(limit, len(batch))
        used = run_chunks(len(batch), asked, lambda s, e: parts.append(candidates(batch[s:e])),
                          device=device, what=f"the top-patch scan of {layer}",
                          hint="a smaller batch size, fewer channels or the CPU")
        if used < asked:  # it ran out of memory: keep the smaller batch for the rest of the scan
            limit = used
        vals_np = np.concatenate([p[0] for p in parts])
        pos_np = np.concatenate([p[1] for p in parts])
        w = parts[0][2]
        # Entries that cannot enter a full heap are dropped in bulk; the rest go through heapq one by one.
        thresh = np.array([heaps[c][0][0] if len(heaps[c]) >= k else -np.inf for c in chans], dtype=np.float64)
        for b, ci, mi in zip(*np.nonzero(vals_np >= thresh[None, :, None])):
            c = chans[ci]
            gidx, name, arr = batch[b]
            v, p = float(vals_np[b, ci, mi]), int(pos_np[b, ci, mi])
            key = (v, -gidx, -(p // w), -(p % w))  # min-heap: heap[0] is the worst kept
            h = heaps[c]
            if len(h) >= k and key <= h[0][:4]:
                continue
            if share:
                crop = None
                if gidx not in store:
                    store[gidx] = arr
                refs[gidx] = refs.get(gidx, 0) + 1
            else:
                box = _clip(row.box((p // w, p % w)), arr.shape[0], arr.shape[1])
                crop = arr[box[0]:box[2], box[1]:box[3]].copy()
            item = key + (name, crop)
            if len(h) >= k:
                old = heapq.heapreplace(h, item)
                if share:
                    _release(old[1])
            else:
                heapq.heappush(h, item)

    def _release(neg_gidx: int) -> None:
        g = -neg_gidx
        refs[g] -= 1
        if not refs[g]:
            del refs[g], store[g]

    skipped0 = len(getattr(images, "skipped", []))

    def done() -> int:  # images dealt with, skipped ones included, so a progress bar reaches its end
        return n_images + len(getattr(images, "skipped", [])) - skipped0

    # Batch b holds the images with index in [b·batch_size, (b+1)·batch_size): batches are fixed by position,
    # not by how many images decoded, so a shard (whole batches) computes each image exactly as one run does.
    batch: list[tuple[int, str, np.ndarray]] = []
    for gidx, name, img in iter_images(images):
        if batch and gidx // batch_size != batch[0][0] // batch_size:
            flush(batch)
            n_images += len(batch)
            batch = []
            if progress is not None:
                progress(done(), total)
            if _cancelled(cancel):
                cancelled = True
                break
        batch.append((gidx, name, np.asarray(pre.view(img), dtype=np.uint8)))
    if batch and not cancelled:
        flush(batch)
        n_images += len(batch)
        if progress is not None:
            progress(done(), total)
    patches = {}
    for c in chans:
        out = []
        for v, ng, ni, nj, name, crop in sorted(heaps[c], key=lambda e: (-e[0], -e[1], -e[2], -e[3])):
            unit = (-ni, -nj)
            box = _clip(row.box(unit), *handle.input_size)
            if crop is None:
                crop = store[-ng][box[0]:box[2], box[1]:box[3]]
            out.append(Patch(c, v, -ng, name, unit, box, crop))
        patches[c] = out
    rf = (row.r, row.S, row.P) if row is not None else ((0, 0), (0, 0), (0, 0))
    return TopPatches(layer, call_index, chans if chans else list(channels or []), k, per_image, handle.input_size,
                      rf, patches, n_images, list(getattr(images, "skipped", [])), cancelled,
                      time.perf_counter() - t0, getattr(images, "source", ""))


def _clip(box: tuple[int, int, int, int], H: int, W: int) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = box
    return (max(y0, 0), max(x0, 0), min(y1, H), min(x1, W))


def padded_patch(p: Patch, rf: tuple, input_size: tuple[int, int], fill: int = 255) -> np.ndarray:
    """The patch placed in a full r×r canvas where it lies in the unit's field (parts outside the image
    filled with ``fill``), so patches of one channel line up as in Zeiler & Fergus' figures."""
    (rh, rw), (sh, sw), (ph, pw) = rf
    y0 = p.unit[0] * sh - ph
    x0 = p.unit[1] * sw - pw
    out = np.full((rh, rw, 3), fill, dtype=np.uint8)
    by, bx = p.box[0] - y0, p.box[1] - x0
    out[by:by + p.patch.shape[0], bx:bx + p.patch.shape[1]] = p.patch
    return out
