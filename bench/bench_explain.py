"""Gradient-method timings: ours vs captum's equivalent vs a bare forward pass, same process, same input.

    python -m bench.bench_explain [--quick] [--threads N] [--repeats R]

Models: the default EfficientNet-Lite0 (ImageNet weights) and ResNet-18 (cached ImageNet weights if present,
else random weights — timing does not depend on the values), both at 224². Figures are medians of R repeats
after one warm-up. Note: captum's GuidedBackprop only hooks nn.ReLU, so on EfficientNet-Lite (ReLU6) it
silently computes the plain gradient — timed anyway, marked with *.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import warnings

import torch
from PIL import Image
from skimage import data

from bench.common import interleaved_times
from interpret.attribution.cam import default_layer, gradcam
from interpret.attribution.guided_backprop import guided_backprop
from interpret.core.layers import get_module
from interpret.attribution.gradients import saliency


def _interleaved_medians(fns: dict[str, callable], repeats: int) -> dict[str, float]:
    """Median seconds of each function; every round runs all of them (order rotated each round) so that load
    from other processes hits ours and captum's alike."""
    return {n: statistics.median(v) for n, v in interleaved_times(fns, repeats).items()}


def _handles():
    from models import default, zoo
    from models.handle import ModelHandle

    yield default.load()
    if zoo.weights_status("resnet18").present:
        yield zoo.load("resnet18")
    else:
        torch.manual_seed(0)
        yield ModelHandle("resnet18", "ResNet-18 (random weights)", zoo.build("resnet18", weights=False),
                          zoo.preprocess_for("resnet18"), zoo.labels_for("resnet18"), "random")


def bench_handle(h, repeats: int) -> list[tuple]:
    from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam, Saliency

    img = Image.fromarray(data.chelsea())
    x = h.input_tensor(img)
    with torch.no_grad():
        target = int(h.net(x).argmax())
    layer = default_layer(h, tuple(x.shape[-2:]))
    mod = get_module(h.net, layer)

    def forward():
        with torch.no_grad():
            h.net(x)

    def captum_gradcam():
        raw = LayerGradCam(h.net, mod).attribute(x.clone(), target=target)
        LayerAttribution.interpolate(raw, tuple(x.shape[-2:]), interpolate_mode="bilinear")

    has_relu = any(isinstance(m, torch.nn.ReLU) for m in h.net.modules())
    cases = [
        ("Grad-CAM", lambda: gradcam(h, x, target), captum_gradcam),
        ("saliency", lambda: saliency(h, x, target),
         lambda: Saliency(h.net).attribute(x.clone(), target=target, abs=True).amax(1)),
        ("guided backprop" + ("" if has_relu else " *"), lambda: guided_backprop(h, x, target),
         lambda: GuidedBackprop(h.net).attribute(x.clone(), target=target)),
    ]
    fns = {"forward": forward}
    for name, ours, theirs in cases:
        fns[("ours", name)] = ours
        fns[("captum", name)] = theirs
    t = _interleaved_medians(fns, repeats)
    rows = [(h.name, "forward pass", t["forward"], None, t["forward"])]
    for name, _, _ in cases:
        rows.append((h.name, name, t[("ours", name)], t[("captum", name)], t["forward"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 9")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 9)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 224x224, median of {repeats}")
    header = f"{'model':34} {'method':18} {'ours s':>8} {'captum s':>9} {'ours/captum':>11} {'ours/fwd':>8}"
    print(header)
    print("-" * len(header))
    for h in _handles():
        for model, method, ours, theirs, fwd in bench_handle(h, repeats):
            cap = f"{theirs:9.4f}" if theirs is not None else f"{'':9}"
            ratio = f"{ours / theirs:11.2f}" if theirs is not None else f"{'':11}"
            print(f"{model:34} {method:18} {ours:8.4f} {cap} {ratio} {ours / fwd:8.2f}")
    print("* captum's GuidedBackprop ignores ReLU6, so on this model it returns the plain gradient.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
