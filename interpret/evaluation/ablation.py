"""Unit ablation: zero chosen channels of named layers for one call only, and measure what the network loses.

The shared network is never changed: the zeroing is a forward hook registered per call through
``interpret.core.hooks.hooked`` (under the model's lock, active only in the calling thread, removed in
``finally``). A layer is a module path (``interpret.core.layers.get_module``); a module that is called several
times in one forward pass has its units zeroed at every call.

The control for "these units matter" is as many *random* units of the same layers, drawn without replacement and
disjoint from the ablated set wherever the layer has enough other channels (``ControlStats.disjoint`` says when
it had not), over a few seeded draws.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from interpret.core.errors import InputError
from interpret.core.hooks import hooked
from interpret.core.layers import get_module
from interpret.core.tensors import on_device, to_numpy
from models.collections import CollectionError, from_folder
from models.handle import LabelError, label_index

Units = dict[str, list[int]]
Progress = Callable[[int, int], None]  # (done, total) images


def normalize_units(units: Mapping[str, Sequence[int]] | None) -> Units:
    """``units`` as {layer: sorted unique channel list}; InputError when nothing is chosen or a channel is not a
    non-negative integer."""
    if not units:
        raise InputError("choose at least one unit to ablate (a layer and one or more of its channels)")
    out: Units = {}
    for layer, chans in units.items():
        try:
            vals = sorted({int(c) for c in chans})
        except (TypeError, ValueError):
            raise InputError(f"units of layer {layer!r} must be channel numbers, got {list(chans)!r}") from None
        if any(v < 0 for v in vals):
            raise InputError(f"layer {layer!r}: channel numbers start at 0, got {[v for v in vals if v < 0]}")
        if vals:
            out[str(layer)] = vals
    if not out:
        raise InputError("choose at least one unit to ablate (a layer and one or more of its channels)")
    return out


def count_units(units: Mapping[str, Sequence[int]]) -> int:
    return sum(len(v) for v in units.values())


def _zero_hook(layer: str, idx: list[int], fired: set[str]):
    def hook(module, inputs, out):
        if not torch.is_tensor(out) or out.dim() < 2:
            raise InputError(f"layer {layer!r} does not output a (N, C, …) tensor; its units cannot be ablated")
        n_ch = out.shape[1]
        bad = [c for c in idx if c >= n_ch]
        if bad:
            raise InputError(f"layer {layer!r} has channels 0…{n_ch - 1}; no unit {bad}")
        fired.add(layer)
        # a new tensor with exact zeros: the module's own output (which may be a view others read) is untouched
        return out.index_fill(1, torch.tensor(idx, device=out.device), 0.0)
    return hook


@contextmanager
def ablated(handle, units: Mapping[str, Sequence[int]] | None) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Inside the block, ``run(x)`` is ``handle.net(x)`` (no gradients) with ``units`` ({layer: channels}) set to
    zero; ``units=None`` runs the intact network the same way (the baseline). The model's lock is held for the
    block and the hooks are removed on exit, also on error::

        with ablated(handle, {"features.20": [3, 17]}) as run:
            logits = run(x)
    """
    chosen = None if units is None else normalize_units(units)
    modules = {} if chosen is None else {layer: get_module(handle.net, layer) for layer in chosen}
    with hooked(handle) as hs:
        fired: set[str] = set()
        for layer, m in modules.items():
            hs.forward(m, _zero_hook(layer, chosen[layer], fired))

        def run(x: torch.Tensor) -> torch.Tensor:
            fired.clear()
            with torch.no_grad():
                out = handle.net(on_device(handle, x))
            missing = [layer for layer in modules if layer not in fired]
            if missing:
                raise InputError(f"layer(s) {missing} are not used in the forward pass; nothing was ablated there")
            return out

        yield run


def ablated_logits(handle, x: torch.Tensor, units: Mapping[str, Sequence[int]] | None) -> torch.Tensor:
    """The network's logits for ``x`` with ``units`` zeroed (None: intact)."""
    with ablated(handle, units) as run:
        return run(x)


def layer_channels(handle, layers: Sequence[str]) -> dict[str, int]:
    """Number of channels (dim 1 of the output) of each layer, from one forward pass on zeros."""
    mods = {layer: get_module(handle.net, layer) for layer in layers}
    seen: dict[str, int] = {}

    def rec(layer):
        def hook(module, inputs, out):
            if torch.is_tensor(out) and out.dim() >= 2:
                seen.setdefault(layer, int(out.shape[1]))
        return hook

    with hooked(handle) as hs:
        for layer, m in mods.items():
            hs.forward(m, rec(layer))
        p = next(handle.net.parameters(), None)
        probe = torch.zeros(1, 3, *handle.input_size, dtype=torch.float32 if p is None else p.dtype,
                            device=handle.device)
        with torch.no_grad():
            handle.net(on_device(handle, probe))
    missing = [layer for layer in layers if layer not in seen]
    if missing:
        raise InputError(f"layer(s) {missing} are not used in the forward pass or give no (N, C, …) tensor")
    return seen


def check_units(handle, units: Mapping[str, Sequence[int]]) -> Units:
    """``units`` normalized and checked against the network (layer exists, channels in range), else InputError."""
    chosen = normalize_units(units)
    n = layer_channels(handle, list(chosen))
    for layer, idx in chosen.items():
        bad = [c for c in idx if c >= n[layer]]
        if bad:
            raise InputError(f"layer {layer!r} has channels 0…{n[layer] - 1}; no unit {bad}")
    return chosen


# ---- inputs ------------------------------------------------------------------------------------------------------

def _batch(handle, images: Any, i0: int, i1: int) -> torch.Tensor:
    """Images ``i0:i1`` as a normalized input batch. ``images``: uint8 array (N, H, W, 3) at the model's input size
    (the classroom data), a normalized tensor (N, 3, H, W), or a sequence of PIL images (preprocessed)."""
    if isinstance(images, np.ndarray):
        x01 = torch.from_numpy(np.ascontiguousarray(images[i0:i1])).permute(0, 3, 1, 2).float() / 255
        return handle.preprocess.normalize(x01)
    if torch.is_tensor(images):
        return images[i0:i1]
    return torch.stack([handle.preprocess(img.convert("RGB")) for img in images[i0:i1]])


def _check_images(handle, images: Any, labels: Any) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(images)
    if n == 0:
        raise InputError("no images to measure the accuracy on")
    if len(labels) != n:
        raise InputError(f"{n} images but {len(labels)} labels")
    if isinstance(images, np.ndarray) and (images.ndim != 4 or images.shape[-1] != 3
                                           or tuple(images.shape[1:3]) != tuple(handle.input_size)):
        raise InputError(f"images must be (N, {handle.input_size[0]}, {handle.input_size[1]}, 3) uint8, got "
                         f"{images.shape}")
    if labels.min() < 0 or labels.max() >= handle.num_classes:
        raise InputError(f"labels must be class indices 0…{handle.num_classes - 1}")
    return labels


def predictions(handle, images: Any, units: Mapping[str, Sequence[int]] | None = None,
                progress: Progress | None = None, batch_size: int = 64, _done: int = 0,
                _total: int | None = None) -> np.ndarray:
    """Predicted class of every image with ``units`` zeroed (None: intact). The lock is taken per batch, so other
    sessions are not held up for a whole data set."""
    n = len(images)
    total = n if _total is None else _total
    out = np.empty(n, np.int64)
    for i0 in range(0, n, batch_size):
        i1 = min(n, i0 + batch_size)
        out[i0:i1] = to_numpy(ablated_logits(handle, _batch(handle, images, i0, i1), units).argmax(1))
        if progress is not None:
            progress(_done + i1, total)
    return out


def accuracy(handle, images: Any, labels: Any, units: Mapping[str, Sequence[int]] | None = None,
             progress: Progress | None = None, batch_size: int = 64) -> float:
    """Top-1 accuracy on (images, labels) with ``units`` ({layer: channels}) zeroed; ``units=None`` measures the
    intact network."""
    labels = _check_images(handle, images, labels)
    return float((predictions(handle, images, units, progress, batch_size) == labels).mean())


# ---- random control ----------------------------------------------------------------------------------------------

def random_units(units: Mapping[str, Sequence[int]], n_channels: Mapping[str, int],
                 rng: np.random.Generator) -> tuple[Units, bool]:
    """As many units per layer as ``units`` has, drawn without replacement from the layer's other channels
    (from all of them where fewer other channels exist than are needed); (draw, whether it is disjoint)."""
    draw: Units = {}
    disjoint = True
    for layer in sorted(units):
        k = len(units[layer])
        others = np.setdiff1d(np.arange(n_channels[layer]), np.asarray(units[layer], np.int64))
        pool = others if len(others) >= k else np.arange(n_channels[layer])
        disjoint &= len(others) >= k
        draw[layer] = sorted(int(c) for c in rng.choice(pool, size=k, replace=False))
    return draw, bool(disjoint)


@dataclass
class ControlStats:
    """Accuracies after ablating random units of the same layers, one per draw."""

    draws: list[float]
    disjoint: bool = True

    @property
    def mean(self) -> float:
        return float(np.mean(self.draws))

    @property
    def std(self) -> float:
        """Sample standard deviation over the draws (0 for a single draw)."""
        return float(np.std(self.draws, ddof=1)) if len(self.draws) > 1 else 0.0

    @property
    def min(self) -> float:
        return float(np.min(self.draws))

    @property
    def max(self) -> float:
        return float(np.max(self.draws))

    def to_dict(self) -> dict:
        return dict(mean=self.mean, std=self.std, min=self.min, max=self.max, draws=list(self.draws),
                    disjoint=self.disjoint)


# ---- one image ---------------------------------------------------------------------------------------------------

@dataclass
class PredictionChange:
    """Top-k classes of one image before and after the ablation, and the target's probability in both."""

    target: int
    target_label: str
    before: list[tuple[int, str, float]]
    after: list[tuple[int, str, float]]
    p_before: float
    p_after: float

    def to_dict(self) -> dict:
        return dict(target=self.target, target_label=self.target_label, before=self.before, after=self.after,
                    p_before=self.p_before, p_after=self.p_after)


def prediction_change(handle, image: Image.Image | torch.Tensor, units: Mapping[str, Sequence[int]],
                      target: int | None = None, k: int = 5) -> PredictionChange:
    """How ablating ``units`` changes the prediction for one image (PIL image or normalized (1, 3, H, W));
    ``target`` defaults to the intact network's top class."""
    x = image if torch.is_tensor(image) else handle.input_tensor(image)
    p0 = torch.softmax(ablated_logits(handle, x, None).double(), 1)[0]
    p1 = torch.softmax(ablated_logits(handle, x, units).double(), 1)[0]
    t = int(p0.argmax()) if target is None else int(target)
    if not 0 <= t < handle.num_classes:
        raise InputError(f"target class {t} out of range 0…{handle.num_classes - 1}")
    k = min(k, handle.num_classes)

    def top(p):
        v, i = p.topk(k)
        return [(int(c), handle.labels[int(c)], float(q)) for q, c in zip(v, i)]

    return PredictionChange(t, handle.labels[t], top(p0), top(p1), float(p0[t]), float(p1[t]))


# ---- the report --------------------------------------------------------------------------------------------------

@dataclass
class AblationReport:
    """Accuracies per data set: intact (``baseline``), with the units zeroed (``ablated``) and with as many random
    units of the same layers zeroed (``control``); the random draws themselves; optionally one image's change."""

    units: Units
    baseline: dict[str, float]
    ablated: dict[str, float]
    control: dict[str, ControlStats]
    control_units: list[Units]
    n_images: dict[str, int]
    seed: int
    prediction: PredictionChange | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def n_units(self) -> int:
        return count_units(self.units)

    def to_dict(self) -> dict:
        return dict(units=self.units, n_units=self.n_units, baseline=self.baseline, ablated=self.ablated,
                    control={k: v.to_dict() for k, v in self.control.items()}, control_units=self.control_units,
                    n_images=self.n_images, seed=self.seed, seconds=round(self.seconds, 2), notes=self.notes,
                    prediction=None if self.prediction is None else self.prediction.to_dict())


def _images_labels(ds: Any) -> tuple[Any, Any]:
    if hasattr(ds, "images") and hasattr(ds, "labels"):
        return ds.images, ds.labels
    images, labels = ds
    return images, labels


def ablation_report(handle, datasets: Mapping[str, Any], units: Mapping[str, Sequence[int]],
                    random_draws: int = 5, seed: int = 0, image: Image.Image | torch.Tensor | None = None,
                    target: int | None = None, progress: Progress | None = None,
                    batch_size: int = 64) -> AblationReport:
    """Accuracy on each data set ({name: Dataset with ``images``/``labels``, or (images, labels)}) intact, with
    ``units`` zeroed, and with ``random_draws`` seeded draws of as many random units of the same layers; plus the
    prediction change on ``image`` if given. ``progress(done, total)`` counts images over all passes."""
    t0 = time.perf_counter()
    chosen = check_units(handle, units)
    if random_draws < 0:
        raise InputError("the number of random draws cannot be negative")
    n_ch = layer_channels(handle, list(chosen))
    rng = np.random.default_rng(seed)
    draws = [random_units(chosen, n_ch, rng) for _ in range(random_draws)]
    data = {name: _images_labels(ds) for name, ds in datasets.items()}
    labels = {name: _check_images(handle, im, lab) for name, (im, lab) in data.items()}
    total = sum(len(im) for im, _ in data.values()) * (2 + random_draws)
    done = 0

    def acc(name, u):
        nonlocal done
        images = data[name][0]
        a = float((predictions(handle, images, u, progress, batch_size, done, total) == labels[name]).mean())
        done += len(images)
        return a

    base, abl, ctrl = {}, {}, {}
    for name in data:
        base[name] = acc(name, None)
        abl[name] = acc(name, chosen)
        ctrl[name] = ControlStats([acc(name, d) for d, _ in draws], all(ok for _, ok in draws))
    notes = []
    if draws and not all(ok for _, ok in draws):
        notes.append("some layer has fewer other channels than ablated ones: its random units were drawn from all "
                     "of its channels, so they overlap the ablated set")
    change = None if image is None else prediction_change(handle, image, chosen, target)
    return AblationReport(chosen, base, abl, ctrl, [d for d, _ in draws], {n: len(l) for n, l in labels.items()},
                          int(seed), change, time.perf_counter() - t0, notes)


def _class_of(handle, name: str) -> int | None:
    """The class a sub-folder names (a label, case-insensitive, "_" for spaces, or an index), else None."""
    for text in (name, name.replace("_", " ")):
        try:
            return label_index(handle, text)
        except LabelError:
            pass
    return None


def labelled_folder(handle, folder: str, max_files: int = 2000) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images of ``folder`` whose first sub-folder names their class (``cat/1.jpg``; a class name of the model,
    or its index): (images as the model sees them, uint8 (N, H, W, 3) at its input size; labels; skipped names
    with the reason). Only the model's view is kept — 150 kB an image at 224², whatever the photos' size — and it
    is exactly what preprocessing the photo gives. InputError when no image has a known class."""
    try:
        col = from_folder(folder, max_files=max_files)
    except CollectionError as e:
        raise InputError(str(e)) from None
    images, labels, skipped = [], [], []
    for _, name, img in col:
        cls = name.split("/")[0] if "/" in name else ""
        label = _class_of(handle, cls) if cls else None
        if label is None:
            skipped.append(f"{name}: sub-folder {cls!r} is no class of {handle.name}" if cls
                           else f"{name}: not in a class sub-folder")
            continue
        images.append(np.asarray(handle.preprocess.view(img), dtype=np.uint8))
        labels.append(label)
    skipped += [f"{n}: {why}" for n, why in col.skipped]
    if not images:
        raise InputError(f"no image in {folder} lies in a sub-folder named after one of the model's classes "
                         f"(e.g. {handle.labels[0]!r}/image.jpg)")
    return np.stack(images), np.asarray(labels, np.int64), skipped


def units_from_dissection(dissection: Any, concept: str, layers: Sequence[str] | None = None,
                          min_iou: float | None = None) -> Units:
    """"All detectors of ``concept``" in ``layers`` (default: every dissected layer) of a dissection result
    (``Dissection.layers[L].detectors(concept, min_iou)``); layers without detectors are left out."""
    layers = list(dissection.layers) if layers is None else list(layers)
    thr = dissection.iou_threshold if min_iou is None else float(min_iou)
    out: Units = {}
    for layer in layers:
        if layer not in dissection.layers:
            raise InputError(f"layer {layer!r} was not dissected; dissected: {list(dissection.layers)}")
        det = dissection.layers[layer].detectors(concept, thr)
        if det:
            out[layer] = sorted(int(u) for u in det)
    return out


# ---- figure ------------------------------------------------------------------------------------------------------

def accuracy_figure(report: AblationReport, title: str = "Accuracy after ablation") -> go.Figure:
    """Grouped bars per data set: intact, ablated, random control (mean ± std as error bar, every draw as a
    dot on the control's bar). Accuracies are unsigned: one fixed colour per condition, y from 0 to 100 %."""
    names = list(report.baseline)
    fig = go.Figure()

    def bars(group, label, values, colour, textposition="outside", **kw):
        fig.add_bar(name=label, x=names, y=[100 * v for v in values], marker_color=colour, offsetgroup=group,
                    textposition=textposition, insidetextanchor="start", insidetextfont=dict(color="white"),
                    text=[f"{100 * v:.1f} %" for v in values], cliponaxis=False,
                    hovertemplate="%{x}: %{y:.1f} %<extra>" + label + "</extra>", **kw)

    bars("intact", "intact", [report.baseline[n] for n in names], "rgb(90,90,90)")
    bars("ablated", f"{report.n_units} chosen units zeroed", [report.ablated[n] for n in names], "rgb(200,60,40)")
    if report.control_units:
        c = report.control
        bars("random", f"{report.n_units} random units zeroed (mean ± std, {len(report.control_units)} draws)",
             [c[n].mean for n in names], "rgb(60,110,200)", textposition="inside",
             error_y=dict(type="data", array=[100 * c[n].std for n in names], visible=True, thickness=2,
                          color="black"))
        fig.add_scatter(x=[n for n in names for _ in c[n].draws], y=[100 * a for n in names for a in c[n].draws],
                        mode="markers", name="random draws", offsetgroup="random",
                        marker=dict(color="white", size=8, line=dict(color="black", width=1.5)),
                        hovertemplate="%{x}: %{y:.1f} %<extra>random draw</extra>")
    fig.update_layout(barmode="group", scattermode="group", title=dict(text=title, font=dict(size=18)),
                      height=500, font=dict(size=16), legend=dict(orientation="h", y=-0.22, yanchor="top"),
                      margin=dict(t=70, b=120))
    fig.update_yaxes(title="accuracy (%)", range=[0, 112])
    fig.update_xaxes(title="data set")
    return fig
