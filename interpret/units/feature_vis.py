"""Synthesized images by activation maximization: optimise an input to excite a channel (or one unit) of a
layer, or a class logit (Simonyan et al. 2014, "class model visualisation"; pre-softmax, as they advise).

Kept apart as in Lucent's ``optvis``: the *objective* (what to maximise), the *parameterisation* (pixels or a
Fourier spectrum with 1/f scaling, optionally with ImageNet colour decorrelation; always squashed by a sigmoid
into [0, 1]), the random *transforms* applied before every forward pass (jitter, scale, rotation — robustness
against adversarial high-frequency patterns), and the *penalties* (L2 towards grey, total variation, and a
Gaussian blur of the parameters every N steps). Each is switchable, so one can see what it contributes.

The shared model is only read: the input is the only tensor whose gradient is asked for
(``torch.autograd.grad``), parameters' ``.grad`` stay untouched, and every step's forward/backward runs
under the model's lock with per-call hooks. Randomness comes from one seeded ``torch.Generator``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from interpret.core.errors import InputError
from interpret.core.runtime import cancelled as _cancelled
from interpret.core.layers import capture, get_module
from interpret.core.tensors import device_of, to_numpy
from models.handle import label_index

# Square root of ImageNet's RGB colour correlation (columns: decorrelated components), the constant used by
# Lucid/Lucent for "decorrelated" images; columns scaled so the largest has unit norm.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32)
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass(frozen=True)
class Objective:
    """What to maximise: ``"channel"`` (mean of a channel's map), ``"unit"`` (one unit of a channel; default
    the centre) or ``"logit"`` (a class's pre-softmax score; ``target`` index or label)."""

    kind: str
    layer: str | None = None
    channel: int = 0
    unit: tuple[int, int] | None = None
    target: int | str = 0
    call_index: int = -1

    def describe(self) -> str:
        if self.kind == "logit":
            return f"logit of class {self.target}"
        if self.kind == "unit":
            where = f"unit {self.unit}" if self.unit else "centre unit"
        else:
            where = "mean"
        return f"{self.layer} channel {self.channel} ({where})"


def channel_objective(layer: str, channel: int, call_index: int = -1) -> Objective:
    return Objective("channel", layer, int(channel), call_index=call_index)


def unit_objective(layer: str, channel: int, unit: tuple[int, int] | None = None, call_index: int = -1) -> Objective:
    return Objective("unit", layer, int(channel), unit, call_index=call_index)


def logit_objective(target: int | str) -> Objective:
    return Objective("logit", target=target)


@dataclass
class Settings:
    """Every switch of the optimisation (all plain values, so a page can build it from widgets)."""

    steps: int = 128
    size: int | None = None  # image side; None → the model's input size
    lr: float = 0.05
    param: str = "fourier"  # "fourier" | "pixel"
    decorrelate: bool = True
    decay_power: float = 1.0  # Fourier: amplitude ∝ 1 / f^decay_power
    jitter: int = 8  # random translation ± pixels (0: off)
    scale: float = 0.1  # random scale in [1 − s, 1 + s] (0: off)
    rotate: float = 10.0  # random rotation ± degrees (0: off)
    l2: float = 0.0  # weight of mean (x − 0.5)²
    tv: float = 0.0  # weight of total variation (mean |∇x|)
    blur_every: int = 0  # Gaussian blur of the parameters every N steps (0: off)
    blur_sigma: float = 0.5
    seed: int = 0
    progress_every: int = 8


@dataclass
class FeatureVis:
    """A synthesized image (H×W×3 float32 in [0, 1]) and the objective's value at each step."""

    image: np.ndarray
    history: list[float]
    objective: str
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    cancelled: bool = False


class _Image:
    """Parameterisation: parameters → image in [0, 1] (sigmoid of pixels or of an inverse FFT). The starting
    parameters are drawn on the CPU by the seeded generator and moved to ``device`` (same start on every device)."""

    def __init__(self, s: Settings, size: int, gen: torch.Generator,
                 device: torch.device | str = "cpu") -> None:
        self.s, self.h, self.w = s, size, size
        self.color = _COLOR.to(device)
        if s.param == "pixel":
            self.p = (torch.randn(1, 3, size, size, generator=gen) * 0.01).to(device).requires_grad_(True)
        elif s.param == "fourier":
            fy = torch.fft.fftfreq(size)[:, None]
            fx = torch.fft.rfftfreq(size)[None, :]
            freq = torch.sqrt(fx ** 2 + fy ** 2)
            self.freq = freq.to(device)
            self.scale = (1.0 / torch.clamp(freq, min=1.0 / size) ** s.decay_power)[None, None, :, :, None].to(device)
            self.p = (torch.randn(1, 3, size, size // 2 + 1, 2, generator=gen) * 0.01).to(device).requires_grad_(True)
        else:
            raise InputError(f"unknown parameterisation {s.param!r}; use 'fourier' or 'pixel'")

    def raw(self) -> torch.Tensor:
        if self.s.param == "pixel":
            return self.p
        spec = torch.view_as_complex((self.p * self.scale).contiguous())
        return torch.fft.irfft2(spec, s=(self.h, self.w), norm="ortho") / 4.0

    def __call__(self) -> torch.Tensor:
        x = self.raw()
        if self.s.decorrelate:
            x = torch.einsum("nchw,dc->ndhw", x, self.color)
        return torch.sigmoid(x)

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        """Gaussian blur of the pre-sigmoid image: a spatial convolution for pixels, the matching frequency
        response exp(−2π²σ²f²) for the Fourier spectrum (same thing: the map to the image is linear)."""
        if self.s.param == "pixel":
            k = 2 * math.ceil(3 * sigma) + 1
            import torchvision.transforms.functional as TF

            self.p.copy_(TF.gaussian_blur(self.p, [k, k], [sigma, sigma]))
        else:
            self.p.mul_(torch.exp(-2 * math.pi ** 2 * sigma ** 2 * self.freq ** 2)[None, None, :, :, None])


def _transform(x: torch.Tensor, s: Settings, gen: torch.Generator) -> torch.Tensor:
    """Random rotation, scale and translation in one differentiable resampling (reflection at the borders)."""
    if not (s.jitter or s.scale or s.rotate):
        return x
    r = torch.rand(4, generator=gen)
    ang = math.radians(s.rotate) * (2 * float(r[0]) - 1)
    sc = 1 + s.scale * (2 * float(r[1]) - 1)
    h, w = x.shape[2:]
    tx = 2 * round(s.jitter * (2 * float(r[2]) - 1)) / w
    ty = 2 * round(s.jitter * (2 * float(r[3]) - 1)) / h
    c, si = math.cos(ang) / sc, math.sin(ang) / sc
    theta = torch.tensor([[[c, -si, tx], [si, c, ty]]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


def synthesize(handle, objective: Objective, settings: Settings | None = None,
               progress: Callable[[int, float, np.ndarray], object] | None = None, cancel=None,
               **overrides) -> FeatureVis:
    """Optimise an image for ``objective``. ``settings`` (or keyword overrides of its fields) choose the
    parameterisation, transforms and penalties. ``progress(step, objective value, image H×W×3)`` is called
    every ``progress_every`` steps and after the last; ``cancel`` (callable or Event) stops early."""
    s = settings or Settings()
    if overrides:
        s = Settings(**{**asdict(s), **overrides})
    t0 = time.perf_counter()
    net, pre = handle.net, handle.preprocess
    size = int(s.size or handle.input_size[0])
    gen = torch.Generator().manual_seed(int(s.seed))
    img = _Image(s, size, gen, device_of(handle))
    opt = torch.optim.Adam([img.p], lr=s.lr)
    if objective.kind == "logit":
        cls = label_index(handle, objective.target)
    elif objective.kind in ("channel", "unit"):
        if objective.layer is None:
            raise InputError("a channel or unit objective needs a layer")
        get_module(net, objective.layer)  # a wrong layer name fails here, before any step
    else:
        raise InputError(f"unknown objective kind {objective.kind!r}")
    n_calls: int | None = None
    history: list[float] = []
    cancelled = False

    def objective_value(x01: torch.Tensor) -> torch.Tensor:
        nonlocal n_calls
        x = pre.normalize(x01)
        if objective.kind == "logit":
            with handle.lock:
                return net(x)[0, cls]
        # A negative call_index needs one whole pass to count the layer's calls; later passes stop at the wanted one.
        index = objective.call_index if n_calls is None else objective.call_index % n_calls
        with capture(handle, objective.layer, index, grad=True, stop=True) as cap:
            cap.run(x)
        a = cap.output
        if n_calls is None:
            n_calls = cap.n_calls
        if a.dim() != 4:
            a = a.reshape(a.shape[0], a.shape[1], 1, 1)
        if not 0 <= objective.channel < a.shape[1]:
            raise InputError(f"channel {objective.channel} out of range 0..{a.shape[1] - 1}")
        m = a[0, objective.channel]
        if objective.kind == "channel":
            return m.mean()
        i, j = objective.unit if objective.unit is not None else (m.shape[0] // 2, m.shape[1] // 2)
        return m[i, j]

    def snapshot() -> np.ndarray:
        with torch.no_grad():
            return to_numpy(img()[0].permute(1, 2, 0)).astype(np.float32)

    for step in range(1, s.steps + 1):
        x01 = img()
        obj = objective_value(_transform(x01, s, gen))
        loss = -obj
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
        history.append(float(obj.detach()))
        last = step == s.steps
        if progress is not None and (last or (s.progress_every and step % s.progress_every == 0)):
            progress(step, history[-1], snapshot())
        if not last and _cancelled(cancel):
            cancelled = True
            break
    return FeatureVis(snapshot(), history, objective.describe(), asdict(s), time.perf_counter() - t0, cancelled)
