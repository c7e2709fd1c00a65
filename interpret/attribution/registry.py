"""Registry of attribution methods: what each is called, whether its map is signed, its parameters, and what the
Explain page shows beside its map.

The UI builds its forms from ``MethodSpec.params`` and its detail panels from ``MethodSpec.details`` (a
``DetailsView``: typed descriptions of the method's extra results), and calls ``explain``; nothing here knows about
widgets. Every method has the contract ``fn(handle, x, target, **params) -> Attribution`` with x the normalized
input (1, 3, H, W). ``COMPOSITES`` are entries of the method list that show several methods side by side.
"""
from __future__ import annotations

import dataclasses
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from models.handle import ModelHandle

from interpret.attribution import cam as _cam
from interpret.attribution import gradients as _sal
from interpret.attribution import guided_backprop as _gb
from interpret.attribution import integrated_gradients as _ig
from interpret.attribution import smoothgrad as _sg
from interpret.attribution.lime import lime_explain as _lime
from interpret.attribution.lime_fast import lime_fast as _lime_fast
from interpret.attribution.occlusion import occlusion as _occlusion
from interpret.attribution.occlusion_approx import approx_occlusion as _occlusion_approx
from interpret.attribution.occlusion_approx import coarse_occlusion as _coarse_occlusion
from interpret.attribution import lrp as _lrp
from interpret.core.errors import InputError
from interpret.core.memory import oom_as_error
from interpret.core.tensors import device_of
from interpret.core.result import Attribution
from interpret.engines.incremental import bf16_pays as _bf16_pays


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


# ---- details views: what the Explain page shows beside a map, described as data --------------------------------
# Each part names the ``Attribution.extra`` entries (and parameters) it reads, so the page renders every method's
# details from its description alone; a part is shown only when its entries are present in the result.

@dataclass(frozen=True)
class AlternativeMap:
    """Another map of the same result that can be shown instead of the main one: ``label`` is how the choice
    reads, ``key`` the ``extra`` entry holding it (H×W, same grid and sign convention as the main map)."""

    label: str
    key: str


@dataclass(frozen=True)
class AlternativeMaps:
    """A choice between the main map (read as ``main``) and the ``maps`` present in a result."""

    main: str
    maps: tuple[AlternativeMap, ...]


@dataclass(frozen=True)
class RgbPanel:
    """A per-colour-channel image beside the map (grey = 0): ``key`` names the signed H×W×3 array in ``extra``;
    its title comes from ``interpret.plots.attribution.rgb_title``. Methods with one can be shown side by side
    in a ``Composite``."""

    key: str = "rgb"


@dataclass(frozen=True)
class ScoredWindows:
    """Which patch positions were measured and which interpolated (approximate occlusion): ``extra`` entries
    ``scored`` (rows × cols bool; with "logit_drops" and "grid" as ``scored_windows_figure`` reads them),
    ``evaluated`` and ``windows`` (counts); ``tolerance`` the parameter that decides where to refine."""

    scored: str = "scored"
    evaluated: str = "evaluated"
    windows: str = "windows"
    tolerance: str = "tolerance"


@dataclass(frozen=True)
class Segments:
    """A superpixel explanation (LIME): ``extra`` entries ``segments`` (H×W ids), ``weights`` ({id: weight}),
    ``top_positive`` / ``top_negative`` (ids, strongest first) and ``fit_score`` (R² of the linear surrogate);
    ``seed`` the parameter that reproduces the result."""

    segments: str = "segments"
    weights: str = "weights"
    top_positive: str = "top_positive"
    top_negative: str = "top_negative"
    fit_score: str = "score"
    seed: str = "seed"


@dataclass(frozen=True)
class Sampling:
    """The stopping report of an adaptive sampler (fast LIME): ``extra`` entries ``samples_used``, ``stability``
    (share of the last checks that agreed with the final top 5; None when no check was made) and ``history``
    ([(samples, overlap with the previous check)]); ``cap`` the parameter bounding the samples."""

    samples_used: str = "samples_used"
    stability: str = "stability"
    history: str = "stability_history"
    cap: str = "num_samples"


@dataclass(frozen=True)
class Progressive:
    """The method can draw coarse maps while it refines (occlusion with the incremental engine):
    ``levels(handle, x, target, progress=..., **kwargs)`` yields maps coarse to fine, the last equal to the
    method's own result, with ``kwargs`` the method's parameters named in ``params``. Applies only while
    parameter ``when[0]`` has the value ``when[1]``. Each yielded map's ``extra`` holds its ``level`` and how
    many of the ``windows`` were ``evaluated`` so far."""

    levels: Callable[..., Iterator[Attribution]]
    params: tuple[str, ...]
    when: tuple[str, Any] | None = None
    level: str = "level"
    evaluated: str = "evaluated"
    windows: str = "windows"

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether the chosen parameter values allow drawing coarse maps first."""
        return self.when is None or values.get(self.when[0]) == self.when[1]


@dataclass(frozen=True)
class DetailsView:
    """What the Explain page shows about a result beyond its map; every part is optional."""

    alternative_maps: AlternativeMaps | None = None
    rgb: RgbPanel | None = None
    scored_windows: ScoredWindows | None = None
    segments: Segments | None = None
    sampling: Sampling | None = None
    progressive: Progressive | None = None


@dataclass(frozen=True)
class MethodSpec:
    """One attribution method: registry ``name``, human ``label``, the function, whether its map is signed, its
    parameters, a one-line ``description``, whether it is ``slow`` (worth a progress bar) and its details view.
    ``takes_progress`` is set by ``register`` from the function's signature."""

    name: str
    label: str
    fn: Callable[..., Attribution]
    signed: bool
    params: tuple[ParamSpec, ...] = ()
    description: str = ""
    slow: bool = False
    details: DetailsView = DetailsView()
    takes_progress: bool = field(default=False)


@dataclass(frozen=True)
class Composite:
    """Several methods' per-colour-channel images side by side, listed with the methods under ``name``: each
    member has an ``RgbPanel`` and runs with its default parameters; ``caption`` explains what to compare."""

    name: str
    label: str
    members: tuple[str, ...]
    caption: str = ""


METHODS: dict[str, MethodSpec] = {}
COMPOSITES: dict[str, Composite] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method; ``takes_progress`` is set from the function's signature."""
    takes = "progress" in inspect.signature(spec.fn).parameters
    spec = dataclasses.replace(spec, params=tuple(spec.params), takes_progress=takes)
    METHODS[spec.name] = spec
    return spec


def register_composite(view: Composite) -> Composite:
    """Add (or replace) a side-by-side entry; every member must be a registered method with an ``RgbPanel``."""
    bad = [m for m in view.members if m not in METHODS or METHODS[m].details.rgb is None]
    if bad or view.name in METHODS:
        raise ValueError(f"composite {view.name!r}: {bad or 'its name is a method'} cannot be shown side by side")
    COMPOSITES[view.name] = view
    return view


def defaults(method: str) -> dict[str, Any]:
    """The default parameter values of a method."""
    return {p.name: p.default for p in get_spec(method).params}


def get_spec(method: str) -> MethodSpec:
    """The spec of a registered method; InputError naming the available ones otherwise."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
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
        raise InputError(f"{method} has no parameter(s) {sorted(unknown)}; it takes {sorted(known) or 'none'}")
    kwargs = {**defaults(method), **params}
    if spec.takes_progress and progress is not None:
        kwargs["progress"] = progress
    t0 = time.perf_counter()
    with oom_as_error(device_of(handle), spec.label):  # batched methods retry smaller batches first
        res = spec.fn(handle, x, int(target), **kwargs)
    res.seconds = time.perf_counter() - t0
    kwargs.pop("progress", None)
    res.params = {**kwargs, **res.params}
    return res


_LAYER = ParamSpec("layer", "layer", None, label="Layer",
                   help="The layer whose feature maps are weighted, by module path; (default): the last "
                        "convolutional block (coarse but class-specific; earlier layers give finer, noisier maps).")
_SEED = dict(label="Random seed", advanced=True)
_RGB = DetailsView(rgb=RgbPanel())  # gradient-style methods: the signed per-channel image beside the map

for _spec in (
    MethodSpec("saliency", "Saliency (|gradient|)", _sal.saliency, False,
               description="Simonyan et al. 2014: max over colour channels of |∂ logit / ∂ pixel|.", details=_RGB),
    MethodSpec("gradient", "Gradient (signed)", _sal.gradient, True,
               description="∂ logit / ∂ pixel summed over colour channels.", details=_RGB),
    MethodSpec("grad_x_input", "Gradient × input", _sal.grad_x_input, True,
               description="Gradient times the normalized input, summed over colour channels.", details=_RGB),
    MethodSpec("backprop", "Backprop (plain gradient image)", _gb.backprop, False,
               description="The raw gradient shown as a colour image, as in the guided-backprop slides.", details=_RGB),
    MethodSpec("guided_backprop", "Guided backprop", _gb.guided_backprop, False,
               description="Springenberg et al. 2015: only positive gradients pass through active ReLUs.",
               details=_RGB),
    MethodSpec("deconvnet", "Deconvnet", _gb.deconvnet, False,
               description="Zeiler & Fergus 2014: ReLUs pass positive gradients regardless of the forward pass.",
               details=_RGB),
    MethodSpec("cam", "CAM", _cam.cam, True,
               description="Zhou et al. 2016: Σ_k w_k A_k of the last feature map; only for conv → GAP → linear."),
    MethodSpec("gradcam", "Grad-CAM", _cam.gradcam, False, (_LAYER,),
               description="Selvaraju et al. 2017: feature maps weighted by their mean gradient, then ReLU."),
    MethodSpec("gradcam_pp", "Grad-CAM++", _cam.gradcam_pp, False, (_LAYER,),
               description="Chattopadhay et al. 2018: pixel-weighted positive gradients as channel weights."),
    MethodSpec("guided_gradcam", "Guided Grad-CAM", _cam.guided_gradcam, False, (_LAYER,),
               description="Guided backprop multiplied by the upsampled Grad-CAM map.", details=_RGB),
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
        description="Smilkov et al. 2017: gradients averaged over noisy copies of the image.", slow=True,
        details=_RGB),
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
        description="Sundararajan et al. 2017: gradients integrated along the path from a baseline.", slow=True,
        details=_RGB),
):
    register(_spec)

register_composite(Composite(
    "backprop_trio", "Backprop vs guided backprop vs deconvnet (side by side)",
    ("backprop", "guided_backprop", "deconvnet"),
    caption="Grey is zero; colours show the per-channel gradient sign and size (99.5th percentile scaling). "
            "Guided backprop keeps only positive gradients through active ReLUs, which gives the crisp edge images "
            "of the slides; the plain gradient is noisy; deconvnet ignores the forward pass."))

_LRP_EPS = ParamSpec("epsilon", "choice", 1e-6, choices=(1e-6, 0.01, 0.1, 0.25, 1.0), label="ε of the dense layers",
                     help="Added to the denominators of the ε rule in the fully connected layers: tiny (the "
                          "default) redistributes exactly as LRP-0; larger values absorb weak or contradictory "
                          "contributions and give sparser maps.",
                     choice_labels=((1e-6, "10⁻⁶ (≈ LRP-0)"), (0.01, "0.01"), (0.1, "0.1"), (0.25, "0.25"),
                                    (1.0, "1")))
_LRP_NOTE = ("The target logit is sent back layer by layer (Zennit); batch norm is merged into the convolutions, "
             "activations pass relevance through, the map sums to the logit minus what biases and ε absorb.")
for _spec in (
    MethodSpec("lrp_epsilon_plus_flat", "LRP (ε-plus-flat)", _lrp.lrp_epsilon_plus_flat, True, (_LRP_EPS,),
               description="Bach et al. 2015, Montavon et al. 2019: flat rule on the first layer, z⁺ on the other "
                           "convolutions, ε on the dense layers. " + _LRP_NOTE, details=_RGB),
    MethodSpec("lrp_epsilon_gamma_box", "LRP (ε-γ-box)", _lrp.lrp_epsilon_gamma_box, True, (
        _LRP_EPS,
        ParamSpec("gamma", "float", 0.25, min=0.0, max=1.0, step=0.05, label="γ of the convolutions",
                  help="Extra weight the γ rule gives to positive contributions in the convolutions: 0 is plain "
                       "LRP-0 there; larger values favour positive evidence and give less noisy maps.")),
               description="Montavon et al. 2019: z^B box rule on the first convolution (the pixel range), γ on the "
                           "other convolutions, ε on the dense layers. " + _LRP_NOTE, details=_RGB),
    MethodSpec("lrp_alpha2_beta1", "LRP (α2β1)", _lrp.lrp_alpha2_beta1, True, (_LRP_EPS,),
               description="Bach et al. 2015: α = 2, β = 1 on every convolution (positive parts counted twice, "
                           "negative once against), ε on the dense layers. " + _LRP_NOTE, details=_RGB),
):
    register(_spec)

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
_DROPS = AlternativeMaps("score (logit) drop", (AlternativeMap("probability drop", "prob_drop"),))

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
    description="Zeiler & Fergus 2014: drop of the target score when a patch is hidden.", slow=True,
    details=DetailsView(alternative_maps=_DROPS, progressive=Progressive(
        _coarse_occlusion, ("window", "stride", "baseline", "blur_sigma", "batch_size"),
        when=("engine", "incremental")))))

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
    slow=True, details=DetailsView(alternative_maps=_DROPS, scored_windows=ScoredWindows())))

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
    description="Ribeiro et al. 2016: a linear model on superpixels fitted to perturbed images.", slow=True,
    details=DetailsView(segments=Segments())))

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
                "and a stop once the ranking is stable; the page shows the stability.", slow=True,
    details=DetailsView(segments=Segments(), sampling=Sampling())))
