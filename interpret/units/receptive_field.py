"""Receptive fields computed analytically for any CNN: per layer r (size), S (effective stride, "jump") and
P (effective padding, the offset of the first unit's field), per axis, traced through the model's graph.

Conventions (Araujo et al., Distill 2019, "Computing Receptive Fields of Convolutional Neural Networks"):
unit ``u`` of a layer sees input pixels ``u·S − P … u·S − P + r − 1``. A layer with kernel k, stride s,
padding p and dilation d on top of (r, S, P) gives::

    r' = r + (d·(k − 1)) · S        S' = s · S        P' = P + p · S

Where paths merge (residual add, concatenation) the field is the union of the paths' fields: the leftmost
start and the rightmost end, i.e. ``P = max Pᵢ`` and ``r = max(rᵢ − Pᵢ) + P`` (the "maximum over paths"; equal
to max rᵢ when the paths are centred alike, as in ResNets). ``ceil_mode`` pooling changes only the number
of output units, not the field of each unit. Dilated kernels leave holes in the field; r is its extent.

The geometry is carried along one forward pass on *fake* tensors (shapes, no arithmetic) by a thread-local
``TorchFunctionMode`` that sees every conv, pooling, padding, add and concatenation — functional ops included —
while per-call forward hooks name the outputs by module path (and call, for modules used several times).
This works for any network that runs, also those FX cannot trace, and never touches global state, so it is
safe on a model shared between threads. A second implementation over a ``torch.fx`` graph
(``rf_table(..., method="fx")``) is kept as an independent cross-check in the tests.
"""
from __future__ import annotations

import contextlib
import math
import threading
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from interpret.core.errors import InputError, NotDefined
from interpret.core.fx_trace import confined_trace
from interpret.core.hooks import hooked
from interpret.core.layers import capture, pick_call
from interpret.core.tensors import device_of, on_device, to_numpy

Pair = tuple[int, int]


def _pair(v: Any) -> Pair:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1])) if len(v) > 1 else (int(v[0]), int(v[0]))
    return (int(v), int(v))


@dataclass(frozen=True)
class RFRow:
    """One layer (one call of one module, or one functional op) of the receptive-field table."""

    name: str  # module path ("features.28", "layer4.1.relu") or FX node name for functional ops ("add_3")
    call: int  # which call of that module this is (0-based); ResNet's relu is called twice per block
    node: str  # FX node name (unique)
    op: str  # module class or function name
    kernel: Pair
    stride: Pair
    padding: Pair  # top/left padding
    dilation: Pair
    r: Pair  # receptive field size (h, w)
    S: Pair  # effective stride (jump) (h, w)
    P: Pair  # effective padding (h, w)
    size: Pair  # output spatial size (h, w) at the table's input size
    channels: int = 0

    def box(self, unit: tuple[int, int]) -> tuple[int, int, int, int]:
        """Unclipped field of unit (i, j) as half-open (y0, x0, y1, x1) in input pixels."""
        i, j = unit
        y0 = i * self.S[0] - self.P[0]
        x0 = j * self.S[1] - self.P[1]
        return (y0, x0, y0 + self.r[0], x0 + self.r[1])


def _scalar(p: Pair) -> int | str:
    return p[0] if p[0] == p[1] else f"{p[0]}×{p[1]}"


@dataclass
class RFTable:
    """Receptive-field rows in execution order, plus where each container module's output is."""

    rows: list[RFRow]
    input_size: Pair
    method: str  # "fake" (fake-tensor pass), "forward" (real zeros pass) or "fx" (torch.fx graph)
    note: str = ""
    containers: dict[str, list[RFRow]] = field(default_factory=dict)  # blocks/stages: their output per call

    def calls(self, layer: str) -> list[RFRow]:
        """Every row that is an output of ``layer`` (module path, container path or node name)."""
        rows = [r for r in self.rows if r.name == layer]
        if not rows:
            rows = list(self.containers.get(layer, []))
        if not rows:
            rows = [r for r in self.rows if r.node == layer]
        return rows

    def row(self, layer: str, call_index: int = -1) -> RFRow:
        """The row of ``layer``'s call ``call_index`` (default: the last call, as in ``activations``)."""
        rows = self.calls(layer)
        if not rows:
            names = sorted({r.name for r in self.rows})
            raise InputError(f"no spatial layer {layer!r} in the receptive-field table; e.g. {', '.join(names[:12])} …")
        return pick_call(rows, layer, call_index)

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as plain dicts (square values as one number, otherwise "h×w") for a table widget."""
        out = []
        for r in self.rows:
            out.append({"layer": r.name if r.call == 0 else f"{r.name} (call {r.call})", "op": r.op,
                        "kernel": _scalar(r.kernel), "stride": _scalar(r.stride), "padding": _scalar(r.padding),
                        "dilation": _scalar(r.dilation), "r": _scalar(r.r), "S": _scalar(r.S), "P": _scalar(r.P),
                        "output": f"{r.channels}×{r.size[0]}×{r.size[1]}"})
        return out

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.to_records())


# ---------------------------------------------------------------------------------------------------------
# Geometry of single ops

@dataclass(frozen=True)
class _Geo:
    r: Pair
    S: Pair
    P: Pair


_IDENT = ((1, 1), (1, 1), (0, 0), (1, 1))  # kernel, stride, padding, dilation of a pointwise op


def _apply(g: _Geo, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> _Geo:
    r = tuple(g.r[a] + dilation[a] * (kernel[a] - 1) * g.S[a] for a in (0, 1))
    S = tuple(g.S[a] * stride[a] for a in (0, 1))
    P = tuple(g.P[a] + padding[a] * g.S[a] for a in (0, 1))
    return _Geo(r, S, P)  # type: ignore[arg-type]


def _merge(geos: list[_Geo]) -> _Geo:
    if len(geos) == 1:
        return geos[0]
    S = tuple(max(g.S[a] for g in geos) for a in (0, 1))
    P = tuple(max(g.P[a] for g in geos) for a in (0, 1))
    r = tuple(max(g.r[a] - g.P[a] for g in geos) + P[a] for a in (0, 1))
    return _Geo(r, S, P)  # type: ignore[arg-type]


def _conv_padding(padding: Any, kernel: Pair, dilation: Pair) -> Pair:
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        return tuple((dilation[a] * (kernel[a] - 1)) // 2 for a in (0, 1))  # "same": PyTorch pads left = total // 2
    return _pair(padding)


def _adaptive(in_size: Pair, out_size: Any) -> tuple[Pair, Pair]:
    """Kernel and stride of adaptive pooling: exact when the input divides evenly, else the largest window
    (an upper bound on the field) and the floor stride."""
    out = list(out_size) if isinstance(out_size, (tuple, list)) else [out_size, out_size]
    k, s = [], []
    for a in (0, 1):
        n, o = in_size[a], out[a] if out[a] is not None else in_size[a]
        if n % o == 0:
            k.append(n // o)
            s.append(n // o)
        else:
            k.append(max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o)))
            s.append(max(n // o, 1))
    return (k[0], k[1]), (s[0], s[1])


def _module_params(m: nn.Module, in_size: Pair):
    """(kernel, stride, padding, dilation, extra_pad_lr) of a spatial module, or None if pointwise.

    Raises NotImplementedError for ops whose field is not a box on a regular grid (upsampling)."""
    if isinstance(m, nn.Conv2d):
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        return k, _pair(m.stride), _conv_padding(m.padding, k, d), d
    if isinstance(m, nn.MaxPool2d):
        return _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), _pair(m.dilation)
    if isinstance(m, (nn.AvgPool2d, nn.LPPool2d)):
        k = _pair(m.kernel_size)
        return k, _pair(m.stride or k), _pair(getattr(m, "padding", 0)), (1, 1)
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        k, s = _adaptive(in_size, m.output_size)
        return k, s, (0, 0), (1, 1)
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
        p = m.padding if isinstance(m.padding, (tuple, list)) else (m.padding,) * 4
        return (1, 1), (1, 1), (int(p[2]), int(p[0])), (1, 1)
    if isinstance(m, (nn.ConvTranspose2d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
                      nn.PixelShuffle, nn.Unfold, nn.Fold)):
        raise NotImplementedError(f"receptive fields through {type(m).__name__} are not supported")
    return None


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _weight_shape(w: Any):
    if torch.is_tensor(w):
        return tuple(w.shape)
    return getattr(getattr(w, "meta", {}).get("tensor_meta"), "shape", None)  # an FX node


def _function_params(f: Any, args: tuple, kwargs: dict, in_size: Pair):
    """Same as ``_module_params`` for functional ops (F.conv2d, F.max_pool2d, F.pad, …); None if the op
    is not one of these (pointwise, merge or reduction: decided by the caller from the shapes)."""
    if f in (F.max_pool2d, torch.max_pool2d, F.max_pool2d_with_indices):
        k = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
        s = _arg(args, kwargs, 2, "stride", None)
        return (k, _pair(s) if s not in (None, [], ()) else k, _pair(_arg(args, kwargs, 3, "padding", 0)),
                _pair(_arg(args, kwargs, 4, "dilation", 1)))
    if f is F.avg_pool2d:
        k = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
        s = _arg(args, kwargs, 2, "stride", None)
        return k, _pair(s) if s not in (None, [], ()) else k, _pair(_arg(args, kwargs, 3, "padding", 0)), (1, 1)
    if f in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices):
        k, s = _adaptive(in_size, _arg(args, kwargs, 1, "output_size", 1))
        return k, s, (0, 0), (1, 1)
    if f is F.pad:
        p = list(_arg(args, kwargs, 1, "pad", (0, 0, 0, 0))) + [0, 0, 0, 0]
        return (1, 1), (1, 1), (int(p[2]), int(p[0])), (1, 1)
    if f in (F.conv2d, torch.conv2d):
        shape = _weight_shape(_arg(args, kwargs, 1, "weight", None))
        if shape is None:
            raise NotImplementedError("functional conv2d whose weight shape is not known")
        k, d = (int(shape[2]), int(shape[3])), _pair(_arg(args, kwargs, 5, "dilation", 1))
        return (k, _pair(_arg(args, kwargs, 3, "stride", 1)), _conv_padding(_arg(args, kwargs, 4, "padding", 0), k, d),
                d)
    if f in (F.interpolate, F.upsample, F.conv_transpose2d, F.pixel_shuffle, F.grid_sample, F.unfold, F.fold):
        raise NotImplementedError(f"receptive fields through {getattr(f, '__name__', f)} are not supported")
    return None


def _spatial_shape(node: fx.Node) -> tuple[int, ...] | None:
    tm = node.meta.get("tensor_meta")
    shape = getattr(tm, "shape", None)
    if shape is None or len(shape) != 4:
        return None
    return tuple(int(v) for v in shape)


def _flat_nodes(a: Any) -> list[fx.Node]:
    if isinstance(a, fx.Node):
        return [a]
    if isinstance(a, (list, tuple)):
        return [n for x in a for n in _flat_nodes(x)]
    if isinstance(a, dict):
        return [n for x in a.values() for n in _flat_nodes(x)]
    return []


def _shape_prop(gm: fx.GraphModule, input_size: Pair, lock) -> None:
    from torch.fx.passes.shape_prop import ShapeProp

    try:  # fake tensors: shapes without arithmetic, so VGG16 costs nothing
        from torch._subclasses.fake_tensor import FakeTensorMode

        fm = FakeTensorMode(allow_non_fake_inputs=True)
        ShapeProp(gm, fake_mode=fm).propagate(fm.from_tensor(torch.zeros(1, 3, *input_size, device=device_of(gm))))
    except Exception:  # pragma: no cover - older torch or an op without a fake kernel: real forward
        with lock, torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, 3, *input_size, device=device_of(gm)))


def _fx_table(net: nn.Module, input_size: Pair, lock) -> RFTable:
    with lock:
        gm = confined_trace(net)
    _shape_prop(gm, input_size, lock)
    mods = dict(net.named_modules())
    geo: dict[fx.Node, _Geo] = {}
    size: dict[fx.Node, Pair] = {}
    rows: list[RFRow] = []
    calls: dict[str, int] = {}
    stacks: list[tuple[fx.Node, list[str]]] = []
    for node in gm.graph.nodes:
        shp = _spatial_shape(node)
        if node.op == "placeholder":
            if shp is not None:
                geo[node], size[node] = _Geo((1, 1), (1, 1), (0, 0)), (shp[2], shp[3])
            continue
        if node.op in ("output", "get_attr") or shp is None:
            continue
        ins = [n for n in _flat_nodes((node.args, node.kwargs)) if n in geo]
        if not ins:
            continue
        g_in = _merge([geo[n] for n in ins])
        in_size = size[ins[0]]
        if node.op == "call_module":
            m = mods[node.target]
            params = _module_params(m, in_size)
            name, op = str(node.target), type(m).__name__
        else:
            params = (_function_params(node.target, node.args, node.kwargs, in_size)
                      if node.op == "call_function" else None)
            name = node.name
            op = getattr(node.target, "__name__", str(node.target))
        k, s, p, d = params if params is not None else _IDENT
        g = _apply(g_in, k, s, p, d)
        geo[node], size[node] = g, (shp[2], shp[3])
        c = calls.get(name, 0)
        calls[name] = c + 1
        rows.append(RFRow(name, c, node.name, op, k, s, p, d, g.r, g.S, g.P, (shp[2], shp[3]), shp[1]))
        st = node.meta.get("nn_module_stack") or {}
        stacks.append((node, [v[0] if isinstance(v, tuple) else str(v) for v in st.values()]))
    # Container modules (blocks, Sequential stages): output = last node of each contiguous run inside them.
    blocks: dict[str, list[str]] = {}
    prev: set[str] = set()
    last: dict[str, str] = {}
    for node, paths in stacks:
        cur = set(paths)
        for b in prev - cur:
            blocks.setdefault(b, []).append(last[b])
        for b in cur:
            last[b] = node.name
        prev = cur
    for b in prev:
        blocks.setdefault(b, []).append(last[b])
    leaf_names = {r.name for r in rows}
    by_node = {r.node: r for r in rows}
    containers = {b: [by_node[n] for n in v] for b, v in blocks.items() if b and b not in leaf_names}
    return RFTable(rows, input_size, "fx", "graph traced with torch.fx", containers)


def _tensors(a: Any) -> list[torch.Tensor]:
    if torch.is_tensor(a):
        return [a]
    if isinstance(a, (list, tuple)):
        return [t for x in a for t in _tensors(x)]
    if isinstance(a, dict):
        return [t for x in a.values() for t in _tensors(x)]
    return []


class _GeoMode(TorchFunctionMode):
    """Carries (r, S, P) along every torch function call of one forward pass.

    A TorchFunctionMode is thread-local, so unlike FX tracing (which patches ``nn.Module.__call__`` for the
    whole process) it cannot disturb another thread's forward pass on a shared model. Tensors are kept alive
    so that their ``id`` stays unique for the whole pass."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.geo: dict[int, _Geo] = {id(x): _Geo((1, 1), (1, 1), (0, 0))}
        self.keep: list[torch.Tensor] = [x]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [t for t in _tensors((args, kwargs)) if id(t) in self.geo]
        if not ins:
            return out
        outs = [t for t in _tensors(out) if t.dim() >= 3]
        if not outs:
            return out
        g = _merge([self.geo[id(t)] for t in ins])
        in_size = (int(ins[0].shape[-2]), int(ins[0].shape[-1]))
        params = _function_params(func, args, kwargs, in_size)
        for o in outs:
            size = (int(o.shape[-2]), int(o.shape[-1]))
            p = params
            if p is None:
                if any((int(t.shape[-2]), int(t.shape[-1])) == size for t in ins):
                    p = _IDENT  # pointwise, merge (add, cat, mul) or channel-wise op
                elif size == (1, 1):
                    p = (in_size, in_size, (0, 0), (1, 1))  # global reduction (x.mean((2, 3), keepdim=True))
                else:
                    name = getattr(func, "__name__", str(func))
                    raise NotImplementedError(f"receptive fields through {name} ({in_size} → {size}) are not supported")
            self.geo[id(o)] = _apply(g, *p)
            self.keep.append(o)
        return out


def _traced_table(net: nn.Module, input_size: Pair, lock) -> RFTable:
    """Run the network once with the geometry mode on and forward hooks on every module.

    First on fake tensors (shapes only: no arithmetic, VGG16 costs nothing); if the network cannot run on
    fake tensors (data-dependent control flow), on a real all-zeros input."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mods = [(n, m) for n, m in net.named_modules() if n]

    def run(fake: bool) -> tuple[list, str]:
        records: list[tuple[str, nn.Module, _Geo, tuple[int, ...], tuple[int, ...]]] = []
        x = torch.zeros(1, 3, *input_size, device=device_of(net))
        fm = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
        if fm is not None:
            x = fm.from_tensor(x)
        mode = _GeoMode(x)

        def rec(m, i, o, name):
            if torch.is_tensor(o) and o.dim() == 4 and id(o) in mode.geo:
                ishape = tuple(i[0].shape) if i and torch.is_tensor(i[0]) else tuple(o.shape)
                records.append((name, m, mode.geo[id(o)], ishape, tuple(o.shape)))

        with hooked(lock) as hs:
            for name, m in mods:
                hs.forward(m, lambda m, i, o, name=name: rec(m, i, o, name))
            with torch.no_grad(), (fm if fm is not None else contextlib.nullcontext()), mode:
                net(x)
        return records, ("fake" if fake else "forward")

    try:
        records, method = run(True)
        note = "traced on fake tensors (shapes only) with a thread-local torch function mode"
    except NotImplementedError:
        raise
    except Exception as e:  # an op without a fake kernel, data-dependent control flow
        records, method = run(False)
        note = (f"traced on a real all-zeros forward pass (fake tensors failed: {type(e).__name__}) "
                "with a thread-local torch function mode")
    rows: list[RFRow] = []
    containers: dict[str, list[RFRow]] = {}
    calls: dict[str, int] = {}
    for name, m, g, ishape, oshape in records:
        c = calls.get(name, 0)
        calls[name] = c + 1
        leaf = not any(True for _ in m.children())
        params = _module_params(m, (ishape[2], ishape[3])) if leaf else None
        k, st, pd, d = params if params is not None else _IDENT
        row = RFRow(name, c, f"{name}#{c}", type(m).__name__, k, st, pd, d, g.r, g.S, g.P,
                    (oshape[2], oshape[3]), oshape[1])
        if leaf:
            rows.append(row)
        else:
            containers.setdefault(name, []).append(row)
    return RFTable(rows, input_size, method, note, containers)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, RFTable]]" = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def rf_table(handle_or_net, input_size: tuple[int, int] | None = None, method: str = "auto") -> RFTable:
    """The receptive-field table of a ModelHandle (its input size) or a bare ``nn.Module`` (224² default).

    ``method="auto"``: one pass on fake tensors (a real zeros pass if that fails) under a thread-local torch
    function mode — safe on a shared model. ``"fx"``: the same numbers from a ``torch.fx`` graph, an
    independent implementation kept for cross-checking; FX tracing patches ``nn.Module.__call__`` for the
    whole process while it runs, so the app does not use it. Cached per network object and input size."""
    net = getattr(handle_or_net, "net", handle_or_net)
    lock = getattr(handle_or_net, "lock", None) or threading.RLock()
    if input_size is None:
        input_size = tuple(getattr(handle_or_net, "input_size", (224, 224)))
    input_size = _pair(input_size)
    with _CACHE_LOCK:
        hit = _CACHE.get(net, {}).get((input_size, method))
    if hit is not None:
        return hit
    if method == "fx":
        table = _fx_table(net, input_size, lock)
    elif method == "auto":
        table = _traced_table(net, input_size, lock)
    else:
        raise InputError(f"method must be 'auto' or 'fx', not {method!r}")
    with _CACHE_LOCK:
        _CACHE.setdefault(net, {})[(input_size, method)] = table
    return table


def unit_box(table_or_handle, layer: str, unit: tuple[int, int], input_size: tuple[int, int] | None = None,
             clip: bool = True, call_index: int = -1) -> tuple[int, int, int, int]:
    """Receptive field of unit (i, j) of ``layer`` as half-open (y0, x0, y1, x1) input pixels —
    ``img[y0:y1, x0:x1]`` is the patch. With ``clip`` the box is cut to the image (it may extend past it)."""
    if isinstance(table_or_handle, RFTable):
        table = table_or_handle
        if input_size is None:
            input_size = table.input_size
    else:
        table = rf_table(table_or_handle, input_size)
        input_size = table.input_size
    row = table.row(layer, call_index)
    y0, x0, y1, x1 = row.box(unit)
    if clip:
        H, W = _pair(input_size)
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, H), min(x1, W)
    return (int(y0), int(x0), int(y1), int(x1))


def unit_center(row: RFRow, unit: tuple[int, int]) -> tuple[float, float]:
    """Centre of the field of unit (i, j) in input pixels (may lie outside the image)."""
    return (unit[0] * row.S[0] - row.P[0] + (row.r[0] - 1) / 2, unit[1] * row.S[1] - row.P[1] + (row.r[1] - 1) / 2)


def gradient_footprint(handle, layer: str, channel: int, unit: tuple[int, int], x: torch.Tensor,
                       call_index: int = -1) -> np.ndarray:
    """Boolean H×W mask of input pixels with a nonzero gradient of unit (channel, i, j) of ``layer``.

    The empirical counterpart of ``unit_box``. On a trained network with ReLUs and max-pooling the mask is a
    subset of the analytic field (dead units, max-pool routing); on a linearised copy (``linearized_copy``)
    its bounding box equals the analytic box.
    """
    x = on_device(handle, x.detach()).clone()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    x.requires_grad_(True)
    with capture(handle, layer, call_index, grad=True) as cap:
        cap.run(x)
        (g,) = torch.autograd.grad(cap.output[0, channel, unit[0], unit[1]], x)
    return to_numpy(g[0].abs().sum(0) != 0)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open bounding box (y0, x0, y1, x1) of a boolean mask, None if empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)


def linearized_copy(net: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A deep copy with activations → identity, max-pooling → average pooling of the same geometry, and all
    weights made positive, so no input pixel inside a unit's field can have a zero gradient by cancellation
    or routing. Used to check analytic fields against gradient footprints (all terms are positive, so float32
    cannot cancel to zero)."""
    import copy

    acts = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
            nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Dropout2d)
    new = copy.deepcopy(net).to(dtype).eval()
    for name, m in list(new.named_modules()):
        if not name:
            continue
        parent = new.get_submodule(name.rsplit(".", 1)[0]) if "." in name else new
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(m, acts):
            setattr(parent, leaf, nn.Identity())
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.dilation) != (1, 1):
                raise NotDefined("dilated max-pooling has no average-pooling equivalent")
            setattr(parent, leaf, nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode))
        elif isinstance(m, nn.AdaptiveMaxPool2d):
            setattr(parent, leaf, nn.AdaptiveAvgPool2d(m.output_size))
    with torch.no_grad():
        for name, p in new.named_parameters():
            p.copy_(p.abs() + 0.01)
        for m in new.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_var.fill_(1.0)
    return new


def table_as_dicts(table: RFTable) -> list[dict[str, Any]]:
    """Raw rows (tuples kept) for JSON export."""
    return [asdict(r) for r in table.rows]
