"""GPU (or any device) benchmark for issue 14: what running on the model's device buys, as ratios.

    python -m bench.bench_device [--device cuda] [--quick]

1. exact occlusion (the incremental engine) against captum's ``Occlusion`` on the same device (Lite0, one photo);
2. a top-patch scan's images/s against a bare forward pass over the same bundled photos;
3. one synthesis (feature visualisation) step against one forward + backward pass;
4. upload → four plots: a Lite0 state dict read as an upload, moved to the device, then predict, Grad-CAM, one
   activation map and the first-layer filters with their figures — against the bare forward pass.

``--quick`` (the default on a CPU) uses smaller inputs and fewer repeats so the script fits a CPU check.
"""
from __future__ import annotations

import argparse
import io
import time
from typing import Callable

import numpy as np
import torch
from captum.attr import Occlusion
from PIL import Image
from safetensors.torch import save as save_safetensors
from skimage import data

from interpret.attribution.cam import gradcam
from interpret.attribution.occlusion import occlusion
from interpret.plots.attribution import overlay_figure, topk_figure
from interpret.plots.units import activation_grid_figure, filters_figure
from interpret.units.synthesis import objectives as SO, render as syn
from interpret.units import top_patches as tp
from interpret.units.activations import layer_activations
from interpret.units.filters import filter_bank, rgb_filters
from models import checkpoints, default
from models.device import resolve_device

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "motorcycle_left")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` runs after one warm-up run (seconds)."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def photos() -> list[Image.Image]:
    out = []
    for name in PHOTOS:
        arr = getattr(data, name, None)
        if arr is not None:
            out.append(Image.fromarray(arr()).convert("RGB"))
    return out


def bench_occlusion(h, x, device, repeats, window, stride) -> None:
    target = int(h.predict(x).argmax())

    def ours():
        return occlusion(h, x, target, window=window, stride=stride, batch_size=64)

    def theirs():
        with torch.no_grad():
            return Occlusion(h.net).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                              strides=(3, stride, stride), baselines=0, perturbations_per_eval=64)

    t_ours, t_captum = timed(ours, device, repeats), timed(theirs, device, repeats)
    a, b = ours().map, theirs()[0, 0].detach().cpu().numpy()
    err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
    print(f"exact occlusion {tuple(x.shape[-2:])}, window {window}, stride {stride}: ours {t_ours:.3f} s, "
          f"captum {t_captum:.3f} s → captum/ours = {t_captum / t_ours:.2f}× (max rel. difference {err:.1e})")


def bench_top_patches(h, device, repeats, n_images, batch) -> None:
    imgs = (photos() * (n_images // len(PHOTOS) + 1))[:n_images]
    xs = torch.stack([h.preprocess(im) for im in imgs]).to(device)

    def bare():
        with torch.inference_mode():
            for s in range(0, len(xs), batch):
                h.net(xs[s:s + batch])

    def scan():
        return tp.scan(h, imgs, "_blocks.6", channels=list(range(16)), k=9, batch_size=batch)

    t_bare, t_scan = timed(bare, device, repeats), timed(scan, device, repeats)
    print(f"top-patch scan ({n_images} photos, 16 channels of _blocks.6): {n_images / t_scan:.1f} images/s; bare "
          f"forward {n_images / t_bare:.1f} images/s → scan/forward = {t_bare / t_scan:.2f}× the forward's rate "
          "(the scan also decodes, resizes and keeps the heaps)")


def bench_synthesis(h, device, steps, size) -> None:
    x = torch.randn(1, 3, size, size).to(device).requires_grad_(True)

    def fwd_bwd():
        (g,) = torch.autograd.grad(h.net(x)[0].sum(), x)
        return g

    t_fb = timed(fwd_bwd, device, 5)
    obj = SO.channel("_blocks.6", 5)
    # Lucent's transforms without the padding and the final resize: the network sees about size² (±10 %)
    settings = syn.preset("quality", steps=steps, size=size, pad=0, upsample=False)
    syn.synthesize(h, obj, settings, steps=2)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    syn.synthesize(h, obj, settings)
    _sync(device)
    per_step = (time.perf_counter() - t0) / steps
    print(f"synthesis step at {size}²: {per_step * 1e3:.1f} ms; forward + backward {t_fb * 1e3:.1f} ms → "
          f"step/(fwd+bwd) = {per_step / t_fb:.2f}×")


def bench_upload(device, image) -> None:
    state = default.load().net.state_dict()
    blob = save_safetensors({k: v.contiguous() for k, v in state.items()})
    t0 = time.perf_counter()
    h = checkpoints.load_user_model("efficientnet_lite0", blob, "lite0.safetensors").to(device)
    _sync(device)
    t_load = time.perf_counter() - t0
    x = h.input_tensor(image)

    def four_plots():
        p = h.predict(x)
        idx = np.argsort(-p)[:5]
        figs = [topk_figure([(int(i), h.labels[i], float(p[i])) for i in idx])]
        view = h.preprocess.to_display(x[0])
        figs.append(overlay_figure(view, gradcam(h, x, int(idx[0]))))
        figs.append(activation_grid_figure(layer_activations(h, x, "_blocks.6"), max_maps=16))
        figs.append(filters_figure(rgb_filters(filter_bank(h))))
        return figs

    with torch.inference_mode():
        t_fwd = timed(lambda: h.net(x), device, 3)
    t_plots = timed(four_plots, device, 2)
    print(f"upload → four plots: load + move {t_load:.2f} s; predict + Grad-CAM + activation map + filters "
          f"{t_plots:.3f} s → plots/forward = {t_plots / t_fwd:.1f}×")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="small inputs and few repeats (default on the CPU)")
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    quick = a.quick or device.type == "cpu"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"device: {device} ({name}); torch {torch.__version__}; {'quick' if quick else 'full'} settings")
    h = default.load().to(device)
    photo = photos()[0]
    x = h.input_tensor(photo)
    t0 = time.perf_counter()
    if quick:
        x = torch.nn.functional.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False)
        bench_occlusion(h, x, device, 1, 15, 12)
        bench_top_patches(h, device, 1, 12, 6)
        bench_synthesis(h, device, 4, 96)
    else:
        bench_occlusion(h, x, device, 3, 15, 8)
        bench_top_patches(h, device, 3, 192, 32)
        bench_synthesis(h, device, 32, 224)
    bench_upload(device, photo)
    print(f"benchmark: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
