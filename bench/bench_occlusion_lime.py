"""Occlusion and LIME timings: ours vs captum's Occlusion / lime's explain_instance vs bare forward passes.

    python -m bench.bench_occlusion_lime [--quick] [--threads N] [--models efficientnet_lite0,resnet18]

Occlusion: zero baseline, window 15, stride 8 at 224² (784 windows; --quick: window 32, stride 32, 49 windows). Sides:
ours exact (the shared net, bit-for-bit captum's numerics), ours fast (private BN-folded channels-last copy),
captum ``Occlusion`` at its best ``perturbations_per_eval`` (several tried), the floor of one bare batch-1 forward
pass per window (×784), and the same windows' forward passes batched with nothing else (the batching floor).
The max relative error of each map to captum's is printed beside its time.
LIME: 1000 samples (--quick: 100) on the default model; ours (batch 10) vs ``LimeImageExplainer.explain_instance``
with its defaults (quickshift 4/200/0.2, batch 10, top 5 labels) and the usual classifier function.
Each side runs once per model after a warm-up (a run takes tens of seconds); run on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # lime's per-sample bar; tqdm reads it on import (torch imports it)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402
from bench.common import lime_setup  # noqa: E402

def _handle(key: str):
    from models import default, zoo
    from models.handle import ModelHandle

    if key == default.KEY:
        return default.load()
    if zoo.weights_status(key).present:
        return zoo.load(key)
    torch.manual_seed(0)
    return ModelHandle(key, f"{zoo.DISPLAY.get(key, key)} (random weights)", zoo.build(key, weights=False),
                       zoo.preprocess_for(key), zoo.labels_for(key), "random")


def _time(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def bench_occlusion(h, window: int, stride: int, ppes: list[int]) -> list[tuple[str, float, float | None]]:
    from captum.attr import Occlusion

    from interpret.attribution.occlusion import occlusion
    from interpret.engines.windows import window_grid

    x = h.input_tensor(Image.fromarray(data.chelsea()))
    with torch.inference_mode():
        target = int(h.net(x).argmax())
    n = len(window_grid(224, 224, window, stride))
    occlusion(h, x, target, window=112, stride=112, engine="batched", fast=True)  # warm-up, builds the fast copy

    def single_forward():
        with torch.inference_mode():
            h.net(x)

    single_forward()
    one = statistics.median(_time(single_forward)[0] for _ in range(15))

    def batched_floor(bs=32):
        with torch.inference_mode():
            for s in range(0, n, bs):
                h.net(x.expand(min(bs, n - s), -1, -1, -1).clone())

    rows = [(f"bare forward ×{n} (batch 1)", one * n, None)]
    rows.append((f"bare forward ×{n} (batch 32)", _time(batched_floor)[0], None))
    best = None
    for ppe in ppes:
        def cap(ppe=ppe):
            with torch.no_grad():
                return Occlusion(h.net).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                                  strides=(3, stride, stride), baselines=0,
                                                  perturbations_per_eval=ppe)[0, 0].numpy()
        t, ref = _time(cap)
        rows.append((f"captum Occlusion ppe={ppe}", t, None))
        if best is None or t < best[0]:
            best = (t, ref, ppe)
    ref = best[1]
    for label, kw in (("ours exact (batch 32)", dict(engine="batched", fast=False, batch_size=32)),
                      ("ours exact (batch 64)", dict(engine="batched", fast=False, batch_size=64)),
                      ("ours fast (batch 64)", dict(engine="batched", fast=True, batch_size=64))):
        t, a = _time(lambda kw=kw: occlusion(h, x, target, window=window, stride=stride, **kw))
        rows.append((label, t, _rel(a.map, ref)))
    rows.append((f"= captum best (ppe={best[2]})", best[0], 0.0))
    return rows


def bench_lime(h, num_samples: int) -> list[tuple[str, float, float | None]]:
    from lime.lime_image import LimeImageExplainer

    from interpret.attribution.lime import lime_explain

    x, target, image, classifier_fn = lime_setup(h)

    lime_explain(h, x, target, num_samples=20)  # warm-up
    t_lime, exp = _time(lambda: LimeImageExplainer(random_state=0).explain_instance(
        image, classifier_fn, num_samples=num_samples))
    t_ours, ours = _time(lambda: lime_explain(h, x, target, num_samples=num_samples, seed=0))
    rows = [(f"lime explain_instance defaults ({num_samples} samples, batch 10)", t_lime, None),
            (f"ours lime_explain ({num_samples} samples, batch 10)", t_ours, None)]

    def forwards(bs=50):
        with torch.inference_mode():
            for s in range(0, num_samples, bs):
                h.net(x.expand(min(bs, num_samples - s), -1, -1, -1).clone())

    rows.append((f"bare forward ×{num_samples} (batch 50)", _time(forwards)[0], None))
    n_seg = int(ours.extra["segments"].max()) + 1
    rows.append((f"  ({n_seg} superpixels; lime's {int(exp.segments.max()) + 1})", float("nan"), None))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="window = stride = 32 (49 windows), LIME 100 samples")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--models", default="efficientnet_lite0,resnet18")
    ap.add_argument("--no-lime", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    window, stride, ppes, samples = (32, 32, [32], 100) if args.quick else (15, 8, [16, 64, 128], 1000)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 224x224, window {window}, stride {stride}")
    for key in args.models.split(","):
        h = _handle(key.strip())
        print(f"\n## occlusion · {h.name}")
        rows = bench_occlusion(h, window, stride, ppes)
        cap = rows[-1][1]
        print(f"{'side':42} {'seconds':>8} {'÷captum':>8} {'rel.err':>9}")
        for label, t, err in rows:
            e = f"{err:9.1e}" if err is not None else ""
            print(f"{label:42} {t:8.2f} {t / cap:8.2f} {e}")
        if not args.no_lime and key.strip() == "efficientnet_lite0":
            print(f"\n## LIME · {h.name}")
            rows = bench_lime(h, samples)
            base = rows[0][1]
            for label, t, _ in rows:
                if np.isnan(t):
                    print(label)
                else:
                    print(f"{label:52} {t:8.2f} s  ÷lime {t / base:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
