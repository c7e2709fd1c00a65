"""Which map to believe for this image: one summary per method of faithfulness (deletion / insertion AUC against
random pixel orders), agreement between methods (Spearman ρ) and stability under small input changes that should
not change the explanation (horizontal flip, a small centre crop, a JPEG re-encode).

Everything is computed in the model's view of the image (``handle.preprocess.view``: resized and centre-cropped
to the input size), so a perturbed image goes straight to the network without a second resize, and a perturbed
map can be brought back onto the original map's pixel grid exactly (flip) or with the same resampling the image
got (crop). Maps are compared as deletion ranks them: the signed map, most positive first.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from models.handle import ModelHandle

from interpret.attribution.registry import explain
from interpret.core.errors import CnnLensError, InputError
from interpret.core.result import Attribution
from interpret.evaluation.metrics import deletion_insertion, spearman

DEFAULT_METHODS = ("saliency", "grad_x_input", "guided_backprop", "gradcam", "cam")
PERTURBATIONS = ("flip", "crop", "jpeg")
PERTURBATION_LABELS = {"flip": "horizontal flip", "crop": "centre crop", "jpeg": "JPEG re-encode"}

Explainer = Callable[[ModelHandle, torch.Tensor, int, str], Attribution]


def registry_explainer(handle: ModelHandle, x: torch.Tensor, target: int, method: str) -> Attribution:
    """A method of the registry with its default parameters."""
    return explain(handle, x, target, method)


@dataclass
class RandomBaseline:
    """Deletion and insertion AUC of uniformly random pixel orders, one per seed."""

    seeds: tuple[int, ...]
    auc_deletion: np.ndarray
    auc_insertion: np.ndarray

    @property
    def deletion_mean(self) -> float:
        return float(np.mean(self.auc_deletion))

    @property
    def deletion_std(self) -> float:
        return float(np.std(self.auc_deletion, ddof=1)) if len(self.seeds) > 1 else 0.0

    @property
    def insertion_mean(self) -> float:
        return float(np.mean(self.auc_insertion))

    @property
    def insertion_std(self) -> float:
        return float(np.std(self.auc_insertion, ddof=1)) if len(self.seeds) > 1 else 0.0


@dataclass
class MethodTrust:
    """One method's row. ``problem`` says why there are no numbers (map all zero, method not defined here);
    stability values are Spearman ρ of the perturbed map with the original (NaN: the perturbed map has no
    ranking)."""

    method: str
    signed: bool = False
    problem: str | None = None
    auc_deletion: float = float("nan")
    auc_insertion: float = float("nan")
    stability: dict[str, float] = field(default_factory=dict)
    stability_problems: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class TrustSummary:
    """The summary of ``methods`` for one image and class. ``agreement`` is the Spearman matrix between the
    maps of ``agreement_methods`` (the methods with a usable map), in that order."""

    target: int
    rows: list[MethodTrust]
    random: RandomBaseline
    agreement: np.ndarray
    agreement_methods: list[str]
    steps: int
    baseline: str
    crop: float
    jpeg_quality: int
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0

    def row(self, method: str) -> MethodTrust:
        return next(r for r in self.rows if r.method == method)

    def deletion_vs_random(self, method: str) -> float:
        """Method's deletion AUC / the random orders' mean (below 1: the map finds what matters faster)."""
        return _ratio(self.row(method).auc_deletion, self.random.deletion_mean)

    def insertion_vs_random(self, method: str) -> float:
        """Method's insertion AUC / the random orders' mean (above 1: better than random)."""
        return _ratio(self.row(method).auc_insertion, self.random.insertion_mean)

    def beats_random(self, method: str) -> tuple[bool, bool]:
        """(deletion AUC below every random order's, insertion AUC above every random order's)."""
        r = self.row(method)
        if not r.ok:
            return False, False
        return (bool(r.auc_deletion < self.random.auc_deletion.min()),
                bool(r.auc_insertion > self.random.auc_insertion.max()))


def _ratio(a: float, b: float) -> float:
    return float(a / b) if np.isfinite(a) and b > 0 else float("nan")


def map_problem(m: np.ndarray) -> str | None:
    """Why a map cannot rank pixels (all zero, constant, not finite), or None."""
    m = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        return "map has NaN or infinite values"
    if np.ptp(m) == 0:
        return "map is all zero" if not m.any() else "map is constant"
    return None


def random_map(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A map whose ranking is a uniformly random pixel order, reproducible from ``seed``."""
    return np.random.default_rng(seed).random(shape)


def to_input(handle: ModelHandle, view: Image.Image) -> torch.Tensor:
    """An image already at the model's view (input size) → normalized (1, 3, H, W), without resizing again."""
    pp = handle.preprocess
    return pp.normalize(pp.to_unit(view)).unsqueeze(0).to(handle.device)


def crop_box(size: tuple[int, int], crop: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centre crop keeping ``crop`` of each side (PIL's box convention)."""
    w, h = size
    cw, ch = max(1, int(round(crop * w))), max(1, int(round(crop * h)))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def perturb(view: Image.Image, kind: str, crop: float = 0.9, jpeg_quality: int = 75) -> Image.Image:
    """The view flipped left–right, centre-cropped and resized back (bilinear), or JPEG re-encoded."""
    if kind == "flip":
        return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if kind == "crop":
        return view.crop(crop_box(view.size, crop)).resize(view.size, Image.Resampling.BILINEAR)
    if kind == "jpeg":
        buf = io.BytesIO()
        view.save(buf, "JPEG", quality=int(jpeg_quality))
        buf.seek(0)
        return Image.open(buf).convert("RGB")
    raise InputError(f"unknown perturbation {kind!r}; choose from {', '.join(PERTURBATIONS)}")


def aligned(original: np.ndarray, perturbed: np.ndarray, kind: str, crop: float = 0.9
            ) -> tuple[np.ndarray, np.ndarray]:
    """The original map and the perturbed input's map on the same pixels: the flip undone; for the crop, the
    original's crop region and the perturbed map resized down to it with the resampling the image got."""
    if kind == "flip":
        return original, perturbed[:, ::-1]
    if kind == "crop":
        h, w = original.shape
        left, top, right, bottom = crop_box((w, h), crop)
        back = Image.fromarray(np.asarray(perturbed, dtype=np.float32), mode="F")
        back = np.asarray(back.resize((right - left, bottom - top), Image.Resampling.BILINEAR), dtype=np.float32)
        return original[top:bottom, left:right], back
    return original, perturbed


def trust_summary(handle: ModelHandle, image: Image.Image, target: int, methods: Sequence[str] = DEFAULT_METHODS,
                  *, steps: int = 16, baseline: str = "blur", seeds: Sequence[int] = (0, 1, 2),
                  perturbations: Sequence[str] = PERTURBATIONS, crop: float = 0.9, jpeg_quality: int = 75,
                  explainer: Explainer = registry_explainer, batch_size: int = 32,
                  progress: Callable[[float], None] | None = None) -> TrustSummary:
    """Faithfulness, agreement and stability of each method's map of ``target`` on ``image`` (a PIL image).

    Deletion/insertion (``metrics.deletion_insertion`` with ``steps`` and ``baseline``) is also run for one random
    pixel order per seed, the reference a map must beat. A method that is not defined for the network
    (``CnnLensError``, e.g. CAM without GAP + linear) or whose map is constant gets a row that says so.
    ``explainer(handle, x, target, method)`` makes the maps (default: the registry's defaults)."""
    t0 = time.perf_counter()
    if not methods:
        raise InputError("choose at least one method")
    if not seeds:
        raise InputError("the random baseline needs at least one seed")
    if not 0 < crop <= 1:
        raise InputError(f"crop must keep a fraction in (0, 1] of each side, not {crop}")
    for kind in perturbations:
        if kind not in PERTURBATIONS:
            raise InputError(f"unknown perturbation {kind!r}; choose from {', '.join(PERTURBATIONS)}")
    view = handle.preprocess.view(image)
    x = to_input(handle, view)
    h, w = x.shape[-2:]
    views = {k: to_input(handle, perturb(view, k, crop, jpeg_quality)) for k in perturbations}
    total = len(seeds) + len(methods) * (2 + len(perturbations))
    done = [0]

    def tick(n: int = 1) -> None:
        done[0] += n
        if progress is not None:
            progress(min(done[0] / total, 1.0))

    def sub(frac: float) -> None:  # progress inside one deletion/insertion run
        if progress is not None:
            progress(min((done[0] + frac) / total, 1.0))

    def di(m: np.ndarray):
        return deletion_insertion(handle, x, target, m, steps=steps, baseline=baseline, batch_size=batch_size,
                                  progress=sub)

    rand_del, rand_ins = [], []
    for s in seeds:
        r = di(random_map((h, w), int(s)))
        rand_del.append(r.auc_deletion)
        rand_ins.append(r.auc_insertion)
        tick()
    rows: list[MethodTrust] = []
    maps: dict[str, np.ndarray] = {}
    for method in methods:
        t1 = time.perf_counter()
        row = MethodTrust(method)
        rows.append(row)
        try:
            attr = explainer(handle, x, int(target), method)
        except CnnLensError as e:
            row.problem = str(e)
            tick(2 + len(perturbations))
            continue
        row.signed = bool(attr.signed)
        tick()
        row.problem = map_problem(attr.map)
        if row.problem is not None:
            tick(1 + len(perturbations))
            row.seconds = time.perf_counter() - t1
            continue
        maps[method] = attr.map
        r = di(attr.map)
        row.auc_deletion, row.auc_insertion = r.auc_deletion, r.auc_insertion
        tick()
        for kind, xp in views.items():
            mp = explainer(handle, xp, int(target), method).map
            a, b = aligned(attr.map, mp, kind, crop)
            why = map_problem(b)
            row.stability[kind] = float("nan") if why else spearman(a, b)
            if why:
                row.stability_problems[kind] = why
            tick()
        row.seconds = time.perf_counter() - t1
    names = list(maps)
    return TrustSummary(int(target), rows, RandomBaseline(tuple(int(s) for s in seeds), np.array(rand_del),
                                                          np.array(rand_ins)),
                        agreement_matrix([maps[n] for n in names]), names, int(steps), str(baseline), float(crop),
                        int(jpeg_quality), maps, time.perf_counter() - t0)


def agreement_matrix(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Spearman ρ between every pair of maps (symmetric, ones on the diagonal; NaN where a map is constant)."""
    n = len(maps)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = spearman(maps[i], maps[j])
    for i in range(n):
        if map_problem(maps[i]) is not None:
            out[i, i] = float("nan")
    return out


def summary_records(res: TrustSummary, labels: Mapping[str, str] | None = None) -> list[dict]:
    """The summary as plain rows for a table: AUCs, their ratio to random, the stability ρ, or the problem."""
    labels = labels or {}
    out = []
    for r in res.rows:
        rec: dict = {"method": labels.get(r.method, r.method)}
        if not r.ok:
            rec.update({"deletion AUC ↓": None, "× random (del.) ↓": None, "insertion AUC ↑": None,
                        "× random (ins.) ↑": None})
            rec.update({f"ρ {PERTURBATION_LABELS[k]}": None for k in PERTURBATIONS if k in _kinds(res)})
            rec["verdict"] = f"no numbers: {r.problem}"
            out.append(rec)
            continue
        d, i = res.beats_random(r.method)
        rec.update({"deletion AUC ↓": r.auc_deletion, "× random (del.) ↓": res.deletion_vs_random(r.method),
                    "insertion AUC ↑": r.auc_insertion, "× random (ins.) ↑": res.insertion_vs_random(r.method)})
        rec.update({f"ρ {PERTURBATION_LABELS[k]}": r.stability.get(k) for k in _kinds(res)})
        rec["verdict"] = ("beats random on both" if d and i else "beats random on deletion only" if d
                          else "beats random on insertion only" if i else "no better than random")
        out.append(rec)
    return out


def _kinds(res: TrustSummary) -> list[str]:
    seen: list[str] = []
    for r in res.rows:
        for k in r.stability:
            if k not in seen:
                seen.append(k)
    return [k for k in PERTURBATIONS if k in seen]
