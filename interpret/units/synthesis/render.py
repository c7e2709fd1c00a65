"""The optimisation loop: start from a seeded random image (``param``), transform it (``transforms``), run the
network with per-call hooks on the layers the objective reads (``objectives``), and take Adam steps on the image's
parameters to raise the objective; optional penalties (L2 towards grey, total variation) and a periodic blur.

Presets: ``quality`` is Lucent's ``render_vis`` recipe (512 steps of Adam at lr 0.05 on a 128² Fourier +
decorrelated image, sd 0.01, the standard transforms, upsampled to the model's input); ``quick`` keeps the recipe
with 64 steps so a class image takes seconds on a CPU.

The shared model is only read: the image parameters are the only tensor whose gradient is asked for
(``torch.autograd.grad``), parameters' ``.grad`` stay untouched, each step's forward and backward run under the
model's lock with hooks that only the calling thread sees, removed in ``finally``. The image lives on the model's
device; all random draws come from one seeded CPU ``torch.Generator``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping

import numpy as np
import torch

from interpret.core.errors import InputError
from interpret.core.hooks import hooked
from interpret.core.layers import get_module, pick_call
from interpret.core.runtime import cancelled as _cancelled
from interpret.core.tensors import device_of, to_numpy
from interpret.units.synthesis import transforms as T
from interpret.units.synthesis.objectives import Objective, Term
from interpret.units.synthesis.param import ImageParam
from models.handle import label_index

__all__ = ["Settings", "PRESETS", "preset", "Synthesis", "synthesize", "evaluate", "term_values", "MAX_BATCH"]

MAX_BATCH = 32  # the page offers up to 8; the benchmark optimises 20 classes at once


@dataclass(frozen=True)
class Settings:
    """Every switch of one optimisation (plain values, so a page or the CLI can build it)."""

    steps: int = 512
    size: int = 128  # side of the optimised image (before the resize to the model's input)
    batch: int = 1
    lr: float = 0.05
    param: str = "fourier"  # "fourier" | "pixel"
    decorrelate: bool = True
    decay_power: float = 1.0  # Fourier amplitudes ∝ 1 / f^decay_power
    sd: float = 0.01  # spread of the starting parameters
    pad: int = 12  # px of grey around the image (0: off)
    jitter: int = 8  # random shift 0..jitter−1 px (≤ 1: off)
    scale: float = 0.1  # random scale among 1 − s … 1 + s (0: off)
    rotate: int = 10  # random rotation among −r … r degrees (0: off)
    jitter2: int = 4  # the second, smaller shift after scale and rotation (≤ 1: off)
    upsample: bool = True  # resize to the model's input size before the network
    l2: float = 0.0  # weight of mean (x − 0.5)²
    tv: float = 0.0  # weight of the total variation (mean |∇x|)
    blur_every: int = 0  # Gaussian blur of the parameters every N steps (0: off)
    blur_sigma: float = 0.5
    seed: int = 0
    progress_every: int = 16

    def transform_settings(self) -> T.TransformSettings:
        return T.TransformSettings(self.pad, self.jitter, self.scale, self.rotate, self.jitter2, self.upsample)

    def validate(self) -> None:
        if not 1 <= self.steps <= 100_000:
            raise InputError(f"steps must be between 1 and 100000 (got {self.steps})")
        if not 1 <= self.batch <= MAX_BATCH:
            raise InputError(f"the batch holds 1 to {MAX_BATCH} images (got {self.batch})")
        if not 8 <= self.size <= 1024:
            raise InputError(f"the image side must be between 8 and 1024 px (got {self.size})")
        if not self.lr > 0:
            raise InputError("the learning rate must be positive")
        if self.blur_every and not self.blur_sigma > 0:
            raise InputError("the blur σ must be positive")


PRESETS: dict[str, Settings] = {
    "quality": Settings(),
    "quick": Settings(steps=64),
}


def preset(name: str, **overrides: Any) -> Settings:
    """A named preset with some fields changed (``preset("quality", batch=4, seed=1)``)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    known = {f.name for f in fields(Settings)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise InputError(f"unknown setting(s) {', '.join(bad)}")
    return replace(PRESETS[name], **overrides)


@dataclass
class Synthesis:
    """A batch of synthesized images (N×H×W×3 float32 in [0, 1]) and the objective's values at each step."""

    images: np.ndarray
    history: list[float]
    terms: dict[str, list[float]]
    objective: str
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    cancelled: bool = False
    device: str = "cpu"

    @property
    def image(self) -> np.ndarray:
        return self.images[0]

    @property
    def steps_done(self) -> int:
        return len(self.history)

    def to_json(self) -> dict:
        """What made these images, for an export next to them (settings, objective, per-step values)."""
        return {"objective": self.objective, "settings": dict(self.settings), "steps_done": self.steps_done,
                "seconds": round(self.seconds, 3), "cancelled": self.cancelled, "device": self.device,
                "history": [float(v) for v in self.history],
                "terms": {k: [float(v) for v in vs] for k, vs in self.terms.items()}}


class _Stop(Exception):
    pass


class _Pass:
    """One forward pass keeping the outputs of the objective's layers (per call index); it stops once all are
    captured when no term needs the logits. A negative call index needs one whole pass to count the calls."""

    def __init__(self, handle, objective: Objective) -> None:
        self.handle, self.net = handle, handle.net
        self.wanted = sorted(objective.layers)
        self.modules = {layer: get_module(self.net, layer) for layer, _ in self.wanted}
        self.needs_logits = objective.needs_logits
        self.n_calls: dict[str, int] | None = None

    def run(self, x: torch.Tensor) -> tuple[dict[tuple[str, int], torch.Tensor], torch.Tensor | None]:
        calls: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.modules}
        need: dict[str, set[int]] | None = None
        if self.n_calls is not None:
            need = {layer: set() for layer in self.modules}
            for layer, ci in self.wanted:
                need[layer].add(ci % self.n_calls[layer])
        remaining = None if need is None else sum(len(v) for v in need.values())
        can_stop = not self.needs_logits and need is not None
        state = {"left": remaining}

        def hook_for(layer: str):
            def hook(module, inputs, out):
                if not torch.is_tensor(out):
                    raise InputError(f"layer {layer!r} does not return a single tensor")
                i = len(calls[layer])
                keep = need is None or i in need[layer]
                calls[layer].append(out if keep else None)
                if keep and need is not None:
                    state["left"] -= 1
                    if can_stop and state["left"] == 0:
                        raise _Stop()
                # the network goes on with a copy, so a later in-place op does not change the kept output
                return out.clone() if keep else None
            return hook

        logits = None
        with hooked(self.handle) as hs:
            for layer, m in self.modules.items():
                hs.forward(m, hook_for(layer))
            try:
                logits = self.net(x)
            except _Stop:
                pass
        if self.n_calls is None:
            self.n_calls = {layer: len(v) for layer, v in calls.items()}
        acts = {}
        for layer, ci in self.wanted:
            if not calls[layer] and self.n_calls.get(layer, 0) == 0:
                raise InputError(f"layer {layer!r} is not used in the forward pass")
            acts[(layer, ci)] = pick_call(calls[layer], layer, ci) if need is None else calls[layer][ci % self.n_calls[layer]]
        return acts, logits


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


def _resolve_classes(handle, objective: Objective) -> dict[int, int]:
    """Term position → class index for the logit terms (unknown labels fail here, before any step)."""
    return {i: label_index(handle, t.target) for i, t in enumerate(objective.terms) if t.kind == "logit"}


def _term_names(objective: Objective, labels) -> list[str]:
    names, seen = [], {}
    for t in objective.terms:
        base = t.describe(labels)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base} ({seen[base]})")
    return names


def evaluate(handle, objective: Objective, x: torch.Tensor, runner: "_Pass | None" = None,
             classes: dict[int, int] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The objective's total and each term's value on a normalized model input ``x`` (N×3×H×W), differentiable
    with respect to ``x`` when gradients are on. ``runner``/``classes`` let the render loop reuse its pass."""
    runner = runner or _Pass(handle, objective)
    classes = _resolve_classes(handle, objective) if classes is None else classes
    acts, logits = runner.run(x)
    values = [t.value(acts, logits, classes.get(i)) for i, t in enumerate(objective.terms)]
    total = sum(t.weight * v for t, v in zip(objective.terms, values))
    return total, values


def synthesize(handle, objective: Objective, settings: Settings | None = None,
               progress: Callable[[int, float, np.ndarray], object] | None = None, cancel=None,
               **overrides: Any) -> Synthesis:
    """Optimise a batch of images for ``objective`` (maximised). ``settings`` (default: the quality preset) or
    keyword overrides of its fields choose the parameterisation, transforms and penalties.
    ``progress(step, objective value, images N×H×W×3)`` is called every ``progress_every`` steps and after the
    last; ``cancel`` (a callable or an Event) stops early, keeping the images reached so far."""
    if not isinstance(objective, Objective) or not objective.terms:
        raise InputError("nothing to maximise: give at least one objective term")
    s = settings or PRESETS["quality"]
    if overrides:
        s = replace(s, **overrides)
    s.validate()
    if any(t.kind == "diversity" for t in objective.terms) and s.batch < 2:
        raise InputError("the diversity term compares images of a batch: use a batch of at least 2")
    for t in objective.terms:
        if t.batch is not None and not -s.batch <= t.batch < s.batch:
            raise InputError(f"a term is for image {t.batch}, but the batch has {s.batch} image(s)")
    t0 = time.perf_counter()
    classes = _resolve_classes(handle, objective)
    runner = _Pass(handle, objective)
    device = device_of(handle)
    gen = torch.Generator().manual_seed(int(s.seed))
    img = ImageParam(s.param, s.batch, s.size, gen, device, s.sd, s.decay_power, s.decorrelate)
    opt = torch.optim.Adam([img.p], lr=s.lr)
    tset = s.transform_settings()
    out_size = tuple(int(v) for v in handle.input_size)
    normalize = handle.preprocess.normalize
    names = _term_names(objective, getattr(handle, "labels", None))
    history: list[float] = []
    per_term: dict[str, list[float]] = {n: [] for n in names}
    stopped = False

    def snapshot() -> np.ndarray:
        with torch.no_grad():
            return to_numpy(img().permute(0, 2, 3, 1)).astype(np.float32)

    for step in range(1, s.steps + 1):
        x01 = img()
        x = normalize(T.apply(x01, tset, gen, out_size))
        with torch.enable_grad():
            total, values = evaluate(handle, objective, x, runner, classes)
            loss = -total
            if s.l2:
                loss = loss + s.l2 * ((x01 - 0.5) ** 2).mean()
            if s.tv:
                loss = loss + s.tv * _tv(x01)
            with handle.lock:  # backward through the shared modules: one user at a time, as for the forward
                (g,) = torch.autograd.grad(loss, [img.p])
        img.p.grad = g
        opt.step()
        if s.blur_every and step % s.blur_every == 0:
            img.blur(s.blur_sigma)
        vals = torch.stack([v.detach().reshape(()) for v in values] + [total.detach().reshape(())]).cpu().tolist()
        for n, v in zip(names, vals[:-1]):
            per_term[n].append(float(v))
        history.append(float(vals[-1]))
        last = step == s.steps
        if progress is not None and (last or (s.progress_every and step % s.progress_every == 0)):
            progress(step, history[-1], snapshot())
        if not last and _cancelled(cancel):
            stopped = True
            break
    return Synthesis(snapshot(), history, per_term, objective.describe(getattr(handle, "labels", None)), asdict(s),
                     time.perf_counter() - t0, stopped, str(device))


def term_values(handle, objective: Objective, images: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Each term's value on given images (N×H×W×3 in [0, 1], resized to the model's input, no random transforms):
    what an objective reaches on a finished image, or on natural images for comparison."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2).to(device_of(handle))
    x = torch.nn.functional.interpolate(x, size=tuple(int(v) for v in handle.input_size), mode="bilinear",
                                        align_corners=True) if tuple(x.shape[2:]) != tuple(handle.input_size) else x
    with torch.no_grad():
        _, vals = evaluate(handle, objective, handle.preprocess.normalize(x))
    return {n: float(v) for n, v in zip(_term_names(objective, getattr(handle, "labels", None)), vals)}
