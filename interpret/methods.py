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
    the method's default layer) | "dict" (keyword arguments for a sub-step, e.g. the segmentation).

    What a form shows comes from here, so every form gets it: ``label`` (never the raw name), ``help`` (what the
    parameter does), ``choice_labels`` (how each choice reads), ``advanced`` (an implementation knob — engine,
    batch size, precision — that changes speed or rounding, not the question asked: kept behind "Advanced") and
    ``when`` = (other parameter, value): the parameter applies, and is shown, only while that earlier parameter
    has that value (the blur radius only for the blur baseline); otherwise its default is used."""

    name: str
    kind: str
    default: Any
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    help: str = ""
    step: float | None = None
    label: str = ""
    advanced: bool = False
    when: tuple[str, Any] | None = None
    choice_labels: tuple[tuple[Any, str], ...] = ()

    @property
    def title(self) -> str:
        """The human label of the parameter."""
        return self.label or self.name.replace("_", " ").capitalize()

    def choice_label(self, value: Any) -> str:
        """How one of the choices reads in a form."""
        return dict(self.choice_labels).get(value, str(value))

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether the parameter matters given the values chosen for the earlier ones."""
        return self.when is None or values.get(self.when[0]) == self.when[1]


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


_LAYER = ParamSpec("layer", "layer", None, label="Layer",
                   help="The layer whose feature maps are weighted, by module path; (default): the last "
                        "convolutional block (coarse but class-specific; earlier layers give finer, noisier maps).")
_SEED = dict(label="Random seed", advanced=True)

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
        ParamSpec("samples", "int", 25, min=1, max=200, label="Noisy copies",
                  help="How many noisy copies of the image are averaged: more gives a smoother map and takes "
                       "proportionally longer."),
        ParamSpec("noise", "float", 0.15, min=0.0, max=1.0, step=0.01, label="Noise level",
                  help="Standard deviation of the added Gaussian noise, as a fraction of the input's range "
                       "(max − min)."),
        ParamSpec("squared", "bool", False, label="Square the gradients (SmoothGrad-SQ)",
                  help="Average the squared gradients instead of the gradients: sign-free, emphasises strong "
                       "evidence."),
        ParamSpec("seed", "int", 0, min=0, max=2**31 - 1, help="Seed of the noise: the same seed gives the same "
                  "map.", **_SEED)),
        description="Smilkov et al. 2017: gradients averaged over noisy copies of the image.", slow=True),
    MethodSpec("integrated_gradients", "Integrated Gradients", _ig.integrated_gradients, True, (
        ParamSpec("steps", "int", 32, min=2, max=300, label="Integration steps",
                  help="Points on the straight path from the baseline to the image where the gradient is taken: "
                       "more is more accurate (the map's sum approaches the score difference) and slower."),
        ParamSpec("baseline", "choice", "black", choices=_ig.BASELINES, label="Baseline (start of the path)",
                  help="The 'absence of evidence' image the path starts from; the map explains the score "
                       "difference between the image and it.",
                  choice_labels=(("black", "Black image"), ("zero", "Zero input (after normalization)"),
                                 ("blur", "Blurred image"), ("noise", "Uniform noise"), ("white", "White image"))),
        ParamSpec("rule", "choice", "gausslegendre",
                  choices=("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left",
                           "riemann_right"), label="Quadrature rule", advanced=True,
                  help="How the path integral is approximated from the steps; Gauss–Legendre is the most "
                       "accurate for a given number of steps.",
                  choice_labels=(("gausslegendre", "Gauss–Legendre"), ("riemann_trapezoid", "Riemann, trapezoid"),
                                 ("riemann_middle", "Riemann, midpoint"), ("riemann_left", "Riemann, left"),
                                 ("riemann_right", "Riemann, right"))),
        ParamSpec("seed", "int", 0, min=0, max=2**31 - 1, when=("baseline", "noise"),
                  help="Seed of the noise baseline: the same seed gives the same map.", **_SEED)),
        description="Sundararajan et al. 2017: gradients integrated along the path from a baseline.", slow=True),
):
    register(_spec)

# Perturbation methods live in their own files; register them when present.
_PATCH = (  # the occlusion patch, shared by the exact and the approximate occlusion
    ParamSpec("window", "int", 15, min=1, max=224, label="Patch size (px)",
              help="Side of the square patch that hides part of the image, in pixels of the model's input."),
    ParamSpec("stride", "int", 8, min=1, max=224, label="Patch step (px)",
              help="Distance between neighbouring patch positions, in pixels: smaller gives a finer map and "
                   "takes quadratically longer."),
    ParamSpec("baseline", "choice", "zero", choices=("zero", "mean", "blur"), label="Patch fill",
              help="What the hidden patch is filled with: zero input after normalization (for most models the "
                   "training data's mean colour), the image's own mean colour, or the blurred image.",
              choice_labels=(("zero", "Zero input (after normalization)"), ("mean", "Image's mean colour"),
                             ("blur", "Blurred image"))),
    ParamSpec("blur_sigma", "float", 5.0, min=0.5, max=20.0, step=0.5, label="Blur radius σ (px)",
              when=("baseline", "blur"),
              help="Standard deviation, in pixels, of the Gaussian that blurs the image for the patch fill."))
try:
    from .occlusion import occlusion as _occlusion
except ImportError:  # pragma: no cover - until interpret/occlusion.py exists
    _occlusion = None
if _occlusion is not None:
    register(MethodSpec("occlusion", "Occlusion", _occlusion, True, _PATCH + (
        ParamSpec("engine", "choice", "incremental", choices=("incremental", "batched"), label="Engine",
                  advanced=True,
                  help="Incremental: each layer recomputes only the region the patch changes (Krypton) — same map "
                       "to float rounding, 3–10× faster, drawn coarse first. Batched: a full forward pass per "
                       "patch position.",
                  choice_labels=(("incremental", "Incremental (recompute only what the patch changes)"),
                                 ("batched", "Batched full forward passes"))),
        ParamSpec("fast", "bool", False, label="Fold batch norm into the convolutions", advanced=True,
                  when=("engine", "batched"),
                  help="Full passes run on a private copy with batch norm folded into the convolutions, "
                       "channels-last: faster, equal to the exact map up to float rounding (~1e-5)."),
        ParamSpec("batch_size", "int", 64, min=1, max=512, label="Batch size", advanced=True,
                  help="Occluded images per forward pass: larger is usually faster and needs more memory.")),
        description="Zeiler & Fergus 2014: drop of the target score when a patch is hidden.", slow=True))

try:
    from .incremental import bf16_pays as _bf16_pays
    from .occlusion_approx import approx_occlusion as _occlusion_approx
except ImportError:  # pragma: no cover
    _occlusion_approx = None
if _occlusion_approx is not None:
    register(MethodSpec("occlusion_approx", "Occlusion (approximate, fast)", _occlusion_approx, True, _PATCH + (
        ParamSpec("tolerance", "float", 0.12, min=0.0, max=0.5, step=0.01, label="Refinement tolerance",
                  help="A patch position is scored only where the drops around it differ by more than this share "
                       "of the drops' range; elsewhere its drop is interpolated. 0: every position (and with low "
                       "precision off, the exact map)."),
        ParamSpec("coarse_step", "int", 4, min=1, max=16, label="Coarse grid spacing (positions)", advanced=True,
                  help="Spacing, in patch positions, of the first grid, which is always scored; refinement "
                       "starts from it."),
        ParamSpec("low_precision", "bool", _bf16_pays(), label="Low precision (bfloat16)", advanced=True,
                  help="The changes go through bfloat16 convolutions: ~0.5 % error of the drops, ~2.5× faster on "
                       "CPUs with AMX (on by default only there; elsewhere it is no faster)."),
        ParamSpec("batch_size", "int", 64, min=1, max=512, label="Batch size", advanced=True,
                  help="Patch positions per incremental pass: larger is usually faster and needs more memory.")),
        description="Occlusion refined coarse-to-fine: patches are scored where the map changes and interpolated "
                    "where it is smooth; the peak is always measured (Krypton-style incremental inference).",
        slow=True))

_SEGMENTATION = ParamSpec("segmentation", "choice", "quickshift", choices=("quickshift", "slic", "felzenszwalb"),
                          label="Superpixel algorithm",
                          help="How the image is cut into the superpixels that LIME switches on and off.",
                          choice_labels=(("quickshift", "Quickshift"), ("slic", "SLIC"),
                                         ("felzenszwalb", "Felzenszwalb")))
_HIDE = ParamSpec("hide_color", "choice", "mean", choices=("mean", "black", "grey", "white"),
                  label="Fill of hidden superpixels",
                  help="What a switched-off superpixel is filled with (lime's default: its own mean colour).",
                  choice_labels=(("mean", "Its mean colour"), ("black", "Black"), ("grey", "Grey"),
                                 ("white", "White")))
_LIME_SEED = ParamSpec("seed", "int", 0, min=0, max=2**31 - 1, help="Seed of segmentation and sampling: the "
                       "same seed gives the same map.", **_SEED)

try:
    from .lime_method import lime_explain as _lime
except ImportError:  # pragma: no cover - until interpret/lime_method.py exists
    _lime = None
if _lime is not None:
    register(MethodSpec("lime", "LIME", _lime, True, (
        _SEGMENTATION,
        ParamSpec("seg_params", "dict", None, label="Segmentation settings", advanced=True,
                  help="Settings of the superpixel algorithm as JSON (e.g. quickshift kernel_size, max_dist, "
                       "ratio; slic n_segments, compactness; felzenszwalb scale, sigma, min_size)."),
        ParamSpec("num_samples", "int", 1000, min=10, max=5000, label="Perturbed samples",
                  help="Images with random superpixels hidden that the linear model is fitted on: more gives "
                       "steadier weights and takes proportionally longer."),
        _HIDE,
        _LIME_SEED,
        ParamSpec("batch_size", "int", 10, min=1, max=500, label="Batch size", advanced=True,
                  help="Perturbed images per forward pass.")),
        description="Ribeiro et al. 2016: a linear model on superpixels fitted to perturbed images.", slow=True))

try:
    from .lime_fast import lime_fast as _lime_fast
except ImportError:  # pragma: no cover
    _lime_fast = None
if _lime_fast is not None:
    register(MethodSpec("lime_fast", "LIME (adaptive, fast)", _lime_fast, True, (
        _SEGMENTATION,
        ParamSpec("seg_params", "dict", None, label="Segmentation settings", advanced=True,
                  help="Settings of the superpixel algorithm as JSON, as for LIME."),
        ParamSpec("num_samples", "int", 700, min=50, max=5000, label="Most perturbed samples",
                  help="Most perturbed images (the orthogonal design reaches the agreement of lime's 1000 with "
                       "fewer); sampling stops earlier once the top superpixels are stable."),
        _HIDE,
        _LIME_SEED,
        ParamSpec("adaptive", "bool", True, label="Stop early once the top superpixels are stable",
                  help="Stop sampling when the top-5 superpixels have not changed for the number of checks set "
                       "below; off: always draw the most samples."),
        ParamSpec("patience", "int", 12, min=1, max=40, label="Checks the top 5 must hold", when=("adaptive", True),
                  help="How many consecutive checks (one every 25 samples) the top-5 set must stay the same "
                       "before sampling stops."),
        ParamSpec("design", "choice", "orthogonal", choices=("orthogonal", "lime"), label="Sampling design",
                  advanced=True,
                  help="Orthogonal: balanced Hadamard foldover blocks, less noisy per sample; independent: lime's "
                       "own random draws.",
                  choice_labels=(("orthogonal", "Orthogonal (balanced blocks)"),
                                 ("lime", "Independent draws (as lime)"))),
        ParamSpec("batch_size", "int", 5, min=1, max=500, label="Batch size", advanced=True,
                  help="Perturbed images per forward pass (small batches keep activations in cache: faster on CPU).")),
        description="LIME with an orthogonal sampling design, vectorised perturbations, a frozen copy of the net "
                    "and a stop once the ranking is stable; the page shows the stability.", slow=True))
