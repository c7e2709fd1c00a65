"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"), cascading version.

Starting from the output, the parameterised blocks of a *copy* of the network are re-initialised one after the
other, cumulatively, and every method's map is recomputed after each step. A method whose map hardly changes
while the network's knowledge is destroyed (guided backprop, famously) explains the image more than the model.
Similarity to the original map: Spearman rank correlation of |map| (and SSIM), as in the paper.
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

from .metrics import spearman, ssim
from .result import Attribution

MethodLike = str | Callable[..., Attribution]
RNG_OFFSET = 0x5A17_0000


@dataclass
class SanityResult:
    """Maps of each method after each cascade step; step 0 is the copy before any randomisation.

    ``steps[i]`` names the block randomised at step i (cumulatively with all before it); ``maps[m][i]`` is
    method m's map then, ``rank_corr[m][i]`` / ``ssim[m][i]`` its similarity to ``original[m]``, the map of the
    shared model itself (|map| for the rank correlation, as Adebayo et al.). Step 0's similarity is 1 when the
    copy is faithful.
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
            net(x)
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


def randomize_(module: nn.Module, gen: torch.Generator) -> None:
    """Re-initialise, in place, every parameter of ``module`` (a private copy) from ``gen``.

    Weights of conv / linear layers: PyTorch's default Kaiming-uniform; their biases: U(±1/√fan_in); 1-D parameters
    of normalisation layers: γ ~ U(0, 1), β ~ U(−½, ½) — random, so the learned scale is gone as well;
    batch-norm running statistics are reset to mean 0, variance 1 (learned too; kept, they would normalise the
    new random activations with the old scale and silence whole layers).
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.reset_running_stats()
            if not _own_params(m):
                continue
            weight = getattr(m, "weight", None)
            fan_in = None
            if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
                fan_in = weight[0].numel()
            for name, p in m.named_parameters(recurse=False):
                if p.dim() >= 2:
                    nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=gen)
                elif fan_in is not None:
                    b = 1 / math.sqrt(fan_in)
                    p.uniform_(-b, b, generator=gen)
                elif name == "weight":
                    p.uniform_(0.0, 1.0, generator=gen)
                else:
                    p.uniform_(-0.5, 0.5, generator=gen)


def _run(h: ModelHandle, x: torch.Tensor, target: int, method: MethodLike, params: dict) -> Attribution:
    if callable(method):
        return method(h, x, target, **params)
    from .methods import explain

    return explain(h, x, target, method, **params)


def _rank_corr(original: np.ndarray, new: np.ndarray) -> float:
    """Spearman of |map|s; a map that became constant (e.g. Grad-CAM all zero after ReLU) keeps no ranking: 0."""
    r = spearman(np.abs(original), np.abs(new))
    return 0.0 if np.isnan(r) and np.ptp(original) > 0 else r


def _name(method: MethodLike) -> str:
    return method if isinstance(method, str) else getattr(method, "__name__", repr(method))


def cascading_randomization(handle: ModelHandle, x: torch.Tensor, target: int, methods: list[MethodLike],
                            layers: list[str] | None = None, seed: int = 0,
                            method_params: dict[str, dict] | None = None,
                            progress: Callable[[float], None] | None = None) -> SanityResult:
    """Randomise ``layers`` (module names; default ``default_blocks``) from the top down, cumulatively, on a deep
    copy of the net, recomputing each method's map (via ``interpret.methods.explain``, or a callable with the method
    contract) after every step. The given names are sorted by forward-pass order, last first.

    The copy is made under the model's lock (so no per-call hook of another thread is copied) and wrapped in a
    temporary handle with its own lock; the shared model is never modified.
    """
    t0 = time.perf_counter()
    target = int(target)
    method_params = method_params or {}
    with handle.lock:
        net = copy.deepcopy(handle.net).eval()
    modules = dict(net.named_modules())
    layers = list(layers) if layers is not None else default_blocks(net)
    bad = [n for n in layers if n not in modules or not n]
    if bad:
        raise ValueError(f"unknown layer(s) {bad}; blocks of this model: {default_blocks(net)}")
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
    for i, step in enumerate(steps):
        if i > 0:
            randomize_(modules[step], gen)
        for j, (m, n) in enumerate(zip(methods, names)):
            res = _run(temp, x, target, m, method_params.get(n, {}))
            maps[n].append(res.map)
            signed[n] = res.signed
            if progress is not None:
                progress((i * len(methods) + j + 1) / total)
    rank = {n: [_rank_corr(original[n], mp) for mp in maps[n]] for n in names}
    sim = {n: [ssim(original[n], mp) for mp in maps[n]] for n in names}
    return SanityResult(target, names, steps, original, maps, rank, sim, time.perf_counter() - t0, signed)
