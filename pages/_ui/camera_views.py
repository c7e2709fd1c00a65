"""Everything the Camera page shows for one frame, from one forward pass: the top-k classes, the CAM of the top
class (Grad-CAM where CAM is not defined: one backward more) and the feature maps of one layer.

Plain Python (no Streamlit), so the page stays thin and the views are tested against the separate methods
(``handle.topk``, ``cam.cam`` / ``cam.gradcam``, ``activations.layer_activations``) called directly. The hooks
are this call's own (``interpret.core.hooks.hooked``: under the model's lock, only for this thread, removed on
exit); the shared model is never changed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from interpret.attribution.cam import cam_head, default_layer, upsample
from interpret.core.errors import InputError, NotDefined
from interpret.core.hooks import hooked
from interpret.core.layers import get_module, pick_call
from interpret.core.result import Attribution
from interpret.core.tensors import check_target, to_numpy
from interpret.units.activations import ActivationMaps
from models import ModelHandle


@dataclass
class FrameViews:
    """One frame's prediction and maps. ``top``: (class, label, probability), most probable first; ``cam``: the
    map of ``top[0]`` (method "cam" or "gradcam", with ``cam_note`` saying why Grad-CAM); ``acts``: the layer's
    maps, ``channel`` the one shown (the strongest by maximum unless picked); ``image``: the frame as the model
    sees it (H×W×3 in [0, 1]); ``seconds``: time per step."""

    top: list[tuple[int, str, float]]
    cam: Attribution
    cam_note: str | None
    acts: ActivationMaps
    channel: int
    image: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


def _cam_plan(handle: ModelHandle, x: torch.Tensor):
    """(CamHead, None) where CAM is defined, else (None, the reason)."""
    try:
        return cam_head(handle, x), None
    except NotDefined as e:
        return None, str(e)


def _one_pass(handle: ModelHandle, x: torch.Tensor, layers: dict[str, bool]) -> tuple[torch.Tensor, dict]:
    """Forward ``x`` once with every layer in ``layers`` hooked (value True: keep its output in the autograd
    graph, the network going on with a copy; False: a detached copy). Returns (logits, name → list of outputs
    per call). Runs with gradients only if some layer needs them."""
    outs: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    grad = any(layers.values())

    def hook(name: str):
        def fn(module, inputs, out):
            if not torch.is_tensor(out):
                return None
            if layers[name]:
                outs[name].append(out)
                return out.clone()  # a later in-place op must not change the tensor we differentiate against
            outs[name].append(out.detach().clone())
            return None
        return fn

    with hooked(handle) as hs:
        for name in layers:
            hs.forward(get_module(handle.net, name), hook(name))
        with torch.enable_grad() if grad else torch.no_grad():
            xin = x.detach().clone().requires_grad_(True) if grad else x
            logits = handle.net(xin)
    return logits, outs  # with gradients the caller differentiates (graph kept); the hooks are removed already


def frame_views(handle: ModelHandle, image: Image.Image, layer: str, channel: int | None = None,
                call_index: int = -1, k: int = 5) -> FrameViews:
    """Top-``k``, the CAM (or Grad-CAM) of the top class and the maps of ``layer`` (call ``call_index``) for one
    RGB image, from one forward pass (plus one backward for Grad-CAM)."""
    t0 = time.perf_counter()
    x = handle.input_tensor(image)
    size = tuple(x.shape[-2:])
    t1 = time.perf_counter()
    head, why = _cam_plan(handle, x)
    cam_layer = head.layer if head is not None else default_layer(handle, size)
    layers = {layer: False}
    layers[cam_layer] = head is None or layers.get(cam_layer, False)  # Grad-CAM needs its layer in the graph
    if head is None and cam_layer == layer:
        layers[layer] = True
    with hooked(handle):  # the lock spans the pass and the backward (re-entrant: _one_pass takes it again)
        logits, outs = _one_pass(handle, x, layers)
        probs = torch.softmax(logits.detach().float(), dim=1)[0]
        top_idx = torch.argsort(probs, descending=True, stable=True)[:k]
        target = int(top_idx[0])
        check_target(target, logits.shape[1])
        a_cam = pick_call(outs[cam_layer], cam_layer, -1)
        if a_cam.dim() != 4:
            raise InputError(f"layer {cam_layer!r} outputs shape {tuple(a_cam.shape)}; a class map needs a "
                             "spatial map (N, C, H, W)")
        ga = None
        if head is None:
            with torch.enable_grad():
                (ga,) = torch.autograd.grad(logits[0, target], a_cam)
    t2 = time.perf_counter()
    cam_attr, note = None, why
    if head is not None:
        fc = get_module(handle.net, head.linear)
        a = F.relu(a_cam[0]) if head.relu else a_cam[0]
        w = fc.weight.detach()[target]
        b = float(fc.bias.detach()[target]) if fc.bias is not None else 0.0
        raw = torch.einsum("k,khw->hw", w, a)
        logit = float(logits[0, target])
        if abs(float(raw.mean()) + b - logit) <= 1e-3 * max(1.0, abs(logit)):
            name = f"relu({head.layer})" if head.relu else head.layer
            cam_attr = Attribution("cam", target, to_numpy(upsample(raw, size)), signed=True,
                                   extra={"raw": to_numpy(raw), "layer": name, "bias": b, "logit": logit})
        else:  # not GAP + linear on this input after all: Grad-CAM at the default layer (a second pass)
            note = "CAM does not reproduce the logit on this input"
            head = None
            cam_layer = default_layer(handle, size)
            with hooked(handle):
                logits2, outs2 = _one_pass(handle, x, {cam_layer: True})
                a_cam = pick_call(outs2[cam_layer], cam_layer, -1)
                with torch.enable_grad():
                    (ga,) = torch.autograd.grad(logits2[0, target], a_cam)
    if cam_attr is None:
        a, g = a_cam.detach(), ga.detach()
        wts = g[0].mean((1, 2))
        raw = (wts[:, None, None] * a[0]).sum(0)
        cam_attr = Attribution("gradcam", target, to_numpy(upsample(F.relu(raw), size)), signed=False,
                               params={"layer": cam_layer},
                               extra={"raw": to_numpy(raw), "layer": cam_layer, "channel_weights": to_numpy(wts)})
    calls = outs[layer]
    o = pick_call(calls, layer, call_index)[0].detach().float()
    if o.dim() == 1:
        o = o[:, None, None]
    elif o.dim() != 3:
        raise InputError(f"layer {layer!r} output has shape {tuple(o.shape)}; expected (C, h, w) or (C,)")
    acts = ActivationMaps(layer, to_numpy(o), call_index % len(calls), len(calls), size,
                          params={"layer": layer, "call_index": call_index})
    if channel is None:
        channel = int(acts.order("max")[0])
    elif not 0 <= int(channel) < acts.channels:
        raise InputError(f"channel {channel} out of range 0..{acts.channels - 1} for layer {layer!r}")
    t3 = time.perf_counter()
    p = to_numpy(probs)
    top = [(int(i), handle.labels[int(i)], float(p[int(i)])) for i in to_numpy(top_idx)]
    return FrameViews(top, cam_attr, note if cam_attr.method == "gradcam" else None, acts, int(channel),
                      handle.preprocess.to_display(x[0]), {"preprocess": t1 - t0, "forward": t2 - t1, "maps": t3 - t2})
