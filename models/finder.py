""""Which architecture is this?": the architectures whose every key and every shape fit a state dict exactly.

Candidates are found by a signature of the file's key names (sorted, hashed; ``num_batches_tracked`` left out,
since files exported elsewhere often drop it and loading fills it in), looked up in the stored index
(``models/arch_index.json``), then verified by building each candidate on the ``meta`` device with the file's
class count and comparing every shape. When the installed timm/torchvision differ from the index's stamp, every
architecture is built once instead (a few minutes; kept for the rest of the process).

Rebuild the index after upgrading timm or torchvision: ``python -m models.finder --build-index``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torchvision.models as tvm

from .architectures import (INDEX_PATH, SOURCES, TIMM_PREFIX, TRAINING_HEADS, CheckpointError, _lite_variants,
                            _meta, _spec_unchecked, _timm, catalog, classifier_of, conv_verdict,
                            drop_training_heads, stored_index, versions)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Fit:
    """An architecture that takes the file as it is: ``key`` goes to ``load_user_model``."""

    key: str
    display: str
    source: str
    num_classes: int


def signature(keys: Iterable[str]) -> str:
    """A short hash of the sorted key names, ``num_batches_tracked`` left out."""
    names = sorted(k for k in keys if not k.endswith("num_batches_tracked"))
    return hashlib.sha1("\n".join(names).encode("utf-8")).hexdigest()[:16]


# ---- layouts of every architecture ----------------------------------------------------------------------------

def all_keys() -> list[str]:
    """Every architecture key (packaged, torchvision, timm), CNN or not."""
    try:
        timm_keys = [TIMM_PREFIX + n for n in _timm().list_models()]
    except CheckpointError:  # timm not installed: torchvision and packaged only
        timm_keys = []
    return [*_lite_variants()] + list(tvm.list_models(module=tvm)) + timm_keys


def layout_entry(key: str) -> dict:
    """{"sig", "cls", "cnn", "why"} of one architecture, by building it on ``meta``."""
    spec = _spec_unchecked(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net7 = _meta(spec, 7)
        cls = classifier_of(net7, None, spec.display, spec)
    ok, why = conv_verdict(net7)
    entry = {"sig": signature(net7.state_dict()), "cls": cls, "cnn": ok}
    if not ok:
        entry["why"] = why
    return entry


_built: dict[str, dict] = {}
_built_lock = threading.Lock()


def _layouts(progress: Progress | None) -> dict[str, dict]:
    """{key: entry} for every architecture: the stored index (+ the packaged, always built), or all built."""
    idx = stored_index()
    if idx is not None:
        return {**idx, **{k: _cached_entry(k) for k in _lite_variants()}}
    keys = all_keys()
    out: dict[str, dict] = {}
    for i, key in enumerate(keys):
        try:
            out[key] = _cached_entry(key)
        except Exception:  # noqa: BLE001 - an architecture that cannot be built is simply no candidate
            pass
        if progress:
            progress(i + 1, len(keys) + 1)
    return out


def _cached_entry(key: str) -> dict:
    with _built_lock:
        if key not in _built:
            _built[key] = layout_entry(key)
        return _built[key]


# ---- the finder -------------------------------------------------------------------------------------------------

def _fits(key: str, state: Mapping[str, torch.Tensor], entry: dict) -> int | None:
    """The class count when ``key`` takes ``state`` exactly (every key, every shape), else None."""
    state = drop_training_heads(key, state)
    cls = entry["cls"]
    if cls not in state or state[cls].dim() < 1 or state[cls].shape[0] < 1:
        return None
    n = int(state[cls].shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _meta(_spec_unchecked(key), n).state_dict()
    for k, v in ref.items():
        if k not in state:
            if not k.endswith("num_batches_tracked"):
                return None
        elif tuple(state[k].shape) != tuple(v.shape):
            return None
    return n if all(k in ref for k in state) else None


def _rank(fit: Fit) -> tuple:
    name = fit.key[len(TIMM_PREFIX):] if fit.source == "timm" else fit.key
    return (SOURCES.index(fit.source), len(name), name)


def find_architectures(state: Mapping[str, torch.Tensor], progress: Progress | None = None) -> list[Fit]:
    """The CNN architectures that take ``state`` exactly, with its class count, best first (packaged, then
    torchvision, then timm; shorter names first). Several fit when their layouts are identical (torchvision's
    and timm's ResNet-18, timm's ``efficientnet_b0`` and ``tf_efficientnet_b0``): their key names and shapes
    agree, though their forward passes may differ in padding or normalisation constants.

    Raises CheckpointError when the only fits are networks without sliding convolutions (a ViT file)."""
    layouts = _layouts(progress)
    sigs = {signature(state)} | {signature(drop_training_heads(k, state)) for k in TRAINING_HEADS}
    cands = [k for k, e in layouts.items() if e["sig"] in sigs]
    fits: list[Fit] = []
    refused: list[tuple[str, str]] = []
    cat = catalog()
    stale = stored_index() is None  # then progress already counted the builds: one step is left for this
    for i, key in enumerate(cands):
        entry = layouts[key]
        n = _fits(key, state, entry)
        if n is not None:
            if entry["cnn"]:
                spec = cat.get(key) or _spec_unchecked(key)
                fits.append(Fit(spec.key, spec.display, spec.source, n))
            else:
                refused.append((key, entry.get("why", "")))
        if progress and not stale:
            progress(i + 1, len(cands))
    if progress:
        progress(1, 1)
    if not fits and refused:
        key, why = sorted(refused, key=lambda kw: len(kw[0]))[0]
        raise CheckpointError(f"The file fits {key.removeprefix(TIMM_PREFIX)}, which is refused: {why}")
    return sorted(fits, key=_rank)


# ---- building the index -----------------------------------------------------------------------------------------

def build_index(progress: Progress | None = None) -> dict:
    """The index of every torchvision and timm architecture (packaged ones are always built at run time)."""
    keys = [k for k in all_keys() if k not in _lite_variants()]
    archs: dict[str, dict] = {}
    failed: list[str] = []
    for i, key in enumerate(keys):
        try:
            archs[key] = layout_entry(key)
        except Exception as e:  # noqa: BLE001 - recorded and reported, not fatal
            failed.append(f"{key}: {type(e).__name__}: {e}"[:200])
        if progress:
            progress(i + 1, len(keys))
    return {"versions": versions(), "made": time.strftime("%Y-%m-%d"), "failed": failed, "archs": archs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.finder", description=__doc__.splitlines()[0])
    ap.add_argument("--build-index", action="store_true", help=f"rebuild {INDEX_PATH.name} for the installed "
                    "timm/torchvision")
    args = ap.parse_args(argv)
    if not args.build_index:
        ap.print_help()
        return 2
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    def report(done: int, total: int) -> None:
        if done % 100 == 0 or done == total:
            print(f"{done}/{total} built, {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    data = build_index(report)
    INDEX_PATH.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    n_cnn = sum(e["cnn"] for e in data["archs"].values())
    print(f"wrote {INDEX_PATH}: {len(data['archs'])} architectures ({n_cnn} CNNs), {len(data['failed'])} failed, "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
