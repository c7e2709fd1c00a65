"""Exact incremental inference for occlusion (Krypton, Nakandala et al. SIGMOD 2019).

A window changes only a small region of each feature map. The unoccluded image is run once and every node's output
cached; then, for a batch of windows, each layer recomputes only the box its input change can reach (the box grows
through convolutions and pools by their receptive field; residual adds take the union of their operands' boxes;
global pooling / flatten / linear make it the whole map). All windows of a batch share one box size per layer (a
box is shifted inwards at the borders rather than clipped, so recomputing a little more than needed keeps it exact),
which lets one conv call serve the whole batch. Box inputs are gathered from the cached map with the changed box
pasted in, padded as the layer pads (zeros for convolutions, −inf for max pooling), so borders are exact.

The network is walked as the torch.fx graph of its private, batch-norm-folded, eval-mode copy
(``copies.traced_copy``; the shared ``handle.net`` is never touched). Nodes the walker does not know are computed on
whole maps (still exact). A net fx cannot trace raises ``copies.NotTraceable``; callers fall back to the batched
scorer (``interpret.engines.batched``), which has the same ``scores`` interface. Scores only: the occlusion methods
build the maps.

``tau`` < 1 is Krypton's approximation: a box larger than ``tau`` × the map side is cut to that size around its
centre, so changes far from the window are dropped. ``tau=1`` (default) is exact.

Written by hand: neither captum nor torchvision has incremental inference.
"""
from __future__ import annotations

import copy
import functools
import math
import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from models.handle import ModelHandle

from interpret.core.memory import oom_as_error, run_chunks
from interpret.core.tensors import cpu64, on_device
from interpret.engines.copies import traced_copy


def bf16_pays(device: torch.device | str | None = None) -> bool:
    """Whether the approximate occlusion's bfloat16 convolutions of a window's change pay on ``device`` (default
    CPU). CUDA: on GPUs with bfloat16 tensor cores (compute capability 8.0+). MPS: no (kept in float32). CPU: where
    it has AMX tiles (recent Xeons), ~2.5× on dense convolutions; elsewhere, AVX-512 BF16 included, the conversions
    cost what the narrower arithmetic saves: on a 2-core AMD EPYC (AVX-512 BF16, no AMX) the approximate
    occlusion took the same CPU time on one thread and 1.6× the wall time on two (measured while other work
    shared the cores). Only the approximate mode ever uses it; exact occlusion stays in the input's dtype."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(dev)[0] >= 8
    if dev.type != "cpu":
        return False
    return _cpu_has_amx()


@functools.lru_cache(maxsize=1)
def _cpu_has_amx() -> bool:
    init = getattr(getattr(torch._C, "_cpu", None), "_init_amx", None)
    if init is not None:
        try:
            return bool(init())
        except Exception:  # noqa: BLE001 - unknown: assume no AMX
            return False
    try:
        with open("/proc/cpuinfo") as fh:
            return "amx_bf16" in fh.read()
    except OSError:
        return False


# ---- per-node values -------------------------------------------------------------------------------------------

@dataclass
class Box:
    """The changed box of a 4-D map for each window: values ``t`` (B, C, h, w), top-left ``r0``, ``c0`` (B,)."""

    t: torch.Tensor
    r0: np.ndarray
    c0: np.ndarray

    @property
    def h(self) -> int:
        return self.t.shape[2]

    @property
    def w(self) -> int:
        return self.t.shape[3]


@dataclass
class Dense:
    """A per-window value computed in full: (B, …)."""

    t: torch.Tensor


_POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.GELU,
                      nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Identity, nn.Dropout, nn.BatchNorm2d, nn.Mish)
_POINTWISE_FUNCS = {F.relu, F.relu6, torch.relu, F.hardtanh, F.silu, torch.sigmoid, F.sigmoid, F.hardswish,
                    F.gelu, torch.tanh, F.leaky_relu, F.dropout, F.hardsigmoid}
_POINTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "contiguous"}
_BINARY = {operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.sub, operator.iadd, operator.imul,
           operator.isub}
_OUT_OF_PLACE = {operator.iadd: torch.add, operator.imul: torch.mul, operator.isub: torch.sub}
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub"}


def _window(base: torch.Tensor, val: Box | None, r0: np.ndarray, c0: np.ndarray, h: int, w: int,
            pad: tuple[int, int] = (0, 0), padval: float = 0.0, based: torch.Tensor | None = None,
            zero_base: bool = False) -> torch.Tensor:
    """(B, C, h, w), channels-last: for each window, rows r0…r0+h, cols c0…c0+w of the padded map (padded
    coordinates), i.e. the cached map with that window's changed box pasted in. ``based`` is ``base`` padded.
    ``zero_base``: paste into zeros instead (``base`` then only gives the shape).

    One gather of whole pixel vectors (C contiguous floats) from the cached map plus one gather-and-scatter of the
    changed pixels: about twice as fast as gathering both and blending with ``torch.where``."""
    if val is not None and pad == (0, 0) and val.h == h and val.w == w and np.array_equal(val.r0, r0) \
            and np.array_equal(val.c0, c0):
        return val.t
    if val is None and pad == (0, 0) and h == base.shape[2] and w == base.shape[3]:
        return base.expand(len(r0), -1, -1, -1)  # the whole cached map: a broadcast view, nothing gathered
    if val is not None and (zero_base or _covers(val, base)):
        # the changed box sits at the same place in every window and the rest is padding (zeros, or the whole
        # map is changed): one F.pad instead of a gather and a scatter
        off_r, off_c = val.r0 + pad[0] - r0, val.c0 + pad[1] - c0
        if (off_r == off_r[0]).all() and (off_c == off_c[0]).all():
            orr, occ = int(off_r[0]), int(off_c[0])
            if orr >= 0 and occ >= 0 and orr + val.h <= h and occ + val.w <= w and (
                    zero_base or (orr == pad[0] and occ == pad[1] and h - orr - val.h <= pad[0]
                                  and w - occ - val.w <= pad[1])):
                return F.pad(val.t, (occ, w - occ - val.w, orr, h - orr - val.h), value=0.0 if zero_base else padval)
    B, C = len(r0), base.shape[1]
    rr = r0[:, None] + np.arange(h)[None, :]  # padded coords
    cc = c0[:, None] + np.arange(w)[None, :]
    if zero_base:
        out = torch.zeros(B * h * w, C, dtype=val.t.dtype, device=val.t.device)
    else:
        if based is None:
            based = _pad(base, pad, padval)
        Wp = based.shape[3]
        table = based.permute(0, 2, 3, 1).reshape(-1, C)
        idx = (rr[:, :, None] * Wp + cc[:, None, :]).reshape(-1)
        out = table.index_select(0, torch.from_numpy(idx).to(table.device))
    if val is not None:
        relr = rr - pad[0] - val.r0[:, None]
        relc = cc - pad[1] - val.c0[:, None]
        vr = (relr >= 0) & (relr < val.h)
        vc = (relc >= 0) & (relc < val.w)
        valid = (vr[:, :, None] & vc[:, None, :]).reshape(-1)
        pos = np.flatnonzero(valid)
        if len(pos):
            src = ((np.arange(B)[:, None, None] * val.h + relr[:, :, None]) * val.w + relc[:, None, :]).reshape(-1)
            vt = val.t.permute(0, 2, 3, 1).reshape(-1, C)
            dev = out.device
            out.index_copy_(0, torch.from_numpy(pos).to(dev), vt.index_select(0, torch.from_numpy(src[pos]).to(dev)))
    return out.view(B, h, w, C).permute(0, 3, 1, 2)


def _covers(val: Box, t: torch.Tensor) -> bool:
    """Whether the changed box is the whole of map ``t``."""
    return val.h == t.shape[2] and val.w == t.shape[3]


def _pad(t: torch.Tensor, pad: tuple[int, int], padval: float) -> torch.Tensor:
    if pad == (0, 0):
        return t.contiguous(memory_format=torch.channels_last)
    return F.pad(t, (pad[1], pad[1], pad[0], pad[0]), value=padval).contiguous(memory_format=torch.channels_last)


def _out_range(r0: np.ndarray, h: int, k: int, s: int, p: int, n_out: int, tau: float) -> tuple[np.ndarray, int]:
    """Output box of a sliding window layer (kernel k, stride s, pad p) whose input changed in rows r0…r0+h."""
    lo = np.maximum(-((-(r0 + p - k + 1)) // s), 0)
    hi = np.minimum((r0 + h - 1 + p) // s, n_out - 1)
    size = int(max(1, (hi - lo + 1).max()))
    return _fit(lo, hi, size, n_out, tau)


def _fit(lo: np.ndarray, hi: np.ndarray, size: int, n: int, tau: float) -> tuple[np.ndarray, int]:
    size = min(size, n)
    if tau < 1.0:
        cap = max(1, math.ceil(tau * n))
        if size > cap:  # Krypton's approximation: keep a tau-sized box around the centre
            centre = (lo + hi) // 2
            return np.clip(centre - cap // 2, 0, n - cap), cap
    return np.clip(np.minimum(lo, n - size), 0, None), size


def _union(a: Box, b: Box, H: int, W: int, tau: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    lo_r, hi_r = np.minimum(a.r0, b.r0), np.maximum(a.r0 + a.h, b.r0 + b.h) - 1
    lo_c, hi_c = np.minimum(a.c0, b.c0), np.maximum(a.c0 + a.w, b.c0 + b.w) - 1
    r0, h = _fit(lo_r, hi_r, int((hi_r - lo_r + 1).max()), H, tau)
    c0, w = _fit(lo_c, hi_c, int((hi_c - lo_c + 1).max()), W, tau)
    return r0, c0, h, w


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


_QUANTUM = 8


def _batches(n: int, batch_size: int) -> list[tuple[int, int, int]]:
    """(start, stop, padded size) of the batches for ``n`` windows: about equal batches (131 windows at batch_size
    64: 48 + 48 + 35, not 64 + 64 + 3, whose tail costs as much per window as a batch of 3), every size a multiple
    of 8 (the last padded up; batches of up to 8 are not padded). Why multiples: each new batch size makes new
    oneDNN kernels for every layer, and the approximate occlusion's passes come in sizes that differ from image to
    image — a photo's first run cost 0.9–1.1 s against 0.6–0.7 s for a repeat until sizes were rounded; at most 8
    sizes ever occur per batch_size, and the exact map pads at most 7 windows per call."""
    if n <= 0:
        return []
    q = _QUANTUM if batch_size >= _QUANTUM else 1
    n_batches = math.ceil(n / batch_size)
    size = min(max(q, q * math.ceil(math.ceil(n / n_batches) / q)), max(batch_size // q * q, 1))
    out = []
    for s in range(0, n, size):
        e = min(n, s + size)
        k = e - s
        out.append((s, e, k if k <= q else min(size, q * math.ceil(k / q))))  # 1…8 windows: not padded
    return out


def _padded_size(k: int) -> int:
    """The size a batch of ``k`` windows from ``_batches`` is padded to (1…8 windows: not padded)."""
    return k if k <= _QUANTUM else _QUANTUM * math.ceil(k / _QUANTUM)


# ---- the engine ------------------------------------------------------------------------------------------------

class IncrementalOcclusion:
    """Target scores of occluded copies of one image by incremental inference on a traced copy of the net.

    ``engine = IncrementalOcclusion(handle)`` (traces once per net; raises ``NotTraceable``), then
    ``engine.scores(x, base, corners, window, target)`` → (logit0, logits, prob0, probs).
    ``delta_dtype`` (e.g. torch.bfloat16): approximate mode, a conv's output box is its cached float32 output plus
    the convolution, in that dtype, of its input's change (exact algebra, as convolutions are linear; only the
    change is rounded).
    """

    def __init__(self, handle: ModelHandle, tau: float = 1.0, channels_last: bool = True,
                 delta_dtype: torch.dtype | None = None) -> None:
        self.gm = traced_copy(handle)
        self.delta_dtype = delta_dtype
        self._low: dict = {}
        self._by_dtype: dict = {torch.float32: self.gm}
        self.tau = float(tau)
        self.channels_last = channels_last
        self.modules = dict(self.gm.named_modules())
        self.nodes = list(self.gm.graph.nodes)
        self._base = None  # (image, its version, net copy, channels-last image, cached node outputs, padded maps)

    # one full pass, caching every node's output
    def _base_pass(self, x: torch.Tensor) -> dict:
        env: dict = {}
        mods = self.modules
        for n in self.nodes:
            if n.op == "placeholder":
                env[n] = x
            elif n.op == "output":
                env[n] = fx.node.map_arg(n.args[0], lambda a: env[a])
            else:
                args = fx.node.map_arg(n.args, lambda a: env[a])
                kwargs = dict(fx.node.map_arg(n.kwargs, lambda a: env[a]))
                if "inplace" in kwargs:
                    kwargs["inplace"] = False
                if n.op == "call_module":
                    env[n] = mods[n.target](*args, **kwargs)
                elif n.op == "call_function":  # out of place: every node's cached output must stay as computed
                    env[n] = _OUT_OF_PLACE.get(n.target, n.target)(*args, **kwargs)
                elif n.op == "call_method":
                    name = n.target[:-1] if n.target.endswith("_") and not n.target.endswith("__") else n.target
                    env[n] = getattr(args[0], name)(*args[1:], **kwargs)
                elif n.op == "get_attr":
                    t = getattr(self, "_cur", self.gm)
                    for part in n.target.split("."):
                        t = getattr(t, part)
                    env[n] = t
        return env

    def scores(self, x: torch.Tensor, base: torch.Tensor, corners: Sequence[tuple[int, int]],
               window: int | tuple[int, int], target: int, batch_size: int = 64,
               progress: Callable[[float], None] | None = None) -> tuple[float, np.ndarray, float, np.ndarray]:
        """Logit of ``target`` for ``x`` and for each copy of ``x`` whose window at ``corners`` (top-left, clipped at
        the border as captum clips) is replaced by ``base``, and the same for the softmax probability:
        (logit0, logits (n,), prob0, probs (n,)). Float64 inputs run in float64."""
        wh, ww = _pair(window)
        x_in, x = x, on_device(self.gm, x.detach())
        base = on_device(self.gm, base.detach()).to(x.dtype)
        dtype = x.dtype
        with torch.inference_mode():
            if dtype not in self._by_dtype:  # e.g. float64 in tests: a private copy, the cached one stays float32
                self._by_dtype[dtype] = copy.deepcopy(self.gm).to(dtype)
            self._cur = self._by_dtype[dtype]
            self.modules = dict(self._cur.named_modules())
            hit = self._base
            if hit is not None and hit[0] is x_in and hit[1] == x_in._version and hit[2] is self._cur:
                x, env, padded = hit[3], hit[4], hit[5]  # same image as the last call (coarse-to-fine levels)
            else:
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with oom_as_error(x.device, "occlusion (the unoccluded image's cached maps)"):
                    env, padded = self._base_pass(x), {}
                self._base = (x_in, x_in._version, self._cur, x, env, padded)
            out0 = env[self.nodes[-1]]
            logit0 = float(out0[0, target])
            prob0 = float(torch.softmax(cpu64(out0), dim=1)[0, target])
            corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
            res = np.empty(len(corners), dtype=np.float64)
            probs = np.empty(len(corners), dtype=np.float64)
            n = len(corners)

            def step(s: int, e: int) -> None:
                cs, size = corners[s:e], _padded_size(e - s)
                if size > e - s:  # padded with copies of its last window (boxes are maxima: unchanged)
                    cs = np.concatenate([cs, np.repeat(cs[-1:], size - (e - s), axis=0)])
                out = self._patched(env, padded, x, base, cs, wh, ww)[: e - s]
                res[s:e] = cpu64(out[:, target]).numpy()
                probs[s:e] = torch.softmax(cpu64(out), dim=1)[:, target].numpy()
                if progress is not None:
                    progress(min(1.0, e / n))

            run_chunks(n, batch_size, step, device=x.device, what="occlusion (incremental inference)",
                       hint="a smaller batch size, a larger window or stride, or the CPU",
                       plan=lambda m, b: [(s, e) for s, e, _ in _batches(m, b)])
        return logit0, res, prob0, probs

    def _patched(self, env: dict, padded: dict, x: torch.Tensor, base: torch.Tensor, cs: np.ndarray,
                 wh: int, ww: int) -> torch.Tensor:
        H, W = x.shape[2], x.shape[3]
        B = len(cs)
        tau = self.tau
        r0 = np.clip(cs[:, 0], 0, H - wh)
        c0 = np.clip(cs[:, 1], 0, W - ww)
        xw = _window(x, None, r0, c0, wh, ww)
        bw = _window(base, None, r0, c0, wh, ww)
        rr = r0[:, None] + np.arange(wh)
        cc = c0[:, None] + np.arange(ww)
        mr = (rr >= cs[:, :1]) & (rr < cs[:, :1] + wh)
        mc = (cc >= cs[:, 1:]) & (cc < cs[:, 1:] + ww)
        m = torch.from_numpy(mr[:, :, None] & mc[:, None, :])[:, None].to(x.device)
        vals: dict = {}
        cl = torch.channels_last if self.channels_last else torch.contiguous_format
        for n in self.nodes:
            if n.op == "placeholder":
                vals[n] = Box(torch.where(m, bw, xw).contiguous(memory_format=cl), r0, c0)
                continue
            if n.op in ("get_attr",):
                vals[n] = None
                continue
            if n.op == "output":
                v = vals[n.args[0]] if isinstance(n.args[0], fx.Node) else None
                return self._dense(env, n.args[0], v, B)
            ins = [a for a in n.all_input_nodes]
            changed = [a for a in ins if vals.get(a) is not None]
            if not changed:
                vals[n] = None
                continue
            vals[n] = self._step(n, env, vals, padded, B, tau, cl)
        raise RuntimeError("graph has no output")

    def _dense(self, env: dict, node, v, B: int) -> torch.Tensor:
        if v is None:
            t = env[node]
            return t.expand(B, *t.shape[1:])
        if isinstance(v, Dense):
            return v.t
        t = env[node]
        return _window(t, v, np.zeros(B, np.int64), np.zeros(B, np.int64), t.shape[2], t.shape[3])

    def _step(self, n, env, vals, padded, B, tau, cl):
        a0 = n.args[0] if n.args else None
        v0 = vals.get(a0) if isinstance(a0, fx.Node) else None
        if n.op == "call_module":
            mod = self.modules[n.target]
            if isinstance(v0, Box) and len(n.args) == 1 and not n.kwargs:
                if isinstance(mod, nn.Conv2d) and mod.padding_mode == "zeros" and not isinstance(mod.padding, str):
                    return self._sliding(n, a0, v0, env, padded, mod, mod.kernel_size, mod.stride, mod.padding,
                                         mod.dilation, 0.0, cl, tau)
                if isinstance(mod, nn.MaxPool2d) and not mod.ceil_mode and not mod.return_indices:
                    return self._sliding(n, a0, v0, env, padded, mod, _pair(mod.kernel_size),
                                         _pair(mod.stride or mod.kernel_size), _pair(mod.padding),
                                         _pair(mod.dilation), -math.inf, cl, tau)
                if isinstance(mod, nn.AvgPool2d) and not mod.ceil_mode and mod.divisor_override is None and (
                        mod.count_include_pad or _pair(mod.padding) == (0, 0)):
                    return self._sliding(n, a0, v0, env, padded, mod, _pair(mod.kernel_size),
                                         _pair(mod.stride or mod.kernel_size), _pair(mod.padding), (1, 1), 0.0,
                                         cl, tau)
                if isinstance(mod, _POINTWISE_MODULES):
                    return Box(mod(v0.t), v0.r0, v0.c0)
        elif n.op == "call_function" or n.op == "call_method":
            fn = n.target
            pointwise = fn in _POINTWISE_FUNCS if n.op == "call_function" else fn in _POINTWISE_METHODS
            others = [a for a in n.all_input_nodes if a is not a0]
            if pointwise and isinstance(v0, Box) and not others:
                args = (v0.t,) + tuple(fx.node.map_arg(n.args[1:], lambda a: env[a]))
                kwargs = dict(fx.node.map_arg(n.kwargs, lambda a: env[a]))
                kwargs.pop("inplace", None)
                t = fn(*args, **kwargs) if n.op == "call_function" else getattr(args[0], fn.rstrip("_"))(
                    *args[1:], **kwargs)
                return Box(t, v0.r0, v0.c0)
            binary = fn in _BINARY if n.op == "call_function" else fn in _BINARY_METHODS
            if binary and len(n.args) == 2 and not n.kwargs and all(isinstance(a, fx.Node) for a in n.args):
                a, b = n.args
                ta, tb = env[a], env[b]
                va, vb = vals.get(a), vals.get(b)
                if ta.dim() == 4 and ta.shape == tb.shape and not isinstance(va, Dense) and not isinstance(vb, Dense):
                    H, W = ta.shape[2], ta.shape[3]
                    if va is None or vb is None:
                        r0, c0, h, w = (vb or va).r0, (vb or va).c0, (vb or va).h, (vb or va).w
                    else:
                        r0, c0, h, w = _union(va, vb, H, W, tau)
                    xa = _window(ta, va, r0, c0, h, w)
                    xb = _window(tb, vb, r0, c0, h, w)
                    if n.op == "call_method":
                        t = getattr(xa, fn.rstrip("_"))(xb)
                    else:
                        t = _OUT_OF_PLACE.get(fn, fn)(xa, xb)
                    return Box(t.contiguous(memory_format=cl), r0, c0)
        # anything else: whole per-window values (still exact)
        args = fx.node.map_arg(n.args, lambda a: self._dense(env, a, vals.get(a), B))
        kwargs = dict(fx.node.map_arg(n.kwargs, lambda a: self._dense(env, a, vals.get(a), B)))
        if "inplace" in kwargs:
            kwargs["inplace"] = False
        if n.op == "call_module":
            t = self.modules[n.target](*args, **kwargs)
        elif n.op == "call_function":
            t = _OUT_OF_PLACE.get(n.target, n.target)(*args, **kwargs)
        else:
            name = n.target[:-1] if n.target.endswith("_") and not n.target.endswith("__") else n.target
            t = getattr(args[0], name)(*args[1:], **kwargs)
        if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[0] == B and t.shape[1:] == env[n].shape[1:]:
            z = np.zeros(B, np.int64)
            return Box(t, z, z)
        return Dense(t)

    def _sliding(self, n, a0, v0: Box, env, padded, mod, k, s, p, d, padval, cl, tau) -> Box:
        tin, tout = env[a0], env[n]
        keff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
        ro, h = _out_range(v0.r0, v0.h, keff[0], s[0], p[0], tout.shape[2], tau)
        co, w = _out_range(v0.c0, v0.w, keff[1], s[1], p[1], tout.shape[3], tau)
        hin, win = (h - 1) * s[0] + keff[0], (w - 1) * s[1] + keff[1]
        if isinstance(mod, nn.Conv2d) and self.delta_dtype is not None and mod.groups == 1:
            # approximate: a convolution is linear, so out = cached out + conv(change of its input); only the change
            # (zero outside the changed box) goes through the low-precision (bf16, AMX) convolution, the cached
            # part stays float32 (dense convs only: bf16 depthwise convolutions are no faster on CPU)
            change = (v0.t - _window(tin, None, v0.r0, v0.c0, v0.h, v0.w)).to(self.delta_dtype)
            wl = self._low.get(n.target)
            if wl is None:
                wl = self._low[n.target] = mod.weight.to(self.delta_dtype)
            if _covers(v0, tin) and h == tout.shape[2] and w == tout.shape[3]:  # whole maps: conv pads itself
                t = F.conv2d(change, wl, None, s, p, d, mod.groups)
            else:
                delta = _window(tin, Box(change, v0.r0, v0.c0), ro * s[0], co * s[1], hin, win, p, 0.0,
                                zero_base=True)
                t = F.conv2d(delta.contiguous(memory_format=cl), wl, None, s, 0, d, mod.groups)
            return Box(t.to(tout.dtype) + _window(tout, None, ro, co, h, w), ro, co)
        if _covers(v0, tin) and h == tout.shape[2] and w == tout.shape[3]:  # whole maps: the layer pads itself
            xin = v0.t.contiguous(memory_format=cl)
            if isinstance(mod, nn.Conv2d):
                return Box(F.conv2d(xin, mod.weight, mod.bias, s, p, d, mod.groups), ro, co)
            if isinstance(mod, nn.MaxPool2d):
                return Box(F.max_pool2d(xin, k, s, p, d), ro, co)
            return Box(F.avg_pool2d(xin, k, s, p, count_include_pad=mod.count_include_pad), ro, co)
        key = (a0, p, padval)
        if key not in padded:
            padded[key] = _pad(tin, p, padval)
        xin = _window(tin, v0, ro * s[0], co * s[1], hin, win, p, padval, padded[key])
        xin = xin.contiguous(memory_format=cl)
        if isinstance(mod, nn.Conv2d):
            t = F.conv2d(xin, mod.weight, mod.bias, s, 0, d, mod.groups)
        elif isinstance(mod, nn.MaxPool2d):
            t = F.max_pool2d(xin, k, s, 0, d)
        else:
            t = F.avg_pool2d(xin, k, s, 0)
        return Box(t, ro, co)
