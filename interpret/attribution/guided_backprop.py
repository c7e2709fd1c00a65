"""Plain backprop, guided backprop (Springenberg et al. 2015) and deconvnet (Zeiler & Fergus 2014).

All three are the gradient of the target logit w.r.t. the input with a different rule at each ReLU:
  plain      g_in = g_out · [x > 0]                 (ordinary autograd)
  guided     g_in = max(g_out, 0) · [x > 0]
  deconvnet  g_in = max(g_out, 0)                   (forward activations ignored)
ReLU6 / ``clamp(x, 0, hi)`` follow the same rules with the mask [0 < x < hi] (guided) — the rule applies to
the clamp; deconvnet ignores the ceiling as it ignores the floor.

How the rule reaches every ReLU: a ``TorchFunctionMode`` that is active only inside the call. It sees *every*
relu-like call — ``nn.ReLU`` (in-place or not), ``F.relu`` inside a forward (DenseNet's final ReLU, invisible to
module hooks), ``nn.ReLU6``/``F.hardtanh(x, 0, 6)`` (EfficientNet-Lite), ``torch.clamp(x, min=0)``, and a ReLU
module called several times (torchvision ResNet).
  guided     the op runs natively (its own backward applies the forward mask; in-place stays in-place) and a
             gradient hook on *its output tensor* first replaces g_out by max(g_out, 0) — no extra forward work;
  deconvnet  the op is replaced by an autograd Function whose backward is max(g_out, 0).
Why not module hooks (captum's approach): they miss functional ReLUs and ReLU6 and need care with in-place ops
and reused modules. The torch-function mode stack is thread-local, so the rule never leaks into another
thread's forward pass; nothing is registered on the shared model (no module hooks, no swapped modules, no lock
needed; tensor hooks live on this call's temporaries), and leaving the ``with`` block — also on error —
restores everything. Other activations (GELU, SiLU, …) keep their ordinary gradient, as in captum.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from models.handle import ModelHandle

from interpret.core.errors import InputError
from interpret.core.result import Attribution
from interpret.core.tensors import check_input, input_gradient, max_abs_channels, on_device, to_hwc

RULES = ("guided", "deconvnet")


def _relu_of_grad(g: torch.Tensor) -> torch.Tensor:
    return g.clamp_min(0)


class _DeconvClamp(torch.autograd.Function):
    """clamp(x, lo, hi) forward; deconvnet backward max(g, 0), whatever x was. Saves nothing."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        return x.clamp(lo, hi) if hi is not None else x.clamp_min(lo)

    @staticmethod
    def backward(ctx, g):
        return g.clamp_min(0), None, None


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _arg(args, kwargs, i, name, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _relu(args, kwargs):
    return 0.0, None, bool(_arg(args, kwargs, 1, "inplace", False))


def _relu_inplace(args, kwargs):
    return 0.0, None, True


def _relu6(args, kwargs):
    return 0.0, 6.0, bool(_arg(args, kwargs, 1, "inplace", False))


def _relu6_inplace(args, kwargs):
    return 0.0, 6.0, True


def _hardtanh(inplace):
    def parse(args, kwargs):
        lo = _num(_arg(args, kwargs, 1, "min_val", -1.0))
        hi = _num(_arg(args, kwargs, 2, "max_val", 1.0))
        ip = inplace or bool(_arg(args, kwargs, 3, "inplace", False))
        return (lo, hi, ip) if lo == 0.0 and hi is not None else None
    return parse


def _clamp(inplace):
    def parse(args, kwargs):
        lo_raw, hi_raw = _arg(args, kwargs, 1, "min", None), _arg(args, kwargs, 2, "max", None)
        lo, hi = _num(lo_raw), _num(hi_raw)
        if lo != 0.0 or (hi_raw is not None and hi is None):
            return None  # only ReLU-like clamps with a number as the ceiling
        return lo, hi, inplace
    return parse


def _clamp_min(inplace):
    def parse(args, kwargs):
        return (0.0, None, inplace) if _num(_arg(args, kwargs, 1, "min", None)) == 0.0 else None
    return parse


def _table() -> dict:
    """Every relu-like callable → parser of (lo, hi, inplace) from its arguments (None: not relu-like)."""
    T = torch.Tensor
    entries = [
        (F.relu, _relu), (torch.relu, _relu), (T.relu, _relu),
        (F.relu_, _relu_inplace), (torch.relu_, _relu_inplace), (T.relu_, _relu_inplace),
        (F.relu6, _relu6),
        (F.hardtanh, _hardtanh(False)), (F.hardtanh_, _hardtanh(True)),
        (torch.clamp, _clamp(False)), (torch.clip, _clamp(False)), (T.clamp, _clamp(False)),
        (T.clip, _clamp(False)), (torch.clamp_, _clamp(True)), (T.clamp_, _clamp(True)),
        (T.clip_, _clamp(True)),
        (torch.clamp_min, _clamp_min(False)), (T.clamp_min, _clamp_min(False)),
        (torch.clamp_min_, _clamp_min(True)), (T.clamp_min_, _clamp_min(True)),
    ]
    # The C-level ops behind F.hardtanh / F.relu6, in case a network calls them directly.
    for name, parser in (("hardtanh", _hardtanh(False)), ("hardtanh_", _hardtanh(True)),
                         ("relu6", _relu6), ("relu6_", _relu6_inplace)):
        fn = getattr(torch._C._nn, name, None)
        if fn is not None:
            entries.append((fn, parser))
    return dict(entries)


_RELU_LIKE = _table()


class _ReluRuleMode(TorchFunctionMode):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        parser = _RELU_LIKE.get(func)
        spec = parser(args, kwargs) if parser is not None else None
        if spec is None or not torch.is_tensor(args[0]) or not args[0].is_floating_point():
            return func(*args, **kwargs)
        x = args[0]
        if self.rule == "guided":
            # The native op keeps its own backward (g · [lo < x < hi]); a hook on its output first replaces the
            # incoming gradient by max(g, 0). The hook lives on this call's temporary tensor, not on the model.
            out = func(*args, **kwargs)
            if torch.is_tensor(out) and out.requires_grad:
                out.register_hook(_relu_of_grad)
            return out
        lo, hi, inplace = spec
        y = _DeconvClamp.apply(x, lo, hi)
        if inplace:
            # Keep in-place semantics (callers may rely on x being changed): copy_ is recorded by autograd,
            # so the gradient of the new x flows through y and the rule; the old x is not saved anywhere.
            x.copy_(y)
            return x
        return y


@contextmanager
def relu_rule(rule: str) -> Iterator[None]:
    """Within the block (this thread only) every relu-like op back-propagates with ``rule``."""
    if rule not in RULES:
        raise InputError(f"unknown rule {rule!r}; choose one of {RULES}")
    with _ReluRuleMode(rule):
        yield


def rule_gradient(handle: ModelHandle, x: torch.Tensor, target: int, rule: str | None) -> torch.Tensor:
    """∂ logit[target] / ∂x with the given ReLU rule (None: plain gradient); shape of x."""
    check_input(x)
    x = on_device(handle, x)
    if rule is None:
        return input_gradient(handle.net, x, target)
    with relu_rule(rule):
        return input_gradient(handle.net, x, target)


def _result(method: str, target: int, g: torch.Tensor, rule: str | None) -> Attribution:
    return Attribution(method, int(target), max_abs_channels(g), signed=False, params={},
                       extra={"rgb": to_hwc(g), "rule": rule or "plain",
                              "reduction": "max |value| over colour channels"})


def backprop(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """Plain gradient shown as an image: extra["rgb"] H×W×3 signed; map = max |grad| over channels."""
    return _result("backprop", target, rule_gradient(handle, x, target, None), None)


def guided_backprop(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """Guided backprop: extra["rgb"] H×W×3 signed; map = max |value| over channels."""
    return _result("guided_backprop", target, rule_gradient(handle, x, target, "guided"), "guided")


def deconvnet(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """Deconvnet: extra["rgb"] H×W×3 signed; map = max |value| over channels."""
    return _result("deconvnet", target, rule_gradient(handle, x, target, "deconvnet"), "deconvnet")
