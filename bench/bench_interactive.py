"""Interactive-view latency on the default model (server time, no browser): from the bytes of a new upload to the
CAM, Grad-CAM, saliency and guided-backprop figures, and switching layer or channel on a computed view.

    python -m bench.bench_interactive [--repeats R] [--threads N]

Each step is what the pages run (decode → preprocess → method → plotly figure → JSON the browser receives);
a bare forward pass and captum's Grad-CAM, saliency and guided backprop on the same input are timed beside it. Budgets from the speed issue: ≤ 1 s for a new upload, ≤ 150 ms for a
layer or channel switch.
"""
from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import torch
from PIL import Image
from skimage import data

from interpret.units.activations import layer_activations, unit_box
from interpret.attribution.registry import METHODS, explain
from interpret.plots.attribution import overlay_figure, rgb_figure
from interpret.plots.units import activation_grid_figure, channel_map_figure, image_box_figure
from models import default
from models.images import decode_image


def _median(fn, repeats: int) -> tuple[float, tuple[float, float]]:
    """(median, (min, max)) seconds of ``repeats`` runs after one untimed run."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), (min(ts), max(ts))


def measure(h, repeats: int = 5) -> list[tuple[str, float, float | None, tuple[float, float]]]:
    """(step, median seconds, budget or None, (min, max) seconds) for a bare forward pass, captum's Grad-CAM + saliency + guided
    backprop on the same input (the peer, attributions only, no figures), a new upload to our four figures, and the
    three switches."""
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, "JPEG", quality=92)
    upload = buf.getvalue()

    def new_upload():
        img = decode_image(upload)
        x = h.input_tensor(img)
        target = int(np.argmax(h.predict(x)))
        view = np.asarray(h.preprocess.view(img), dtype=np.float32) / 255
        for m in ("cam", "gradcam", "saliency", "guided_backprop"):
            attr = explain(h, x, target, m)
            overlay_figure(view, attr, method_label=METHODS[m].label).to_json()
            if "rgb" in attr.extra:
                rgb_figure(attr.extra["rgb"]).to_json()

    img = decode_image(upload)
    x = h.input_tensor(img)
    target = int(np.argmax(h.predict(x)))
    view = np.asarray(h.preprocess.view(img), dtype=np.float32) / 255
    layers = ["_blocks.4", "_blocks.10", "_blocks.15"]
    state = {"i": 0}

    def switch_gradcam_layer():
        state["i"] += 1
        attr = explain(h, x, target, "gradcam", layer=layers[state["i"] % len(layers)])
        overlay_figure(view, attr, method_label=METHODS["gradcam"].label).to_json()

    def switch_activation_layer():
        state["i"] += 1
        acts = layer_activations(h, x, layers[state["i"] % len(layers)])
        activation_grid_figure(acts, max_maps=64).to_json()

    acts = layer_activations(h, x, "_blocks.4")

    def switch_channel():
        state["i"] += 1
        ch = state["i"] % acts.channels
        unit = tuple(int(v) for v in np.unravel_index(int(acts.maps[ch].argmax()), acts.maps[ch].shape))
        channel_map_figure(acts, ch, unit).to_json()
        image_box_figure(view, unit_box(h, acts, unit)).to_json()

    def forward():
        with torch.no_grad():
            h.net(x)

    def captum_maps():
        from captum.attr import GuidedBackprop, LayerGradCam, Saliency

        xg = x.clone().requires_grad_(True)
        LayerGradCam(h.net, h.net.get_submodule(layers[-1])).attribute(xg, target=target)
        Saliency(h.net).attribute(xg, target=target)
        GuidedBackprop(h.net).attribute(xg, target=target)

    steps = [("bare forward pass", forward, None),
             ("captum Grad-CAM + saliency + guided backprop (maps only)", captum_maps, None),
             ("new upload → CAM, Grad-CAM, saliency, guided backprop figures", new_upload, 1.0),
             ("switch Grad-CAM layer", switch_gradcam_layer, 0.15),
             ("switch activation-map layer (64 maps)", switch_activation_layer, 0.15),
             ("switch channel / unit (map + receptive-field box)", switch_channel, 0.15)]
    rows = []
    for name, fn, budget in steps:
        median, span = _median(fn, repeats)
        rows.append((name, median, budget, span))
    return rows


def report(rows: list[tuple[str, float, float | None, tuple[float, float]]]) -> None:
    print(f"{'step':62s} {'median s':>8s} {'[min–max]':>15s} {'budget':>7s} {'× forward':>9s}")
    fwd = rows[0][1]
    for name, t, budget, (lo, hi) in rows:
        ok = "" if budget is None else ("ok" if t <= budget else "OVER")
        print(f"{name:62s} {t:8.3f} {f'[{lo:.3f}–{hi:.3f}]':>15s} {'' if budget is None else f'{budget:.2f}':>7s} "
              f"{t / fwd:9.1f} {ok}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = measure(default.load(), a.repeats)
    print(f"torch threads: {torch.get_num_threads()}; median [min–max] of {a.repeats}")
    report(rows)


if __name__ == "__main__":
    main()
