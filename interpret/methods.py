"""Registry of attribution methods: what each is called, whether its map is signed, and its parameters.

The UI builds its forms from ``MethodSpec.params`` and calls ``explain``; nothing here knows about widgets.
Every method has the contract ``fn(handle, x, target, **params) -> Attribution`` with x the normalized input
(1, 3, H, W). Methods in other files register themselves with ``register`` (or are imported below, guarded,
so a missing optional module just leaves its entry out).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from models.handle import ModelHandle

from . import cam as _cam
from . import guided_backprop as _gb
from . import integrated_gradients as _ig
from . import saliency as _sal
from . import smoothgrad as _sg
from .result import Attribution


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a method. kind: "int" | "float" | "bool" | "choice" | "layer" (a module name; None →
    the method's default layer) | "dict" (keyword arguments for a sub-step, e.g. the segmentation)."""

    name: str
    kind: str
    default: Any
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    help: str = ""
    step: float | None = None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    label: str
    fn: Callable[..., Attribution]
    signed: bool
    params: tuple[ParamSpec, ...] = ()
    description: str = ""
    slow: bool = False  # worth a progress bar
    takes_progress: bool = field(default=False)


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method; ``takes_progress`` is set from the function's signature."""
    takes = "progress" in inspect.signature(spec.fn).parameters
    spec = MethodSpec(spec.name, spec.label, spec.fn, spec.signed, tuple(spec.params), spec.description,
                      spec.slow, takes)
    METHODS[spec.name] = spec
    return spec


def defaults(method: str) -> dict[str, Any]:
    """The default parameter values of a method."""
    return {p.name: p.default for p in get_spec(method).params}


def get_spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return METHODS[method]


def explain(handle: ModelHandle, x: torch.Tensor, target: int, method: str,
            progress: Callable[[float], None] | None = None, **params: Any) -> Attribution:
    """Run ``method`` with ``params`` (defaults filled in); the result's ``seconds`` is the wall time of the call
    and its ``params`` every setting that reproduces it. ``progress(fraction)`` is passed to methods that
    report progress."""
    spec = get_spec(method)
    known = {p.name for p in spec.params}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"{method} has no parameter(s) {sorted(unknown)}; it takes {sorted(known) or 'none'}")
    kwargs = {**defaults(method), **params}
    if spec.takes_progress and progress is not None:
        kwargs["progress"] = progress
    t0 = time.perf_counter()
    res = spec.fn(handle, x, int(target), **kwargs)
    res.seconds = time.perf_counter() - t0
    kwargs.pop("progress", None)
    res.params = {**kwargs, **res.params}
    return res


_LAYER = ParamSpec("layer", "layer", None, help="Module name of the layer; empty: the last convolutional block.")

for _spec in (
    MethodSpec("saliency", "Saliency (|gradient|)", _sal.saliency, False,
               description="Simonyan et al. 2014: max over colour channels of |∂ logit / ∂ pixel|."),
    MethodSpec("gradient", "Gradient (signed)", _sal.gradient, True,
               description="∂ logit / ∂ pixel summed over colour channels."),
    MethodSpec("grad_x_input", "Gradient × input", _sal.grad_x_input, True,
               description="Gradient times the normalized input, summed over colour channels."),
    MethodSpec("backprop", "Backprop (plain gradient image)", _gb.backprop, False,
               description="The raw gradient shown as a colour image, as in the guided-backprop slides."),
    MethodSpec("guided_backprop", "Guided backprop", _gb.guided_backprop, False,
               description="Springenberg et al. 2015: only positive gradients pass through active ReLUs."),
    MethodSpec("deconvnet", "Deconvnet", _gb.deconvnet, False,
               description="Zeiler & Fergus 2014: ReLUs pass positive gradients regardless of the forward pass."),
    MethodSpec("cam", "CAM", _cam.cam, True,
               description="Zhou et al. 2016: Σ_k w_k A_k of the last feature map; only for conv → GAP → linear."),
    MethodSpec("gradcam", "Grad-CAM", _cam.gradcam, False, (_LAYER,),
               description="Selvaraju et al. 2017: feature maps weighted by their mean gradient, then ReLU."),
    MethodSpec("gradcam_pp", "Grad-CAM++", _cam.gradcam_pp, False, (_LAYER,),
               description="Chattopadhay et al. 2018: pixel-weighted positive gradients as channel weights."),
    MethodSpec("guided_gradcam", "Guided Grad-CAM", _cam.guided_gradcam, False, (_LAYER,),
               description="Guided backprop multiplied by the upsampled Grad-CAM map."),
    MethodSpec("smoothgrad", "SmoothGrad", _sg.smoothgrad, False, (
        ParamSpec("samples", "int", 25, min=1, max=200, help="Number of noisy copies."),
        ParamSpec("noise", "float", 0.15, min=0.0, max=1.0, step=0.01,
                  help="Noise σ as a fraction of the input range."),
        ParamSpec("squared", "bool", False, help="Average squared gradients (SmoothGrad-SQ)."),
        ParamSpec("seed", "int", 0, min=0, max=2**31 - 1, help="Seed of the noise.")),
        description="Smilkov et al. 2017: gradients averaged over noisy copies of the image.", slow=True),
    MethodSpec("integrated_gradients", "Integrated Gradients", _ig.integrated_gradients, True, (
        ParamSpec("steps", "int", 32, min=2, max=300, help="Points on the path from baseline to image."),
        ParamSpec("baseline", "choice", "black", choices=_ig.BASELINES,
                  help="Start of the path: black image, zero input, blurred image, uniform noise, white."),
        ParamSpec("rule", "choice", "gausslegendre",
                  choices=("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left",
                           "riemann_right"), help="Quadrature rule."),
        ParamSpec("seed", "int", 0, min=0, max=2**31 - 1, help="Seed of the noise baseline.")),
        description="Sundararajan et al. 2017: gradients integrated along the path from a baseline.", slow=True),
):
    register(_spec)

# Perturbation methods live in their own files; register them when present.
_PATCH = (  # the occlusion patch, shared by the exact and the approximate occlusion
    ParamSpec("window", "int", 15, min=1, max=224, help="Side of the square patch, in pixels."),
    ParamSpec("stride", "int", 8, min=1, max=224, help="Step between patch positions, in pixels."),
    ParamSpec("baseline", "choice", "zero", choices=("zero", "mean", "blur"),
              help="What the patch is filled with: zero input (after normalization), the image's mean colour, or "
                   "the blurred image."),
    ParamSpec("blur_sigma", "float", 5.0, min=0.5, max=20.0, step=0.5, help="σ of the blur baseline."))
try:
    from .occlusion import occlusion as _occlusion
except ImportError:  # pragma: no cover - until interpret/occlusion.py exists
    _occlusion = None
if _occlusion is not None:
    register(MethodSpec("occlusion", "Occlusion", _occlusion, True, _PATCH + (
        ParamSpec("fast", "bool", False, help="Batch-norm folded into the convolutions on a private copy, "
                  "channels-last: faster, equal to the exact map up to float rounding (~1e-5)."),
        ParamSpec("batch_size", "int", 64, min=1, max=512, help="Occluded images per forward pass."),
        ParamSpec("engine", "choice", "incremental", choices=("incremental", "batched"),
                  help="incremental: each layer recomputes only the region the patch changes (Krypton) — same map "
                       "to float rounding, 3–10× faster.")),
        description="Zeiler & Fergus 2014: drop of the target score when a patch is hidden.", slow=True))

try:
    from .occlusion_approx import approx_occlusion as _occlusion_approx
except ImportError:  # pragma: no cover
    _occlusion_approx = None
if _occlusion_approx is not None:
    register(MethodSpec("occlusion_approx", "Occlusion (approximate, fast)", _occlusion_approx, True, _PATCH + (
        ParamSpec("tolerance", "float", 0.12, min=0.0, max=0.5, step=0.01,
                  help="A patch position is scored only where the drops around it differ by more than this share "
                       "of the drops' range; elsewhere its drop is interpolated. 0: every position (and with low "
                       "precision off, the exact map)."),
        ParamSpec("coarse_step", "int", 4, min=1, max=16, help="Spacing (in patch positions) of the first, "
                  "always scored grid."),
        ParamSpec("low_precision", "bool", True, help="Changes go through bfloat16 convolutions (~0.5 % error "
                  "of the drops, ~2.5× faster on CPUs with AMX)."),
        ParamSpec("batch_size", "int", 64, min=1, max=512, help="Patch positions per incremental pass.")),
        description="Occlusion refined coarse-to-fine: patches are scored where the map changes and interpolated "
                    "where it is smooth; the peak is always measured (Krypton-style incremental inference).",
        slow=True))

try:
    from .lime_method import lime_explain as _lime
except ImportError:  # pragma: no cover - until interpret/lime_method.py exists
    _lime = None
if _lime is not None:
    register(MethodSpec("lime", "LIME", _lime, True, (
        ParamSpec("segmentation", "choice", "quickshift", choices=("quickshift", "slic", "felzenszwalb"),
                  help="Superpixel algorithm."),
        ParamSpec("seg_params", "dict", None, help="Parameters of the segmentation (e.g. quickshift kernel_size, "
                  "max_dist, ratio; slic n_segments, compactness; felzenszwalb scale, sigma, min_size)."),
        ParamSpec("num_samples", "int", 1000, min=10, max=5000, help="Perturbed images to fit on."),
        ParamSpec("hide_color", "choice", "mean", choices=("mean", "black", "grey", "white"),
                  help="What a switched-off superpixel is filled with (lime's default: its mean colour)."),
        ParamSpec("seed", "int", 0, min=0, max=2**31 - 1, help="Seed of segmentation and sampling."),
        ParamSpec("batch_size", "int", 10, min=1, max=500, help="Perturbed images per forward pass.")),
        description="Ribeiro et al. 2016: a linear model on superpixels fitted to perturbed images.", slow=True))

try:
    from .lime_fast import lime_fast as _lime_fast
except ImportError:  # pragma: no cover
    _lime_fast = None
if _lime_fast is not None:
    register(MethodSpec("lime_fast", "LIME (adaptive, fast)", _lime_fast, True, (
        ParamSpec("segmentation", "choice", "quickshift", choices=("quickshift", "slic", "felzenszwalb"),
                  help="Superpixel algorithm."),
        ParamSpec("seg_params", "dict", None, help="Parameters of the segmentation, as for LIME."),
        ParamSpec("num_samples", "int", 700, min=50, max=5000,
                  help="Most perturbed images (the orthogonal design reaches the agreement of lime's 1000 with "
                       "fewer); sampling stops earlier once the top superpixels are stable."),
        ParamSpec("hide_color", "choice", "mean", choices=("mean", "black", "grey", "white"),
                  help="What a switched-off superpixel is filled with."),
        ParamSpec("seed", "int", 0, min=0, max=2**31 - 1, help="Seed of segmentation and sampling."),
        ParamSpec("adaptive", "bool", True, help="Stop when the top-5 set has not changed for `patience` checks."),
        ParamSpec("patience", "int", 12, min=1, max=40, help="Checks (every 25 samples) the top set must hold."),
        ParamSpec("design", "choice", "orthogonal", choices=("orthogonal", "lime"),
                  help="orthogonal: balanced Hadamard foldover blocks, less noisy per sample; lime: lime's own "
                       "independent draws."),
        ParamSpec("batch_size", "int", 5, min=1, max=500,
                  help="Perturbed images per forward pass (small batches keep activations in cache: faster on CPU).")),
        description="LIME with an orthogonal sampling design, vectorised perturbations, a frozen copy of the net "
                    "and a stop once the ranking is stable; the page shows the stability.", slow=True))
