"""Linear CKA (Kornblith et al. 2019) between every layer of model A and every layer of model B over a collection:
the layer-to-layer similarity map of two networks.

Features: each layer's output is **averaged over its spatial positions**, one C-vector per image (a vector output
is taken as it is). Two models may see different input sizes (64² classroom CNN, 224² EfficientNet-Lite0) and
their layers have different grids, so flattened maps would be incomparable in size and tied to resolution; the
averaged channels are one vector per image whatever the grid, and the images of the collection are the examples.
What this leaves out: *where* in the image a channel fires (two layers that respond to the same things in
different places look alike).

Streaming and mergeable: a ``CKAState`` holds, in float64, the image count, the feature means and the centred
co-moment matrices (every layer with itself, every A layer with every B layer). A batch is added with ``update``;
two states (batches, shards) combine exactly with the pairwise update of Chan et al. (1979), so splitting a
collection into batches or shards gives the one-shot value up to float64 rounding, and memory does not grow with
the collection. Means are removed before products are summed, so features with a large common offset (averaged
ReLU outputs) lose no precision. Linear CKA is then

    CKA(X, Y) = ||Yᶜᵀ Xᶜ||²_F / (||Xᶜᵀ Xᶜ||_F ||Yᶜᵀ Yᶜ||_F)          (Xᶜ, Yᶜ: column-centred features)

(the 1/(n−1) factors of the covariances cancel). A layer whose features are constant over the collection has no
CKA (NaN). With few images and many channels linear CKA is biased upwards (Nguyen et al. 2021 give a debiased
minibatch estimator); the page says how many images a map rests on.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from interpret.core.errors import InputError
from interpret.core.hooks import hooked
from interpret.core.layers import get_module
from interpret.core.tensors import on_device
from interpret.units.layer_catalog import list_layers
from models.collections import ImageCollection, builtin_collections, iter_images
from models.handle import ModelHandle
from models.registry import load_model

# Entries of the A×B cross co-moment matrix (float64): 2**24 is 128 MiB. Beyond it the user picks fewer layers.
MAX_PAIR_ENTRIES = 2 ** 24
DEFAULT_MAX_LAYERS = 12


def _centre(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two feature matrices with the same rows (examples): n×p and n×q, one-shot, float64."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise InputError(f"CKA needs two n×p matrices with the same n, got {x.shape} and {y.shape}")
    xc, yc = _centre(x), _centre(y)
    den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(np.linalg.norm(yc.T @ xc) ** 2 / den) if den > 0 else float("nan")


def _blocks(sizes: Sequence[int]) -> list[slice]:
    ends = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


@dataclass
class CKAState:
    """Sufficient statistics of linear CKA between the layers of A (channel counts ``sizes_a``) and of B, over the
    images seen so far. Features arrive as rows of the layers' channels side by side (n × ΣC)."""

    sizes_a: tuple[int, ...]
    sizes_b: tuple[int, ...]
    n: int = 0
    mean_a: np.ndarray = field(default=None, repr=False)
    mean_b: np.ndarray = field(default=None, repr=False)
    m_aa: list[np.ndarray] = field(default=None, repr=False)  # per A layer: Σ (a − ā)(a − ā)ᵀ
    m_bb: list[np.ndarray] = field(default=None, repr=False)
    m_ab: np.ndarray = field(default=None, repr=False)  # ΣC_A × ΣC_B: Σ (a − ā)(b − b̄)ᵀ

    def __post_init__(self) -> None:
        self.sizes_a, self.sizes_b = tuple(int(c) for c in self.sizes_a), tuple(int(c) for c in self.sizes_b)
        da, db = sum(self.sizes_a), sum(self.sizes_b)
        if da * db > MAX_PAIR_ENTRIES:
            raise InputError(f"{da} channels of model A × {db} of model B is too much to compare at once (at most "
                             f"{MAX_PAIR_ENTRIES:,} channel pairs): choose fewer or smaller layers")
        if self.mean_a is None:
            self.mean_a, self.mean_b = np.zeros(da), np.zeros(db)
            self.m_aa = [np.zeros((c, c)) for c in self.sizes_a]
            self.m_bb = [np.zeros((c, c)) for c in self.sizes_b]
            self.m_ab = np.zeros((da, db))

    def _empty(self) -> "CKAState":
        return CKAState(self.sizes_a, self.sizes_b)

    @classmethod
    def of_batch(cls, sizes_a: Sequence[int], sizes_b: Sequence[int], fa: np.ndarray, fb: np.ndarray) -> "CKAState":
        """The state of one batch of features (rows = images)."""
        fa, fb = np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64)
        st = cls(sizes_a, sizes_b)
        if fa.shape != (fa.shape[0], len(st.mean_a)) or fb.shape != (fa.shape[0], len(st.mean_b)):
            raise InputError(f"features {fa.shape} / {fb.shape} do not match the layers' channels "
                             f"{len(st.mean_a)} / {len(st.mean_b)}")
        if fa.shape[0] == 0:
            return st
        st.n = fa.shape[0]
        st.mean_a, st.mean_b = fa.mean(0), fb.mean(0)
        ca, cb = fa - st.mean_a, fb - st.mean_b
        st.m_aa = [ca[:, s].T @ ca[:, s] for s in _blocks(st.sizes_a)]
        st.m_bb = [cb[:, s].T @ cb[:, s] for s in _blocks(st.sizes_b)]
        st.m_ab = ca.T @ cb
        return st

    def update(self, fa: np.ndarray, fb: np.ndarray) -> "CKAState":
        """Add a batch of features (in place); returns self."""
        return self._absorb(CKAState.of_batch(self.sizes_a, self.sizes_b, fa, fb))

    def _absorb(self, o: "CKAState") -> "CKAState":
        if (o.sizes_a, o.sizes_b) != (self.sizes_a, self.sizes_b):
            raise InputError("CKA states of different layers cannot be merged")
        if o.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean_a, self.mean_b = o.n, o.mean_a.copy(), o.mean_b.copy()
            self.m_aa, self.m_bb, self.m_ab = [m.copy() for m in o.m_aa], [m.copy() for m in o.m_bb], o.m_ab.copy()
            return self
        n1, n2 = self.n, o.n
        n = n1 + n2
        da, db = o.mean_a - self.mean_a, o.mean_b - self.mean_b
        w = n1 * n2 / n
        for s, m, mo in zip(_blocks(self.sizes_a), self.m_aa, o.m_aa):
            m += mo + w * np.outer(da[s], da[s])
        for s, m, mo in zip(_blocks(self.sizes_b), self.m_bb, o.m_bb):
            m += mo + w * np.outer(db[s], db[s])
        self.m_ab += o.m_ab + w * np.outer(da, db)
        self.mean_a += da * (n2 / n)
        self.mean_b += db * (n2 / n)
        self.n = n
        return self

    @staticmethod
    def merge(parts: Sequence["CKAState"]) -> "CKAState":
        """Parts (batches or shards, any order) → the state of all their images, exactly (a new state)."""
        if not parts:
            raise InputError("nothing to merge")
        out = parts[0]._empty()
        for p in parts:
            out._absorb(p)
        return out

    def matrix(self) -> np.ndarray:
        """CKA of every A layer (rows) with every B layer (columns); NaN where a layer is constant."""
        na = np.array([np.linalg.norm(m) for m in self.m_aa])
        nb = np.array([np.linalg.norm(m) for m in self.m_bb])
        out = np.full((len(self.sizes_a), len(self.sizes_b)), np.nan)
        for i, si in enumerate(_blocks(self.sizes_a)):
            for j, sj in enumerate(_blocks(self.sizes_b)):
                den = na[i] * nb[j]
                if self.n >= 2 and den > 0:
                    out[i, j] = np.linalg.norm(self.m_ab[si, sj]) ** 2 / den
        return out


@dataclass
class CKAResult:
    """Linear CKA between layers of two models over ``n_images`` images: ``matrix[i, j]`` for A's layer i and B's
    layer j, on spatially averaged channels."""

    matrix: np.ndarray
    layers_a: list[str]
    layers_b: list[str]
    channels_a: list[int]
    channels_b: list[int]
    model_a: str
    model_b: str
    n_images: int
    source: str = ""
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False

    def best_match(self) -> list[tuple[str, str, float]]:
        """For each layer of A, the layer of B most similar to it, and their CKA (NaN rows skipped)."""
        out = []
        for i, la in enumerate(self.layers_a):
            row = self.matrix[i]
            if np.isfinite(row).any():
                j = int(np.nanargmax(row))
                out.append((la, self.layers_b[j], float(row[j])))
        return out


def default_layers(handle: ModelHandle, max_layers: int = DEFAULT_MAX_LAYERS) -> list[str]:
    """Up to ``max_layers`` layers spread evenly over the network, first and last included: its activation
    modules (the output of each conv block), else its convolutions."""
    names = [l.name for l in list_layers(handle.net, ("act",))] or [l.name for l in list_layers(handle.net, ("conv",))]
    if not names:
        raise InputError(f"{handle.name} has no activation or convolution layer to compare")
    if len(names) <= max_layers:
        return names
    idx = np.unique(np.round(np.linspace(0, len(names) - 1, max_layers)).astype(int))
    return [names[i] for i in idx]


def pooled_features(handle: ModelHandle, x: torch.Tensor, layers: Sequence[str]) -> list[np.ndarray]:
    """Per layer, its output on the batch ``x`` (normalized, N×3×H×W) averaged over space: N×C float64. A module
    called several times gives its last call's output (as the activation views do)."""
    mods = [get_module(handle.net, name) for name in layers]  # InputError listing valid names first
    seen: dict[int, torch.Tensor] = {}
    with hooked(handle) as hs, torch.inference_mode():
        for k, m in enumerate(mods):
            def keep(module, inputs, out, k=k):
                if torch.is_tensor(out):
                    seen[k] = out.float().mean(dim=tuple(range(2, out.dim()))) if out.dim() > 2 else out.float()
            hs.forward(m, keep)
        handle.net(on_device(handle, x))
    missing = [layers[k] for k in range(len(layers)) if k not in seen]
    if missing:
        raise InputError(f"layer(s) {', '.join(missing)} of {handle.name} give no tensor in the forward pass")
    return [seen[k].detach().cpu().to(torch.float64).numpy() for k in range(len(layers))]


def _batches(images, batch_size: int) -> Iterable[list[tuple[int, str, object]]]:
    batch = []
    for item in iter_images(images):
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def cka_scan(handle_a: ModelHandle, handle_b: ModelHandle, images, layers_a: Sequence[str] | None = None,
             layers_b: Sequence[str] | None = None, batch_size: int = 16,
             progress: Callable[[int, int | None], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> CKAResult:
    """Linear CKA between ``layers_a`` of A and ``layers_b`` of B (default: ``default_layers``) over ``images``
    (an ImageCollection or any iterable ``iter_images`` takes), each model fed with its own preprocessing and
    input size. Streams batch by batch; ``progress(done, total)`` after each batch; ``cancel()`` stops early
    (the result then covers the images seen and says so). The same handle twice runs one forward pass per batch."""
    t0 = time.perf_counter()
    layers_a = list(layers_a) if layers_a else default_layers(handle_a)
    layers_b = list(layers_b) if layers_b else default_layers(handle_b)
    if batch_size < 1:
        raise InputError("batch size must be at least 1")
    total = len(images) if hasattr(images, "__len__") else None
    same = handle_a is handle_b and layers_a == layers_b
    state: CKAState | None = None
    done, cancelled = 0, False
    for batch in _batches(images, batch_size):
        if cancel is not None and cancel():
            cancelled = True
            break
        imgs = [img for _, _, img in batch]
        xa = torch.stack([handle_a.preprocess(im) for im in imgs])
        fa = pooled_features(handle_a, xa, layers_a)
        if same:
            fb = fa
        else:
            xb = torch.stack([handle_b.preprocess(im) for im in imgs])
            fb = pooled_features(handle_b, xb, layers_b)
        if state is None:
            state = CKAState([f.shape[1] for f in fa], [f.shape[1] for f in fb])
        state.update(np.concatenate(fa, axis=1), np.concatenate(fb, axis=1))
        done += len(batch)
        if progress is not None:
            progress(done, total)
    skipped = list(getattr(images, "skipped", []))
    if state is None or state.n < 2:
        raise InputError(f"CKA needs at least 2 readable images; the collection gave {0 if state is None else state.n}")
    return CKAResult(state.matrix(), layers_a, layers_b, list(state.sizes_a), list(state.sizes_b), handle_a.name,
                     handle_b.name, state.n, str(getattr(images, "source", "")), time.perf_counter() - t0, skipped,
                     cancelled)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m interpret.evaluation.cka MODEL_A MODEL_B [--collection KEY]``: the CKA matrix of two models over
    a built-in collection (default: the classroom shapes for a classroom model, else scikit-image's photos), its
    diagonal when both have the same layers, and the wall time of the scan."""
    ap = argparse.ArgumentParser(prog="python -m interpret.evaluation.cka", description=main.__doc__)
    ap.add_argument("model_a")
    ap.add_argument("model_b")
    ap.add_argument("--collection", default=None, help="classroom_shapes or skimage_photos")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    a, b = load_model(args.model_a), load_model(args.model_b)
    key = args.collection or ("classroom_shapes" if "classroom" in (a.family, b.family) else "skimage_photos")
    bc = builtin_collections()[key]
    images = ImageCollection([(k, n) for k, n in enumerate(bc.names)], bc.load, bc.title)
    res = cka_scan(a, b, images, batch_size=args.batch_size)
    print(f"linear CKA, {a.name} (rows) vs {b.name} (columns), {res.n_images} images of {bc.title}, "
          f"spatially averaged channels; {res.seconds:.1f} s (batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads)")
    width = max(len(n) for n in res.layers_a)
    print(" " * width + "  " + " ".join(f"{j:>6d}" for j in range(len(res.layers_b))))
    for name, row in zip(res.layers_a, res.matrix):
        print(f"{name:<{width}}  " + " ".join(f"{v:6.3f}" for v in row))
    print("columns: " + ", ".join(f"{j}={n}" for j, n in enumerate(res.layers_b)))
    if res.layers_a == res.layers_b:
        d = np.diag(res.matrix)
        print("diagonal: " + " ".join(f"{v:.3f}" for v in d) + f"  (mean {np.nanmean(d):.3f})")


if __name__ == "__main__":
    main()
