"""LRP timings: one map on EfficientNet-Lite0 (ImageNet weights) at 224², our Zennit-based methods next to our
gradient × input and captum's LRP, and a VGG-11 (random weights) where captum's LRP applies.

    python -m bench.bench_lrp [--threads N] [--repeats R] [--no-vgg]

Medians of R interleaved repeats after one warm-up, in one process on the same input. Captum's LRP has no rule for
ReLU6 and none for residual sums, so on Lite0 it refuses (the error is printed); on VGG-11 both run.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics

import torch
from PIL import Image
from skimage import data

from interpret.attribution.gradients import grad_x_input
from bench.common import interleaved_times
from interpret.attribution.lrp import METHOD_FUNCTIONS


def _captum_lrp(net, x, target):
    from captum.attr import LRP

    return LRP(net).attribute(x.clone(), target=target)


def bench(h, repeats: int) -> None:
    x = h.input_tensor(Image.fromarray(data.chelsea()))
    with torch.no_grad():
        target = int(h.net(x).argmax())
    fns = {name: (lambda f=f: f(h, x, target)) for name, f in METHOD_FUNCTIONS.items()}
    fns["grad_x_input (ours)"] = lambda: grad_x_input(h, x, target)
    try:
        net = copy.deepcopy(h.net)  # captum's LRP sets rules as module attributes: it gets its own copy
        _captum_lrp(net, x, target)
        fns["captum LRP"] = lambda: _captum_lrp(net, x, target)
    except Exception as e:  # noqa: BLE001 - reported, not timed
        print(f"  captum LRP on {h.name}: refused — {type(e).__name__}: {str(e)[:160]}")
    for name, v in interleaved_times(fns, repeats).items():
        print(f"  {h.name:32s} {name:24s} {statistics.median(v):7.3f} s  (min {min(v):.3f}, max {max(v):.3f})")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-vgg", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from models import default, zoo
    from models.handle import ModelHandle

    print(f"torch {torch.__version__}, {a.threads} threads, median of {a.repeats}; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    bench(default.load(), a.repeats)
    if not a.no_vgg:
        torch.manual_seed(0)
        bench(ModelHandle("vgg11", "VGG-11 (random weights)", zoo.build("vgg11", weights=False),
                          zoo.preprocess_for("vgg11"), zoo.labels_for("vgg11"), "random"), a.repeats)


if __name__ == "__main__":
    main()
