"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) through Zennit's composites.

LRP sends the target logit back through the network layer by layer, dividing each unit's relevance among its inputs
by a rule chosen per layer type; the input relevance, summed over colour channels, is the signed H×W map. The
output relevance is the target logit itself (as captum's LRP does), so the map is in logit units and sums to the
logit up to what the rules absorb (biases, ε) — ``extra["conservation"]`` reports that ratio.

Composites (which rule where):
  epsilon_plus_flat   flat rule on the first layer, z⁺ on every other convolution, ε on the dense layers (default;
                      Zennit's recommended composite for CNNs);
  epsilon_gamma_box   z^B (the pixel box [(0 − mean)/std, (1 − mean)/std]) on the first convolution, γ on the other
                      convolutions, ε on the dense layers;
  alpha2_beta1        α = 2, β = 1 on every convolution, ε on the dense layers;
  epsilon             ε everywhere (not registered: on ReLU nets with ε → 0 it is gradient × input; tests use it).
Everywhere: average pooling and the residual sums divide relevance in proportion to their inputs (Zennit's Norm
rule), max pooling sends it to the maximum (its gradient), batch norm is merged into the convolution before it.

Activations: Zennit treats every activation as pass-through for relevance — the relevance of a ReLU's output goes
to its input unchanged. For ReLU6 (EfficientNet-Lite) this means a unit saturated at 6 still hands its relevance
down (the gradient would be 0 there); a unit at 0 gets none, because the layer above gives a zero input none.

Canonizers: VGG / AlexNet / the classroom CNN / plain chains — ``SequentialMergeBatchNorm``; torchvision ResNet —
Zennit's ``ResNetCanonizer`` (BN merge and the residual ``+`` turned into a ``Sum`` module); EfficientNet-Lite —
BN merge and our ``MBConvSkipCanonizer`` (the same for the MBConv skip). Before the first call on a network, its
canonized form is traced with ``torch.fx`` and every operation checked: a layer type or a tensor operation with no
LRP rule (SiLU, a squeeze-excite product, an unconverted residual sum, …) or a batch norm that does not follow its
convolution raises ``NotDefined`` naming it (the verdict is cached per network).

Shared models: Zennit registers hooks on the model and its canonizers rewrite weights (the BN merge) until removed.
So every call works on its own **private deep copy** (made under the model's lock, hooks of other calls cleared),
never on the shared net. Per call rather than a cached per-thread copy because Streamlit runs each script run in a
fresh thread (a per-thread cache would rarely hit and would hold a copy per live thread); the copy costs 0.03 s for
Lite0 / ResNet-18 and 0.27 s for VGG16 on the CPU, small beside the LRP pass, and it is freed when the call ends.
"""
from __future__ import annotations

import copy
import operator
import weakref
from typing import Callable

import torch
import torchvision.models as tvm
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
from zennit.composites import (EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat, LayerMapComposite,
                               layer_map_base)
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import Epsilon
from zennit.torchvision import ResNetCanonizer
from zennit.types import Linear as _ZLinear

from models.efficientnet_lite import EfficientNetLite, MBConvBlock
from models.handle import ModelHandle

from interpret.core.errors import InputError, NotDefined
from interpret.core.fx_trace import confined_trace
from interpret.core.result import Attribution
from interpret.core.tensors import check_input, check_target, on_device, to_hwc, to_numpy, wide

COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "alpha2_beta1", "epsilon")
COMPOSITE_LABELS = {
    "epsilon_plus_flat": "flat (first layer) · z⁺ (convolutions) · ε (dense layers)",
    "epsilon_gamma_box": "z^B box (first convolution) · γ (convolutions) · ε (dense layers)",
    "alpha2_beta1": "α2β1 (convolutions) · ε (dense layers)",
    "epsilon": "ε (every layer)",
}

# Layers with an LRP rule (or, for max pooling / dropout / flatten, an exact gradient that is the rule).
RULED_LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AvgPool2d,
                nn.AdaptiveAvgPool2d, nn.Dropout, nn.Flatten, nn.Identity)
# Tensor operations that only move values (their gradient routes relevance exactly), or that the LRP chain treats
# like the module form: functional ReLU (pass-through, as the module) and dropout (identity in eval mode).
_MOVES = {torch.flatten, torch.reshape, torch.stack, torch.cat, torch.relu, torch.nn.functional.relu,
          torch.nn.functional.dropout, operator.getitem, getattr}
_MOVE_METHODS = {"flatten", "reshape", "view", "contiguous", "size", "dim", "relu", "squeeze", "unsqueeze"}


# ---- canonizers --------------------------------------------------------------------------------------------------

def _mbconv_forward(self: MBConvBlock, x: torch.Tensor) -> torch.Tensor:
    """The block's own branch (its forward with the skip switched off), then the skip as a ``Sum`` module."""
    self.use_skip = False  # only ever set on a private copy, and restored at once
    try:
        y = MBConvBlock.forward(self, x)
    finally:
        self.use_skip = True
    return self.canonizer_sum(torch.stack([x, y], dim=-1))


class MBConvSkipCanonizer(AttributeCanonizer):
    """EfficientNet-Lite's MBConv skip ``y + x`` as a Zennit ``Sum`` module, so the Norm rule divides the relevance
    between the branch and the identity (a bare ``+`` would hand each the full relevance)."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict | None:
        if isinstance(module, MBConvBlock) and module.use_skip:
            return {"forward": _mbconv_forward.__get__(module), "canonizer_sum": Sum()}
        return None

    def copy(self) -> "MBConvSkipCanonizer":
        return MBConvSkipCanonizer()


def canonizers_for(net: nn.Module) -> list:
    """The Zennit canonizers for ``net``'s architecture (see the module docstring)."""
    if isinstance(net, tvm.ResNet):
        return [ResNetCanonizer()]
    if isinstance(net, EfficientNetLite):
        return [CompositeCanonizer((SequentialMergeBatchNorm(), MBConvSkipCanonizer()))]
    return [SequentialMergeBatchNorm()]


# ---- private copies and the support check -------------------------------------------------------------------------

def private_copy(handle: ModelHandle) -> nn.Module:
    """An eval-mode deep copy of the shared net, taken under its lock, with no hooks and no parameter gradients."""
    with handle.lock:
        net = copy.deepcopy(handle.net)
    for m in net.modules():  # a per-call hook of another thread may have been copied along
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
            d = getattr(m, name, None)
            if d is not None:
                d.clear()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def _where(node) -> tuple[str, type | None]:
    stack = list(node.meta.get("nn_module_stack", {}).values())
    if not stack:
        return "the top-level forward", None
    path, mtype = stack[-1]
    return f"{path} ({getattr(mtype, '__name__', mtype)})", mtype


def _op_name(node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _trace(net: nn.Module, name: str):
    try:
        return confined_trace(net), None
    except Exception as e:  # noqa: BLE001 - any tracing failure means the check cannot be made
        return None, (f"LRP is not supported for {name} because torch.fx could not trace it to check that every "
                      f"operation has an LRP rule ({type(e).__name__}: {str(e)[:200]}).")


def _layer_reason(net: nn.Module, name: str) -> str | None:
    """A layer type without a rule, or a batch norm that cannot be merged into the convolution before it."""
    for path, mod in net.named_modules():
        if not list(mod.children()) and type(mod) not in RULED_LAYERS:
            return (f"LRP is not supported for {name} because its layer {path} ({type(mod).__name__}) has no LRP "
                    f"rule here (rules exist for Conv2d, Linear, BatchNorm2d after a convolution, ReLU, ReLU6, "
                    f"max/average pooling, dropout and flatten).")
    gm, why = _trace(net, name)
    if gm is None:
        return why
    modules = dict(gm.named_modules())
    leaves = [m for m in net.modules() if not list(m.children())]
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d):
            bn, src = modules[node.target], node.args[0]
            src_mod = modules.get(src.target) if getattr(src, "op", None) == "call_module" else None
            i = next(k for k, leaf in enumerate(leaves) if leaf is bn)
            # SequentialMergeBatchNorm pairs each batch norm with the leaf registered just before it: that must be
            # the convolution that feeds it, and nothing else may read that convolution's output.
            if (not isinstance(src_mod, (nn.Conv2d, nn.Linear)) or len(src.users) != 1 or i == 0
                    or leaves[i - 1] is not src_mod):
                return (f"LRP is not supported for {name} because its batch norm {node.target} does not directly "
                        f"follow a convolution it could be merged into (it has no LRP rule of its own).")
    return None


def _op_reason(gm, name: str) -> str | None:
    """A tensor operation outside the layers with rules (a residual sum no canonizer converted, a product, …)."""
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_method"):
            where, mtype = _where(node)
            if mtype is not None and issubclass(mtype, Sum):
                continue  # inside a canonizer's Sum module: the Norm rule covers it
            ok = node.target in _MOVE_METHODS if node.op == "call_method" else node.target in _MOVES
            if not ok:
                kind = ("adds two tensors — a residual sum no canonizer converts"
                        if _op_name(node) in ("add", "iadd", "__add__", "add_") else "applies an operation")
                return (f"LRP is not supported for {name} because it {kind} (`{_op_name(node)}` in {where}) that "
                        f"has no LRP rule; supported: VGG, AlexNet, torchvision ResNet, EfficientNet-Lite, the "
                        f"classroom CNN and plain chains of layers with a rule.")
        elif node.op == "get_attr":
            return (f"LRP is not supported for {name} because it uses the tensor {node.target} directly in its "
                    f"forward, outside a layer with an LRP rule.")
    return None


def unsupported_reason(net: nn.Module, name: str = "this network") -> str | None:
    """Why LRP cannot run on ``net``, or None. Works on a deep copy (canonized, then traced); ``net`` is untouched."""
    work = copy.deepcopy(net).eval()
    why = _layer_reason(work, name)
    if why is not None:
        return why
    instances = []
    try:
        for c in canonizers_for(work):
            instances += c.apply(work)
        gm, why = _trace(work, name)
    except Exception as e:  # noqa: BLE001 - a canonizer that cannot rewrite this net
        gm, why = None, f"LRP is not supported for {name} because its canonizer failed ({type(e).__name__}: {e})."
    finally:
        for inst in instances:
            inst.remove()
    return why if gm is None else _op_reason(gm, name)


_VERDICTS: "weakref.WeakKeyDictionary[nn.Module, str | None]" = weakref.WeakKeyDictionary()


def check_supported(handle: ModelHandle) -> None:
    """NotDefined with the reason when LRP cannot run on the handle's network (checked once per network)."""
    net = handle.net
    if net not in _VERDICTS:
        with handle.lock:
            verdict = unsupported_reason(net, handle.name)
        _VERDICTS[net] = verdict
    if _VERDICTS[net] is not None:
        raise NotDefined(_VERDICTS[net])


# ---- composites and the attribution ---------------------------------------------------------------------------------

def _box(handle: ModelHandle, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest normalized input of each pixel: (0 − mean)/std and (1 − mean)/std."""
    mean = torch.tensor(handle.preprocess.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(handle.preprocess.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((0 - mean) / std).expand_as(x), ((1 - mean) / std).expand_as(x)


def make_composite(name: str, handle: ModelHandle, x: torch.Tensor, canonizers: list, epsilon: float = 1e-6,
                   gamma: float = 0.25) -> Composite:
    """A fresh Zennit composite (its hooks are per call) with ``canonizers``."""
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(epsilon=epsilon, canonizers=canonizers)
    if name == "epsilon_gamma_box":
        low, high = _box(handle, x)
        return EpsilonGammaBox(low=low, high=high, epsilon=epsilon, gamma=gamma, canonizers=canonizers)
    if name == "alpha2_beta1":
        return EpsilonAlpha2Beta1(epsilon=epsilon, canonizers=canonizers)
    if name == "epsilon":
        return LayerMapComposite(layer_map_base() + [(_ZLinear, Epsilon(epsilon=epsilon))], canonizers=canonizers)
    raise InputError(f"unknown LRP composite {name!r}; choose one of {COMPOSITES}")


def relevance(handle: ModelHandle, x: torch.Tensor, target: int, composite: str = "epsilon_plus_flat",
              epsilon: float = 1e-6, gamma: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """(input relevance (1, C, H, W), the target logit) of ``composite`` on a private copy of the handle's net."""
    check_input(x)
    if not epsilon > 0:
        raise InputError(f"ε must be positive (it keeps the ε rule's denominators away from 0), got {epsilon}")
    if not gamma >= 0:
        raise InputError(f"γ must be 0 or more, got {gamma}")
    check_supported(handle)
    x = on_device(handle, x)
    net = private_copy(handle)
    comp = make_composite(composite, handle, x, canonizers_for(net), epsilon=epsilon, gamma=gamma)
    xg = x.detach().clone().requires_grad_(True)
    t = int(target)

    def start(out: torch.Tensor) -> torch.Tensor:  # output relevance: the target logit, nothing elsewhere
        if out.dim() != 2:
            raise NotDefined(f"the network must return logits of shape (N, classes), got {tuple(out.shape)}")
        check_target(t, out.shape[1])
        r = torch.zeros_like(out)
        r[:, t] = out[:, t]
        return r.detach()

    with torch.enable_grad(), Gradient(model=net, composite=comp, attr_output=start) as attributor:
        out, rel = attributor(xg)
    return rel.detach(), out[0, t].detach()


def _lrp(method: str, composite: str, handle: ModelHandle, x: torch.Tensor, target: int, **params) -> Attribution:
    rel, logit = relevance(handle, x, target, composite, **params)
    total = float(wide(rel).sum())
    logit_v = float(wide(logit))
    return Attribution(method, int(target), to_numpy(rel[0].sum(0)), signed=True, params=dict(params),
                       extra={"rgb": to_hwc(rel), "logit": logit_v, "relevance_sum": total,
                              "conservation": total / logit_v if logit_v != 0 else float("nan"),
                              "composite": composite, "rules": COMPOSITE_LABELS[composite]})


def lrp_epsilon_plus_flat(handle: ModelHandle, x: torch.Tensor, target: int, epsilon: float = 1e-6) -> Attribution:
    """LRP with Zennit's EpsilonPlusFlat composite: signed H×W relevance (channels summed)."""
    return _lrp("lrp_epsilon_plus_flat", "epsilon_plus_flat", handle, x, target, epsilon=epsilon)


def lrp_epsilon_gamma_box(handle: ModelHandle, x: torch.Tensor, target: int, epsilon: float = 1e-6,
                          gamma: float = 0.25) -> Attribution:
    """LRP with Zennit's EpsilonGammaBox composite (box = the normalized pixel range of the handle)."""
    return _lrp("lrp_epsilon_gamma_box", "epsilon_gamma_box", handle, x, target, epsilon=epsilon, gamma=gamma)


def lrp_alpha2_beta1(handle: ModelHandle, x: torch.Tensor, target: int, epsilon: float = 1e-6) -> Attribution:
    """LRP with Zennit's EpsilonAlpha2Beta1 composite."""
    return _lrp("lrp_alpha2_beta1", "alpha2_beta1", handle, x, target, epsilon=epsilon)


METHOD_FUNCTIONS: dict[str, Callable[..., Attribution]] = {
    "lrp_epsilon_plus_flat": lrp_epsilon_plus_flat,
    "lrp_epsilon_gamma_box": lrp_epsilon_gamma_box,
    "lrp_alpha2_beta1": lrp_alpha2_beta1,
}
