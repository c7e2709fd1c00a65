"""Rounding-error bounds derived from the arithmetic, so float32 results can be compared with a float64 oracle
under a tolerance that holds on any CPU: any summation order or blocking, any convolution algorithm that sums
products (direct, im2col/GEMM, oneDNN's blocked kernels), batch norm folded into the convolution or not.

Model (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 2–3): each float32 operation returns its
exact result on its (already rounded) inputs times (1 + θ), |θ| ≤ u = 2⁻²⁴. To first order in u the error of any
scalar s of the output (a logit, a probability) is a sum over every rounding k in the computation,

    e = Σ_k c_k θ_k,     c_k = (∂s/∂o) · (the value rounded at k),

and the roundings inside one op output o_i are bounded through its terms: a dot product of n products and a
bias rounds at most n + 1 partial sums and n products t_j. Whatever the order, a partial sum lies between −N_i and
P_i, the sums of its negative and positive terms, and Σ|t_j| ≤ M_i = P_i + N_i (so Σt_j² ≤ M_i²): n + 1 roundings
of size max(P_i, N_i) = (M_i + |o_i|)/2 and one of size M_i cover it, for Σ|c| (Higham's γ_{n+1}) and for Σc²
alike; M_i is the op on absolute values (|W| ⊛ |x| + |b| for a conv), o_i = P_i − N_i its output.
The gradients ∂s/∂o are taken on a float64 copy of the network, with a zero perturbation added to each op's output
so that ∂s/∂o is that perturbation's gradient. Two bounds follow:

- worst case: |e| ≤ u Σ_k |c_k| (always holds). It is tight for small nets; for deep random-weight nets it
  overestimates by ~10⁶ because the roundings never all align.
- probabilistic (Higham & Mary, SIAM J. Sci. Comput. 41, 2019): the θ_k are independent with mean zero, so by
  Hoeffding's inequality |e| ≤ λ·u·√(Σ_k c_k²) except with probability 2·exp(−λ²/2); λ = 8 makes that
  2.5·10⁻¹⁴ per bounded value (a suite run compares ~10⁵ values). Roundings shared by many outputs (a folded
  batch-norm scale, a folded weight) are one θ each, with their summed coefficient (per channel, per weight), so
  shared errors are not averaged away. Independence is the model's one assumption (not the summation order);
  the bound still lies 10²–10⁴ above the errors seen, mostly because partial sums are bounded order-free.

The bound used is the smaller of the two. Exact ops (ReLU, ReLU6, max pooling, flatten, concat, copies) add
nothing; an op without a rounding model raises, so no rounding goes uncounted. Terms of second order are
O(Σ n·u) ≤ 1e-3 relative to the first-order ones here; ``SAFETY = 2`` covers them.

Folding batch norm into the preceding conv (``torch.fx`` ``fuse``, TorchScript freezing, the incremental
engine's copy) rounds α = w/√(v + ε) (4 ops, shared per channel), W·α (once per weight, shared by all positions)
and the bias (b − m)·α + β (4 ops per channel): these are counted as roundings too, so one bound serves the
plain and the folded evaluation alike.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

U32 = 2.0 ** -24  # unit roundoff of float32 (round to nearest)
U64 = 2.0 ** -53  # float64
LAMBDA = 8.0  # Hoeffding: P(|e| > λ u √Σc²) ≤ 2 exp(−λ²/2) ≈ 2.5e-14 per bounded value
SAFETY = 2.0   # second-order terms (see the module docstring)


def gamma(n: float, u: float = U32) -> float:
    """γ_n = n·u / (1 − n·u): the relative error bound of n chained roundings (a sum of n + 1 terms)."""
    assert n * u < 0.5, n
    return n * u / (1 - n * u)


_EXACT = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6, F.hardtanh,
          F.hardtanh_, torch.clamp, torch.Tensor.clamp, F.max_pool2d, F.adaptive_max_pool2d, F.dropout, F.pad,
          torch.flatten, torch.Tensor.flatten, torch.cat, torch.Tensor.view, torch.Tensor.reshape, torch.reshape,
          torch.Tensor.contiguous, torch.Tensor.__getitem__, torch.Tensor.expand, torch.Tensor.clone,
          torch.Tensor.permute, torch.Tensor.squeeze, torch.Tensor.unsqueeze, torch.Tensor.to, torch.Tensor.float,
          torch.Tensor.double, torch.stack, torch.zeros_like, torch.Tensor.detach}
_ADD = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__,
        torch.Tensor.add_, torch.sub, torch.Tensor.sub, torch.Tensor.__sub__}
_MUL = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul_,
        torch.Tensor.__imul__}
_INPLACE = {torch.Tensor.add_, torch.Tensor.__iadd__, torch.Tensor.mul_, torch.Tensor.__imul__}


def _per_image(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


@dataclass
class _Term:
    """The roundings inside one op output: per (k, mag) part, ``k`` roundings per element, each of |value| ≤
    ``mag``; ``shared`` maps the output gradient to (Σ|c|, Σc²) per image of roundings shared across elements
    (folded parameters)."""

    eps: torch.Tensor
    parts: list[tuple[float, torch.Tensor]]
    shared: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None


def _dot_parts(out: torch.Tensor, mag: torch.Tensor, n: int) -> list[tuple[float, torch.Tensor]]:
    """The roundings of a conv or linear output ``out`` with n products per element and M = ``mag``: n + 1 partial
    sums within [−N, P], max(P, N) = (M + |out|)/2, and products of total size M (module docstring)."""
    return [(n + 1, (mag + out.detach().abs()) / 2), (1, mag)]


class _Tracker(TorchFunctionMode):
    """Adds a zero perturbation (requires grad) to the output of every rounding op and records its roundings."""

    def __init__(self) -> None:
        super().__init__()
        self.terms: list[_Term] = []

    def _perturb(self, out, k, mag, shared=None, inplace=False, parts=None):
        eps = torch.zeros_like(out, requires_grad=True)
        self.terms.append(_Term(eps, parts if parts is not None else [(k, mag.detach())], shared))
        return out.add_(eps) if inplace else out + eps

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d):
            return self._conv(func, args, kwargs)
        if func is F.batch_norm:
            return self._batch_norm(func, args, kwargs)
        if func is F.linear:
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            out = func(*args, **kwargs)
            with torch.no_grad():
                mag = F.linear(x.abs(), w.abs(), None if b is None else b.abs())
            return self._perturb(out, None, None, parts=_dot_parts(out, mag, w.shape[1]))
        if func in _ADD or func in _MUL:
            a, b = torch.as_tensor(args[0]), torch.as_tensor(args[1])
            with torch.no_grad():
                mag = (a * b).abs() if func in _MUL else a.abs() + abs(kwargs.get("alpha", 1)) * b.abs()
            out = func(*args, **kwargs)
            return self._perturb(out, 1, mag, inplace=func in _INPLACE)
        if func is F.adaptive_avg_pool2d:
            x, size = args[0], (args[1] if len(args) > 1 else kwargs["output_size"])
            oh, ow = (size, size) if isinstance(size, int) else size
            oh, ow = oh or x.shape[-2], ow or x.shape[-1]
            n = (-(-x.shape[-2] // oh) + 1) * (-(-x.shape[-1] // ow) + 1)  # ≥ the largest adaptive window
            out = func(*args, **kwargs)
            with torch.no_grad():
                mag = F.adaptive_avg_pool2d(x.abs(), (oh, ow))
            return self._perturb(out, n + 1, mag)  # n − 1 additions and a division; partial sums / n ≤ mag
        if func is F.avg_pool2d:
            out = func(*args, **kwargs)
            ks = args[1] if len(args) > 1 else kwargs["kernel_size"]
            n = ks * ks if isinstance(ks, int) else ks[0] * ks[1]
            with torch.no_grad():
                mag = func(args[0].abs(), *args[1:], **kwargs)
            return self._perturb(out, n + 1, mag)
        if func in (torch.sum, torch.Tensor.sum):
            out = func(*args, **kwargs)
            n = args[0].numel() // max(out.numel(), 1)
            with torch.no_grad():
                mag = func(args[0].abs(), *args[1:], **kwargs)
            return self._perturb(out, n, mag)
        if func in (torch.mean, torch.Tensor.mean):
            out = func(*args, **kwargs)
            n = args[0].numel() // max(out.numel(), 1)
            with torch.no_grad():
                mag = func(args[0].abs(), *args[1:], **kwargs)
            return self._perturb(out, n + 1, mag)
        if func in (torch.sigmoid, torch.Tensor.sigmoid):
            out = func(*args, **kwargs)  # 1 / (1 + exp(−x)): exp within 1 ulp (2 roundings), an add, a division
            return self._perturb(out, 4, out.detach().abs())
        out = func(*args, **kwargs)
        if func not in _EXACT and isinstance(out, torch.Tensor) and out.is_floating_point() and out.requires_grad:
            raise NotImplementedError(f"no rounding model for {getattr(func, '__name__', func)}")
        return out

    def _conv(self, func, args, kwargs):
        a = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args), **kwargs)
        x, w, b = a["input"], a["weight"], a.get("bias")
        geo = (a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1), a.get("groups", 1))
        out = func(*args, **kwargs)
        with torch.no_grad():
            mag = F.conv2d(x.abs(), w.abs(), None if b is None else b.abs(), *geo)
            parts = _dot_parts(out, mag, w[0].numel())
        xd, wd = x.detach(), w.detach()

        def folded_weight(gr: torch.Tensor):
            # A folded weight W·α is rounded once and shared by every position: coefficient c_w = W_w·∂s/∂W_w =
            # W_w Σ_i g_i x_iw. Σ_w |c_w| ≤ Σ_i |g_i| M_i; by Cauchy–Schwarz Σ_w c_w² ≤ Σ_w W_w² (Σ_i g_i²)(Σ_i x_iw²),
            # and Σ_i x_iw² over the positions i of one output channel is at most that input channel's Σ x².
            nb, groups = gr.shape[0], geo[3]
            g2 = (gr ** 2).sum((2, 3)).reshape(nb, groups, -1)
            x2 = (xd ** 2).sum((2, 3)).reshape(nb, groups, -1)
            w2 = (wd ** 2).sum((2, 3)).reshape(groups, -1, wd.shape[1])
            return _per_image(gr.abs() * mag), torch.einsum("bgo,goc,bgc->b", g2, w2, x2)

        res = self._perturb(out, None, None, parts=parts)
        res._roundoff_conv = (self.terms[-1], b, folded_weight)  # a batch norm that follows may be folded into it
        return res

    def _batch_norm(self, func, args, kwargs):
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        a = dict(zip(names, args), **kwargs)
        assert not a.get("training", False), "bounds are for eval-mode batch norm"
        x, m, v = a["input"], a["running_mean"], a["running_var"]
        w, bb, e = a.get("weight"), a.get("bias"), a.get("eps", 1e-5)
        out = func(*args, **kwargs)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        conv = getattr(x, "_roundoff_conv", None)
        cb = None
        if conv is not None:  # folding rounds the conv's weights: count that on the conv's term
            conv[0].shared, cb = conv[2], conv[1]
        with torch.no_grad():
            alpha = ((torch.ones_like(m) if w is None else w) / torch.sqrt(v + e)).view(shape)
            beta = (torch.zeros_like(m) if bb is None else bb).view(shape)
            mv, conv_b = m.view(shape), (0.0 if cb is None else cb.detach().abs().view(shape))
            # CPU inference computes x·α + (b − m·α): two roundings per element
            mag = x.abs() * alpha.abs() + beta.abs() + mv.abs() * alpha.abs()
            xd = x.detach()
            # per channel: α (4 roundings: add, sqrt, division, product with w), its effect Σ g·α·(x − m); the
            # shift b − m·α or, folded, (b_conv − m)·α + β (4 roundings), effect (|b_conv| + |m|)|α| + |β| times Σ g
            shift = (conv_b + mv.abs()) * alpha.abs() + beta.abs()

        def per_channel(gr: torch.Tensor) -> torch.Tensor:
            if x.dim() == 4:
                sa = (gr * alpha * (xd - mv)).sum((2, 3))
            else:
                sa = gr * alpha.view(1, -1) * (xd - mv.view(1, -1))
            sg = (gr.sum((2, 3)) if x.dim() == 4 else gr) * shift.reshape(1, -1)
            return 4 * (sa.abs().sum(1) + sg.abs().sum(1)), 4 * ((sa ** 2).sum(1) + (sg ** 2).sum(1))

        return self._perturb(out, 2, mag, per_channel)


class Bounded(NamedTuple):
    value: np.ndarray   # score(net(x)): (B,) or (B, S), in the working dtype
    bound: np.ndarray   # bound on |result of a float32 evaluation − exact|, same shape
    logits: np.ndarray  # the logits (B, C)


def rounding_bound(net: nn.Module, x: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor],
                   u: float = U32, dtype: torch.dtype = torch.float64, u_fold: float | None = None) -> Bounded:
    """For each image of the batch ``x``: ``score(net(x))`` and a bound on how far an evaluation of the net in
    arithmetic of unit roundoff ``u`` (float32 by default; batch norm folded or not) can put it from the exact
    value. ``score`` maps the logits (B, C) to one value per image (B,) or several (B, S); it is differentiated
    exactly and its own rounding is the caller's to add (``softmax_rounding``). The work runs on a copy of the net
    in ``dtype``: float64 also gives the oracle values; float32 is several times faster where only the bound is
    needed (the bound's own relative error, ~1e-5, is covered by SAFETY). ``u_fold`` (default ``u``) is the unit
    roundoff of the parameter folding alone (per-channel α and shift, folded weights): float32 folding before a
    float64 run is ``u=U64, u_fold=U32``. The caller's net is untouched."""
    net64 = copy.deepcopy(net).to(dtype).eval()
    for p in net64.parameters():
        p.requires_grad_(False)
    for m in net64.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    tracker = _Tracker()
    with torch.enable_grad():
        with tracker:
            z = net64(x.detach().to(dtype))
        s = score(z)
        cols = s.reshape(s.shape[0], -1)
        sums = [cols[:, j].sum() for j in range(cols.shape[1])]  # recorded here: the caller may be under no_grad
    assert s.shape[0] == x.shape[0] and s.dim() <= 2, s.shape
    terms = tracker.terms
    uf = u if u_fold is None else u_fold
    bounds = []
    for j in range(cols.shape[1]):
        grads = torch.autograd.grad(sums[j], [t.eps for t in terms], allow_unused=True,
                                    retain_graph=j + 1 < cols.shape[1])  # images are independent: per-image
        worst = torch.zeros(x.shape[0], dtype=torch.float64)  # Σ|c| · unit roundoff
        squares = torch.zeros(x.shape[0], dtype=torch.float64)  # Σc² · unit roundoff²
        with torch.no_grad():
            for gr, t in zip(grads, terms):
                if gr is None:
                    continue
                ga = gr.abs()
                for k, mag in t.parts:
                    c = ga * mag
                    worst += u * k * _per_image(c).double()
                    squares += u ** 2 * k * _per_image(c * c).double()
                if t.shared is not None:
                    a, sq = t.shared(gr)
                    worst += uf * a.double()
                    squares += uf ** 2 * sq.double()
        bounds.append(SAFETY * torch.minimum(worst, LAMBDA * torch.sqrt(squares)))
    bound = torch.stack(bounds, 1).reshape(s.shape)
    return Bounded(s.detach().double().numpy(), bound.numpy(), z.detach().double().numpy())


def softmax_rounding(logits64: np.ndarray, target: int | np.ndarray, u: float = U32) -> np.ndarray:
    """Bound on the rounding of a float32 softmax itself at ``target`` (per row of ``logits64``): the shift by the
    maximum (relative error u·|z − max| carried into each exp), exp within 1 ulp (2u), a sum of C terms (γ_C) and
    the scaling by 1/sum (two roundings): |p̂ − p| ≤ p·(2·(2u + u·R) + γ_{C+2}), R = max − min of the row.
    ``target``: one class for every row, or one per row."""
    z = np.asarray(logits64, dtype=np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p = p / p.sum(1, keepdims=True)
    r = z.max(1) - z.min(1)
    pt = p[np.arange(len(p)), np.broadcast_to(target, (len(p),))]
    return SAFETY * pt * (2 * (2 * u + u * r) + gamma(z.shape[1] + 2, u))
