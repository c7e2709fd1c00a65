"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"), cascading version.

Starting from the output, the parameterised blocks of a *copy* of the network are re-initialised one after the
other, cumulatively, and every method's map is recomputed after each step. A method whose map hardly changes
while the network's knowledge is destroyed (guided backprop, famously) explains the image more than the model.
Similarity to the original map: Spearman rank correlation of |map| (and SSIM), as in the paper. A map with no
ranking (constant, e.g. all zero, or non-finite) is reported as degenerate with NaN similarity, never as ρ = 0.

Keeping the randomised network alive. Two things silenced EfficientNet-Lite0 (ReLU6 + batch norm) from
``_blocks.15`` down, so that every map was exactly zero:

* Blocks *between* the listed steps stayed trained. With steps ``_fc, _blocks.15, …`` the head's trained batch
  norm ``_bn1`` (shift β − γμ/σ negative in all 1280 channels, median −4.6, tuned to inputs of std 3.3) saw
  inputs ten times smaller (std 0.34) from the randomised block below, so every input of the last ReLU6 was
  negative (max −1.6): the head output, and so every gradient, was exactly 0. A step now randomises everything
  from the top down to its block (every module first called at or after it), as the cascade means.
* Running statistics reset to mean 0 / variance 1 do not normalise, and PyTorch's default conv initialisation
  (Kaiming-uniform with a = √5, Var w = 1/(3·fan_in)) shrinks the second moment about 3× per conv before ReLU
  halves it, while the random shifts β stay: each randomised block shrank the input-dependent part of the signal
  relative to the constant shifts (on the coffee photo the largest input gradient fell from 1.6 to 3e-16 over the
  21 blocks, about 5× per block; on a small ReLU6 net Grad-CAM's map became all zero). Weights are now drawn
  from He's variance-preserving Kaiming-uniform (Var w = 2/fan_in), and each
  randomised normalisation layer normalises with the statistics of the randomised copy's *own* activations on
  the explained input (mean and variance per channel, re-estimated after every step in one forward pass) — the
  normalisation a freshly initialised network would apply, not the learned one. Nothing learned survives
  (weights, affine parameters and statistics all come from the random copy), and every layer again sees
  unit-variance inputs whose variation comes from the image: over the same 21 blocks the largest input gradient
  now stays between 0.1 and 4.7.

The result's figure (ρ per step) is ``interpret.plots.evaluation.rank_corr_figure``.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from models.handle import ModelHandle

from interpret.attribution.registry import explain
from interpret.core.errors import InputError
from interpret.core.result import Attribution
from interpret.core.tensors import on_device, wide
from interpret.evaluation.metrics import spearman, ssim

MethodLike = str | Callable[..., Attribution]
RNG_OFFSET = 0x5A17_0000


@dataclass
class SanityResult:
    """Maps of each method after each cascade step; step 0 is the copy before any randomisation.

    ``steps[i]`` names the block down to which the network is randomised at step i (everything above it too);
    ``maps[m][i]`` is method m's map then, ``rank_corr[m][i]`` / ``ssim[m][i]`` its similarity to
    ``original[m]``, the map of the shared model itself (|map| for the rank correlation, as Adebayo et al.).
    Step 0's similarity is 1 when the copy is faithful. ``degenerate[m][i]`` is True when that map or the
    original has no ranking to compare (constant, e.g. all zero, or non-finite); its similarities are then NaN
    and ``problems[m][i]`` says what is wrong (None where nothing is).
    """

    target: int
    methods: list[str]
    steps: list[str]
    original: dict[str, np.ndarray]
    maps: dict[str, list[np.ndarray]]
    rank_corr: dict[str, list[float]]
    ssim: dict[str, list[float]]
    seconds: float = 0.0
    signed: dict[str, bool] = field(default_factory=dict)
    degenerate: dict[str, list[bool]] = field(default_factory=dict)
    problems: dict[str, list[str | None]] = field(default_factory=dict)


def _own_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


def _record(order: dict[str, int], name: str) -> None:
    order.setdefault(name, len(order))  # returns None: a pre-hook's return value would replace the inputs


def execution_order(net: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Module name → index of its first call in one forward pass (modules never called are left out).

    Runs on whatever net it is given with temporary hooks removed in ``finally`` — call it on a private copy.
    """
    order: dict[str, int] = {}
    handles = []
    try:
        for name, m in net.named_modules():
            if name:
                handles.append(m.register_forward_pre_hook(
                    lambda mod, inp, name=name: _record(order, name)))
        with torch.no_grad():
            net(on_device(net, x))
    finally:
        for h in handles:
            h.remove()
    return order


def default_blocks(net: nn.Module) -> list[str]:
    """Blocks to randomise: the root's children that hold parameters, with containers (Sequential, ModuleList)
    of several parameterised children split into those children (ResNet's layer4.1, EfficientNet's _blocks.15…)."""
    blocks = []
    for name, child in net.named_children():
        if not any(True for _ in child.parameters()):
            continue
        sub = [(n, c) for n, c in child.named_children() if any(True for _ in c.parameters())]
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(sub) > 1:
            blocks.extend(f"{name}.{n}" for n, _ in sub)
        else:
            blocks.append(name)
    return blocks


def _is_norm_with_stats(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats


def _randomize_one(m: nn.Module, gen: torch.Generator) -> None:
    """Re-initialise the parameters ``m`` owns (not its children's) and reset its running statistics."""
    if _is_norm_with_stats(m):
        m.reset_running_stats()
    weight = getattr(m, "weight", None)
    fan_in = weight[0].numel() if isinstance(weight, torch.Tensor) and weight.dim() >= 2 else None
    for name, p in m.named_parameters(recurse=False):
        # drawn on the CPU (``gen`` is a CPU generator) and copied to the parameter's device: the randomised
        # network is the same on every device for a seed
        q = torch.empty(p.shape, dtype=p.dtype)
        if p.dim() >= 2:
            nn.init.kaiming_uniform_(q, a=0.0, nonlinearity="relu", generator=gen)
        elif fan_in is not None:
            b = 1 / math.sqrt(fan_in)
            q.uniform_(-b, b, generator=gen)
        elif name == "weight":
            q.uniform_(0.0, 1.0, generator=gen)
        else:
            q.uniform_(-0.5, 0.5, generator=gen)
        p.copy_(q)


def randomize_(module: nn.Module, gen: torch.Generator) -> None:
    """Re-initialise, in place, every parameter of ``module`` (a private copy) from ``gen``.

    Weights of conv / linear layers: He's Kaiming-uniform for ReLU nets (Var w = 2/fan_in, so the second moment
    survives a conv + ReLU; PyTorch's default a = √5 shrinks it 6×); their biases: U(±1/√fan_in); 1-D
    parameters of normalisation layers: γ ~ U(0, 1), β ~ U(−½, ½) — random, so the learned scale is gone as well;
    batch-norm running statistics are reset to mean 0, variance 1 (learned too). ``recalibrate_`` then sets them
    from the randomised network's own activations.
    """
    with torch.no_grad():
        for m in module.modules():
            _randomize_one(m, gen)


def recalibrate_(net: nn.Module, x: torch.Tensor, norms: list[nn.Module]) -> None:
    """Set the running mean and variance of each layer in ``norms`` (batch / instance norms of a private copy) to
    the per-channel mean and (biased) variance of its input on ``x``, in one forward pass: each layer is updated
    just before it runs, so later layers see the already re-normalised activations of earlier ones.

    A layer with fewer than two values per channel (a 1-D batch norm on one image) keeps mean 0 / variance 1:
    there is nothing to estimate. A constant channel gets variance 1 (it becomes β; dividing by √ε would only
    amplify rounding noise).
    Temporary hooks, removed in ``finally``.
    """
    targets = {id(m): m for m in norms if _is_norm_with_stats(m)}
    done: set[int] = set()

    def pre(m: nn.Module, inputs: tuple) -> None:
        if id(m) in done:  # a module called twice: its statistics come from the first call
            return
        done.add(id(m))
        z = wide(inputs[0]).transpose(0, 1).reshape(inputs[0].shape[1], -1)
        if z.shape[1] < 2:
            m.reset_running_stats()
            return
        mean = z.mean(1)
        var = z.var(1, unbiased=False)
        m.running_mean.copy_(mean)
        m.running_var.copy_(torch.where(var > 0, var, torch.ones_like(var)))

    handles = [m.register_forward_pre_hook(pre) for m in targets.values()]
    try:
        with torch.no_grad():
            net(on_device(net, x.detach()))
    finally:
        for h in handles:
            h.remove()


def _run(h: ModelHandle, x: torch.Tensor, target: int, method: MethodLike, params: dict) -> Attribution:
    if callable(method):
        return method(h, x, target, **params)
    return explain(h, x, target, method, **params)


def map_problem(m: np.ndarray) -> str | None:
    """Why a map has no ranking to compare — "map is constant (all zero)", "… (c everywhere)", "map has
    non-finite values" — or None when it has one. (|map| is ranked, so a map constant in |value| counts too.)"""
    a = np.asarray(m, dtype=np.float64)
    if a.size == 0:
        return "map is empty"
    if not np.isfinite(a).all():
        return "map has non-finite values"
    mag = np.abs(a)
    if np.ptp(mag) > 0:
        return None
    if mag.flat[0] == 0:
        return "map is constant (all zero)"
    return f"map is constant (|value| = {mag.flat[0]:.3g} everywhere)"


def _problem(original: np.ndarray, new: np.ndarray) -> str | None:
    p = map_problem(new)
    if p is None and (q := map_problem(original)) is not None:
        p = f"the original {q}"
    return p


def _rank_corr(original: np.ndarray, new: np.ndarray) -> float:
    """Spearman of |map|s; NaN when either has no ranking (constant or non-finite): there is nothing to compare."""
    if _problem(original, new) is not None:
        return float("nan")
    return spearman(np.abs(original), np.abs(new))


def _ssim(original: np.ndarray, new: np.ndarray) -> float:
    return float("nan") if _problem(original, new) is not None else ssim(original, new)


def _name(method: MethodLike) -> str:
    return method if isinstance(method, str) else getattr(method, "__name__", repr(method))


def _modules_from(modules: dict[str, nn.Module], order: dict[str, int], block: str, start: int) -> list[str]:
    """Modules holding parameters or running statistics inside ``block`` or first called at or after ``start``
    (the block's first call): everything from the top of the network down to the block, in forward order."""
    def below(n: str) -> bool:
        return n == block or n.startswith(block + ".")

    names = [n for n, m in modules.items() if n and (_own_params(m) or _is_norm_with_stats(m))
             and (below(n) or order.get(n, -1) >= start >= 0)]
    return sorted(names, key=lambda n: order.get(n, len(order)))


def cascading_randomization(handle: ModelHandle, x: torch.Tensor, target: int, methods: list[MethodLike],
                            layers: list[str] | None = None, seed: int = 0,
                            method_params: dict[str, dict] | None = None,
                            progress: Callable[[float], None] | None = None) -> SanityResult:
    """Randomise a deep copy of the net from the top down, cumulatively, recomputing each method's map (via
    ``interpret.attribution.registry.explain``, or a callable with the method contract) after every step.

    ``layers`` (module names; default ``default_blocks``) are the steps, sorted by forward-pass order, last
    first; step L randomises everything from the top down to L — the blocks between two listed steps too, so no
    trained layer ever sits above a random one. After each step the randomised normalisation layers are
    re-estimated on ``x`` (``recalibrate_``; see the module docstring for why).

    The copy is made under the model's lock (so no per-call hook of another thread is copied) and wrapped in a
    temporary handle with its own lock; the shared model is never modified.
    """
    t0 = time.perf_counter()
    target = int(target)
    method_params = method_params or {}
    x = on_device(handle, x)
    with handle.lock:
        net = copy.deepcopy(handle.net).eval()  # on the handle's device, like the network it copies
    modules = dict(net.named_modules())
    layers = list(layers) if layers is not None else default_blocks(net)
    bad = [n for n in layers if n not in modules or not n]
    if bad:
        raise InputError(f"unknown layer(s) {bad}; blocks of this model: {default_blocks(net)}")
    order = execution_order(net, x)
    first = {n: min((i for m, i in order.items() if m == n or m.startswith(n + ".")), default=-1) for n in layers}
    layers = sorted(layers, key=lambda n: first[n], reverse=True)

    temp = ModelHandle(key=f"{handle.key}#randomized", name=f"{handle.name} (randomized copy)", net=net,
                       preprocess=handle.preprocess, labels=handle.labels, source=f"copy of {handle.source}",
                       family=handle.family, notes="cascading randomization", lock=threading.RLock())
    names = [_name(m) for m in methods]
    maps: dict[str, list[np.ndarray]] = {n: [] for n in names}
    signed: dict[str, bool] = {}
    original = {n: _run(handle, x, target, m, method_params.get(n, {})).map for m, n in zip(methods, names)}
    # Offset so that seed s never replays torch's default initialisation after torch.manual_seed(s).
    gen = torch.Generator().manual_seed(RNG_OFFSET + int(seed))
    steps = ["none"] + layers
    total = len(steps) * len(methods)
    randomised: list[str] = []
    for i, step in enumerate(steps):
        if i > 0:
            fresh = [n for n in _modules_from(modules, order, step, first[step]) if n not in randomised]
            with torch.no_grad():
                for n in fresh:
                    _randomize_one(modules[n], gen)
            randomised += fresh
            recalibrate_(net, x, [modules[n] for n in randomised])
        for j, (m, n) in enumerate(zip(methods, names)):
            res = _run(temp, x, target, m, method_params.get(n, {}))
            maps[n].append(res.map)
            signed[n] = res.signed
            if progress is not None:
                progress((i * len(methods) + j + 1) / total)
    problems = {n: [_problem(original[n], mp) for mp in maps[n]] for n in names}
    degenerate = {n: [p is not None for p in problems[n]] for n in names}
    rank = {n: [_rank_corr(original[n], mp) for mp in maps[n]] for n in names}
    sim = {n: [_ssim(original[n], mp) for mp in maps[n]] for n in names}
    return SanityResult(target, names, steps, original, maps, rank, sim, time.perf_counter() - t0, signed,
                        degenerate, problems)


def degenerate_steps(res: SanityResult, method: str) -> list[tuple[str, str]]:
    """(step, problem) for every step at which ``method``'s map had no ranking to compare."""
    return [(s, p) for s, p in zip(res.steps, res.problems.get(method, [])) if p is not None]
