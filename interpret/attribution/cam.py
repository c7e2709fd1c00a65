"""Class activation maps: CAM (Zhou et al. 2016), Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay
et al. 2018) and guided Grad-CAM.

Like pytorch-grad-cam, the Grad-CAM variants share one pass (activations A and gradients ∂y/∂A at a layer)
and differ only in the channel weights. Maps are upsampled bilinearly to the input size; the map at layer
resolution before ReLU is kept in ``extra["raw"]``.

CAM is only defined when the logits are ``W · GAP(A) + b`` for a feature map A: then CAM_c = Σ_k W[c,k] A_k,
its spatial mean plus b_c is exactly the logit, and CAM = Z · raw Grad-CAM (Z = h·w). ``cam_head`` checks this
structurally *and* numerically on the real input: the last linear layer must produce the logits, and its input
must equal the spatial mean of some layer's output A (or of relu(A): DenseNet applies ``F.relu`` between
``features`` and the pooling, so its CAM is computed on relu(features) — the maps actually pooled, so the
identity above still holds). Anything else (VGG16, AlexNet: several linear layers) raises ``NotDefined``.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.handle import ModelHandle

from interpret.attribution.guided_backprop import rule_gradient
from interpret.core.errors import InputError, NotDefined
from interpret.core.hooks import hooked
from interpret.core.layers import PASSIVE_TYPES, capture, get_module, last_conv_block
from interpret.core.result import Attribution
from interpret.core.tensors import check_input, on_device, target_score, to_hwc, to_numpy

_CACHE_LOCK = threading.Lock()
_DEFAULT_LAYER: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_CAM_HEAD: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def default_layer(handle: ModelHandle, input_size: tuple[int, int] | None = None) -> str:
    """``last_conv_block`` of the handle's network, cached per network and input size."""
    size = tuple(input_size or handle.input_size)
    with _CACHE_LOCK:
        hit = _DEFAULT_LAYER.get(handle.net, {}).get(size)
    if hit is None:
        hit = last_conv_block(handle.net, size, handle.lock)
        with _CACHE_LOCK:
            _DEFAULT_LAYER.setdefault(handle.net, {})[size] = hit
    return hit


def upsample(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """h×w map → H×W, bilinear (half-pixel centres)."""
    return F.interpolate(raw[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def layer_activation_grad(handle: ModelHandle, x: torch.Tensor, target: int, layer: str
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Output A of ``layer`` (its last call, if called several times) and ∂ logit[target] / ∂A.

    The network goes on with a copy of A, so a following in-place op (VGG's ReLU(inplace=True)) cannot
    overwrite the tensor we differentiate against. Hooks live only inside ``capture`` (lock held).
    """
    check_input(x)
    x = on_device(handle, x)
    with capture(handle, layer, grad=True) as cap:
        logits = cap.run(x.detach().clone().requires_grad_(True))
        a = cap.output
        if a.dim() != 4:
            raise InputError(f"layer {layer!r} outputs shape {tuple(a.shape)}; Grad-CAM needs a spatial "
                             "map (N, C, H, W) — pick a convolutional layer")
        (ga,) = torch.autograd.grad(target_score(logits, target), a)
    return a.detach(), ga.detach()


def _gradcam_like(method: str, handle, x, target, layer, weights_fn) -> Attribution:
    layer = layer or default_layer(handle, tuple(x.shape[-2:]))
    a, ga = layer_activation_grad(handle, x, target, layer)
    w = weights_fn(a, ga)  # (C,)
    raw = (w[:, None, None] * a[0]).sum(0)
    m = upsample(F.relu(raw), tuple(x.shape[-2:]))
    return Attribution(method, int(target), to_numpy(m), signed=False, params={"layer": layer},
                       extra={"raw": to_numpy(raw), "layer": layer, "channel_weights": to_numpy(w)})


def _gradcam_weights(a: torch.Tensor, ga: torch.Tensor) -> torch.Tensor:
    return ga[0].mean((1, 2))


def _gradcam_pp_weights(a: torch.Tensor, ga: torch.Tensor) -> torch.Tensor:
    # Eq. 19 with S = exp(y): higher derivatives of y vanish for piecewise-linear nets, so
    # α = g² / (2g² + Σ_ab A_ab · g³), weights = Σ_ij α · relu(g).
    g = ga[0]
    g2, g3 = g * g, g * g * g
    denom = 2 * g2 + a[0].sum((1, 2), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                        torch.zeros_like(g))
    return (alpha * F.relu(g)).sum((1, 2))


def gradcam(handle: ModelHandle, x: torch.Tensor, target: int, layer: str | None = None) -> Attribution:
    """Grad-CAM: relu(Σ_k mean(∂y/∂A_k) · A_k) at ``layer`` (default: the last conv block), upsampled.

    extra["raw"]: the map before ReLU at layer resolution; extra["channel_weights"]: the α_k."""
    return _gradcam_like("gradcam", handle, x, target, layer, _gradcam_weights)


def gradcam_pp(handle: ModelHandle, x: torch.Tensor, target: int, layer: str | None = None) -> Attribution:
    """Grad-CAM++: channel weights Σ_ij α_ij relu(∂y/∂A_ij) with the closed-form α of the paper."""
    return _gradcam_like("gradcam_pp", handle, x, target, layer, _gradcam_pp_weights)


def guided_gradcam(handle: ModelHandle, x: torch.Tensor, target: int, layer: str | None = None) -> Attribution:
    """Guided backprop × upsampled Grad-CAM, per colour channel (extra["rgb"]); map = max |value| over channels."""
    gc = gradcam(handle, x, target, layer)
    g = rule_gradient(handle, x, target, "guided")[0]
    g = g * torch.from_numpy(gc.map).to(g.device)[None]
    return Attribution("guided_gradcam", int(target), to_numpy(g.abs().amax(0)), signed=False,
                       params={"layer": gc.params["layer"]},
                       extra={"rgb": to_hwc(g), "gradcam": gc.map, "layer": gc.params["layer"]})


@dataclass(frozen=True)
class CamHead:
    """Where CAM reads from: feature layer, whether relu is applied to it, and the classifier layer."""

    layer: str
    relu: bool
    linear: str


def _find_head(handle: ModelHandle, x: torch.Tensor) -> CamHead:
    net = handle.net
    linears = {n: m for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    if not linears:
        raise NotDefined("CAM needs the network to end in global average pooling followed by one linear layer; "
                         "this network has no linear layer. Use Grad-CAM instead.")
    widths = {m.in_features for m in linears.values()}
    maps: list[tuple[str, int, torch.Tensor]] = []  # (name, id of output, copy) for 4-D outputs
    lin_calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    keep: list[torch.Tensor] = []  # holds outputs alive so their ids stay unique

    def rec(name):
        def fn(mod, inp, out):
            if isinstance(mod, nn.Linear):
                lin_calls.append((name, inp[0].detach().clone(), out.detach()))
            if (torch.is_tensor(out) and out.dim() == 4 and out.shape[1] in widths
                    and not isinstance(mod, PASSIVE_TYPES)):
                keep.append(out)
                maps.append((name, id(out), out.detach().clone()))
        return fn

    with hooked(handle) as hs, torch.no_grad():
        for name, m in net.named_modules():
            if name:
                hs.forward(m, rec(name))
        logits = net(x)
    if not lin_calls or not torch.equal(lin_calls[-1][2], logits):
        raise NotDefined("CAM needs the logits to come straight out of one linear layer after global average "
                         "pooling; here the output is not produced by a linear layer. Use Grad-CAM instead.")
    lin_name, feat, _ = lin_calls[-1]
    tol = dict(rtol=1e-4, atol=1e-5 * float(feat.abs().max()) + 1e-7)
    for name, oid, a in reversed(maps):
        for relu in (False, True):
            pooled = (F.relu(a) if relu else a).mean((2, 3))
            if pooled.shape == feat.shape and torch.allclose(pooled, feat, **tol):
                # Outermost module returning this same tensor (layer4 rather than layer4.1.relu).
                same = [n for n, i, _ in maps if i == oid]
                return CamHead(min(same, key=lambda n: (n.count("."), len(n))), relu, lin_name)
    n_lin = len(lin_calls)
    why = (f"it applies {n_lin} linear layers in a row after its last convolutional feature map"
           if n_lin > 1 else "the input of its linear layer is not the global average of a feature map")
    raise NotDefined(f"CAM is only defined for networks that end with conv → global average pooling → one "
                     f"linear layer; this one does not: {why}. Use Grad-CAM instead, which works for any "
                     f"convolutional layer.")


def cam_head(handle: ModelHandle, x: torch.Tensor | None = None) -> CamHead:
    """The CAM structure of the handle's network (cached per network), or NotDefined saying why not."""
    with _CACHE_LOCK:
        hit = _CAM_HEAD.get(handle.net)
    if hit is None:
        if x is None:
            gen = torch.Generator().manual_seed(0)  # deterministic probe when no image is given
            x = torch.rand(1, 3, *handle.input_size, generator=gen) * 2 - 1
        try:
            hit = _find_head(handle, on_device(handle, x))
        except NotDefined as e:
            hit = e
        with _CACHE_LOCK:
            _CAM_HEAD[handle.net] = hit
    if isinstance(hit, NotDefined):
        raise NotDefined(str(hit))
    return hit


def cam(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """CAM_c = Σ_k W[c,k] · A_k (signed; no ReLU) upsampled to the input size.

    extra["raw"]: the map at layer resolution (its mean + extra["bias"] is the logit);
    extra["layer"]: the feature layer (with "relu(...)" when the pooling sees relu of it)."""
    check_input(x)
    x = on_device(handle, x)
    head = cam_head(handle, x)
    fc = get_module(handle.net, head.linear)
    with capture(handle, head.layer) as cap:
        logits = cap.run(x)
    target_score(logits, target)  # validates the target
    a = F.relu(cap.output[0]) if head.relu else cap.output[0]
    w = fc.weight.detach()[int(target)]
    b = float(fc.bias.detach()[int(target)]) if fc.bias is not None else 0.0
    raw = torch.einsum("k,khw->hw", w, a)
    logit = float(logits[0, int(target)])
    if abs(float(raw.mean()) + b - logit) > 1e-3 * max(1.0, abs(logit)):
        raise NotDefined("CAM does not reproduce the logit on this input (the network is not GAP + linear).")
    layer = f"relu({head.layer})" if head.relu else head.layer
    return Attribution("cam", int(target), to_numpy(upsample(raw, tuple(x.shape[-2:]))), signed=True,
                       params={}, extra={"raw": to_numpy(raw), "layer": layer, "bias": b, "logit": logit})
