"""Issue 7 speed figures: fast exact and approximate occlusion vs captum's Occlusion, the coarse first map, and fast
LIME vs lime's explain_instance, side by side in one process.

    python -m bench.bench_speed [--quick] [--threads 2] [--models efficientnet_lite0,resnet18,vgg16] [--repeats 3]
                                [--lime-seeds 5] [--no-occlusion] [--no-lime] [--no-interactive]

Occlusion: zero baseline, 224², window 15, stride 8 (784 windows; --quick: window 31, stride 16, 196 windows), chelsea.
captum ``Occlusion`` is timed at several ``perturbations_per_eval`` and its best is the reference; each side is run
``--repeats`` times interleaved (ours, captum, ours, …) and reported as median [min–max] of the repeats (a ratio is
of medians). Printed beside each time: the ratio to captum's best and the map's max relative error to captum's map
(exact) or the SSIM / same-maximum figure to the exact map (approximate). Each section first prints what the
model's warm-up (``interpret.engines.warmup``: the copies the fast methods use, built once per model) took, step by step —
the first-call costs the app moves out of the user's click — and the machine's load (``os.getloadavg``) before
and after; the header gives the threads and the load, the summary the load over the whole run. Without ImageNet weights in the hub cache, resnet18 / vgg16 have random weights.
LIME on the default model, on every bundled photo and ``--lime-seeds`` seeds: lime's ``explain_instance`` defaults
(1000 samples, batch 10, top 5 labels) vs ``lime_fast`` (adaptive), both on one seeded quickshift segmentation per
photo whose time is charged to both; trust: the mean top-5 overlap of ``lime_fast`` (seed i) with a 1000-sample
lime run (seed j ≠ i), beside the overlap of two 1000-sample lime runs (seeds i ≠ j).
Interactive views on the default model (``bench.bench_interactive``). The run ends with the five figures beside
their peers and goals.

README's figures: ``python -m bench.bench_speed --repeats 5`` on a quiet machine (about 20 min on 2 cores; the
closing line flags a run that shared the machine: load before it began, or more than its own threads' load
during it), ``--models efficientnet_lite0 --no-lime`` for a
short one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from bench.bench_occlusion_lime import _handle  # noqa: E402
from models.images import sample_images  # noqa: E402



_MARK = "FIGURES "


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def spread(ts: list[float]) -> dict:
    """Median and range of repeated timings."""
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "n": len(ts)}


def fmt(st: dict, digits: int = 2) -> str:
    """"median [min–max] s" (just the value for a single run)."""
    if st["n"] == 1:
        return f"{st['median']:.{digits}f} s (1 run)"
    return f"{st['median']:.{digits}f} [{st['min']:.{digits}f}–{st['max']:.{digits}f}] s"


def load() -> str:
    """The machine's load averages (1, 5, 15 min) and its CPU count."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


def _row(label: str, ts: list[float], ref: float, note: str = "") -> None:
    st = spread(ts)
    print(f"{label:46} {fmt(st):>26} {ref / st['median']:8.1f}x  {note}")


def bench_occlusion(h, window: int, stride: int, ppes: list[int], repeats: int, approx: bool) -> dict:
    """Print the occlusion rows for one model; return its figures for the summary."""
    from captum.attr import Occlusion

    from interpret.attribution.occlusion import occlusion_incremental
    from interpret.attribution.occlusion_approx import approx_occlusion, coarse_occlusion
    from interpret.engines.incremental import bf16_pays
    from interpret.evaluation.approximation import quality

    x = h.input_tensor(Image.fromarray(data.chelsea()))
    with torch.inference_mode():
        target = int(h.net(x).argmax())
    _warm_up(h)
    occlusion_incremental(h, x, target, window=112, stride=112)  # first calls, untimed
    approx_occlusion(h, x, target, window=112, stride=112)

    def captum(ppe):
        with torch.no_grad():
            return Occlusion(h.net).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                              strides=(3, stride, stride), baselines=0,
                                              perturbations_per_eval=ppe)[0, 0].numpy()

    cap_t: dict[int, list[float]] = {p: [] for p in ppes}
    ours_t, apx_t = [], []
    cap_maps = {}
    for r in range(repeats):
        t, ours = _time(lambda: occlusion_incremental(h, x, target, window=window, stride=stride))
        ours_t.append(t)
        for p in ppes:
            if r > 0 and p != min(cap_t, key=lambda q: statistics.median(cap_t[q])):
                continue  # after the first round only captum's best setting is repeated
            t, cap_maps[p] = _time(lambda p=p: captum(p))
            cap_t[p].append(t)
        if approx:
            t, apx = _time(lambda: approx_occlusion(h, x, target, window=window, stride=stride))
            apx_t.append(t)
    best = min(cap_t, key=lambda q: statistics.median(cap_t[q]))
    ref_t, ref = statistics.median(cap_t[best]), cap_maps[best]
    print(f"{'side':46} {'seconds: median [min–max]':>26} {'speed-up':>9}  quality")
    for p in ppes:
        floor = "" if p == best or len(cap_maps) < 2 else f"rel.err to best {_rel(cap_maps[p], ref):.1e}"
        _row(f"captum Occlusion ppe={p}" + (" (best)" if p == best else ""), cap_t[p], ref_t, floor)
    fig = {"captum": spread(cap_t[best]), "exact": spread(ours_t), "err": _rel(ours.map, ref)}
    _row("ours exact (incremental)", ours_t, ref_t,
         f"max rel.err to captum {fig['err']:.1e}  [{ours.extra['engine']}]")
    if approx:
        q = quality(apx.map, ours.map)
        fig.update(approx=spread(apx_t), ssim=q["ssim"], same_max=bool(q["same_argmax"]))
        prec = "bf16 Δ" if apx.params.get("low_precision") else "float32"
        _row(f"ours approx (tol {apx.params['tolerance']}, {prec}) {apx.extra['fraction']:.0%} windows",
             apx_t, ref_t, f"SSIM {q['ssim']:.3f}, same max {q['same_argmax']}")
        fig.update(_approx_on_photos(h, window, stride))
    firsts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        first = next(iter(coarse_occlusion(h, x, target, window=window, stride=stride,
                                           low_precision=bf16_pays())))
        firsts.append(time.perf_counter() - t0)
    fig["first"] = spread(firsts)
    q = quality(first.map, ours.map)
    print(f"coarse first map: {fmt(fig['first'])} ({first.extra['evaluated']} windows), "
          f"SSIM {q['ssim']:.3f} to the exact map")
    return fig


def _warm_up(h) -> dict:
    """Run the model's warm-up (in this fresh process: nothing built yet) and print each step's seconds."""
    from interpret.engines.warmup import warm_up

    rep = warm_up(h)
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in rep.seconds.items())
    print(f"warm-up (first-call costs, once per model, off the user's click): {rep.total:.2f} s — {steps}"
          + (f"; errors: {rep.errors}" if rep.errors else ""))
    return {"total": rep.total, **rep.seconds}


def _approx_on_photos(h, window: int, stride: int) -> dict:
    """The approximate map's quality on every bundled photo (its own predicted class), not only the timed one."""
    from interpret.attribution.occlusion import occlusion_incremental
    from interpret.attribution.occlusion_approx import approx_occlusion
    from interpret.evaluation.approximation import quality

    ssims, same, fracs, secs = [], [], [], []
    for name, img in sample_images().items():
        x = h.input_tensor(img)
        with torch.inference_mode():
            target = int(h.net(x).argmax())
        exact = occlusion_incremental(h, x, target, window=window, stride=stride)
        apx = approx_occlusion(h, x, target, window=window, stride=stride)
        q = quality(apx.map, exact.map)
        ssims.append(q["ssim"])
        same.append(bool(q["same_argmax"]))
        fracs.append(apx.extra["fraction"])
        secs.append(apx.seconds)
        print(f"  approx on {name:22} {apx.seconds:5.2f} s  {apx.extra['fraction']:4.0%} windows  "
              f"SSIM {q['ssim']:.3f}  same max {q['same_argmax']}")
    print(f"  approx on all {len(ssims)} photos: SSIM min {min(ssims):.3f}, mean {np.mean(ssims):.3f}; "
          f"same max {sum(same)}/{len(same)}; {np.mean(fracs):.0%} of windows, {np.mean(secs):.2f} s on average")
    return {"photos_ssim_min": min(ssims), "photos_same_max": sum(same), "photos": len(same)}


def _classifier(h):
    """The classifier function a plain ``lime`` user writes: numpy images in, softmax probabilities out."""

    def classifier_fn(images):
        batch = h.preprocess.normalize(torch.from_numpy(images).float().permute(0, 3, 1, 2))
        with torch.no_grad():
            return torch.softmax(h.net(batch), dim=1).numpy()

    return classifier_fn


def _top5(w) -> set:
    return set(np.argsort(-np.asarray(w), kind="stable")[:5].tolist())


def bench_lime(h, num_samples: int, seeds: int) -> dict:
    """Print LIME's time and trust rows over the bundled photos; return the figures for the summary.

    Per photo: one seeded quickshift segmentation (lime's default parameters), timed once and charged to both sides;
    then for each seed, lime's ``explain_instance`` at its defaults (1000 samples, batch 10, top 5 labels) and
    ``lime_fast`` (adaptive) on that segmentation, each timed.
    """
    from lime.lime_image import LimeImageExplainer

    from interpret.attribution.lime_fast import lime_fast
    from interpret.attribution.lime import make_segmenter

    classifier_fn = _classifier(h)
    photos = sample_images()
    _warm_up(h)
    lime_fast(h, h.input_tensor(photos["coffee"]), 0, num_samples=50)  # first call, untimed
    print(f"{'photo':22} {'superpixels':>11} {'lime s':>7} {'fast s':>7} {'speed-up':>8} {'samples':>8}   "
          f"top-5 agreement lime↔lime, fast↔lime")
    ll, fl, used, t_lime, t_fast = [], [], [], [], []
    for name, photo in photos.items():
        xp = h.input_tensor(photo)
        with torch.inference_mode():
            tp = int(h.net(xp).argmax())
        img = h.preprocess.to_display(xp[0]).astype(np.float64)
        t_seg, segs = _time(lambda: make_segmenter("quickshift", None, 0)(img))
        n_seg = int(segs.max()) + 1
        lime_w, fast_w, tl, tf, u = [], [], [], [], []
        for s in range(seeds):
            t, exp = _time(lambda s=s: LimeImageExplainer(random_state=s).explain_instance(
                img, classifier_fn, num_samples=num_samples, segmentation_fn=lambda _: segs, random_seed=s))
            tl.append(t_seg + t)
            w = np.zeros(n_seg)
            for k, v in exp.local_exp[tp]:
                w[k] = v
            lime_w.append(w)
            t, a = _time(lambda s=s: lime_fast(h, xp, tp, seed=s, segments=segs))  # its defaults: ≤ 700, adaptive
            tf.append(t_seg + t)
            fast_w.append([a.extra["weights"][k] for k in range(n_seg)])
            u.append(a.extra["samples_used"])
        pl = [len(_top5(lime_w[i]) & _top5(lime_w[j])) / 5 for i in range(seeds) for j in range(i + 1, seeds)]
        pf = [len(_top5(fast_w[i]) & _top5(lime_w[j])) / 5 for i in range(seeds) for j in range(seeds) if i != j]
        ll += pl
        fl += pf
        used += u
        t_lime += tl
        t_fast += tf
        print(f"{name:22} {n_seg:11d} {np.mean(tl):7.2f} {np.mean(tf):7.2f} {np.mean(tl) / np.mean(tf):7.1f}x "
              f"{np.mean(u):8.0f}   {np.mean(pl):.2f}, {np.mean(pf):.2f}")
    lime_t, fast_t = float(np.mean(t_lime)), float(np.mean(t_fast))
    print(f"mean over {len(photos)} photos × {seeds} seeds: lime {lime_t:.2f} s, fast {fast_t:.2f} s "
          f"({lime_t / fast_t:.1f}x, {np.mean(used):.0f} samples); top-5 agreement lime↔lime {np.mean(ll):.3f}, "
          f"fast↔lime {np.mean(fl):.3f}")
    print(f"per run (photo, seed): lime {fmt(spread(t_lime))}, fast {fmt(spread(t_fast))}")
    return {"lime": lime_t, "fast": fast_t, "lime_runs": spread(t_lime), "fast_runs": spread(t_fast),
            "lime_lime": float(np.mean(ll)), "fast_lime": float(np.mean(fl))}


def _section(args, name: str) -> object:
    """Run one section (``occlusion:<model>``, ``lime`` or ``interactive``) and return its figures."""
    window, stride = (31, 16) if args.quick else (15, 8)
    repeats = 1 if args.quick else args.repeats
    if name.startswith("occlusion:"):
        key = name.split(":", 1)[1]
        h = _handle(key)
        print(f"\n## occlusion · {h.name}")
        ppes = [8, 16] if key == "vgg16" else [4, 8, 16, 64]
        return bench_occlusion(h, window, stride, ppes, 1 if key == "vgg16" else repeats, approx=key != "vgg16")
    from models import default

    h = default.load()
    if name == "lime":
        print(f"\n## LIME · {h.name}")
        return bench_lime(h, 1000, 2 if args.quick else args.lime_seeds)
    from bench.bench_interactive import measure, report

    print(f"\n## interactive views · {h.name} (median of {3 if args.quick else 5})")
    rows = measure(h, 3 if args.quick else 5)
    report(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="window 31, stride 16 (196 windows), one repeat, 2 LIME seeds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="efficientnet_lite0,resnet18,vgg16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-lime", action="store_true")
    ap.add_argument("--no-occlusion", action="store_true")
    ap.add_argument("--no-interactive", action="store_true")
    ap.add_argument("--lime-seeds", type=int, default=5, help="seeds per photo for the LIME agreement figure")
    ap.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section in this (fresh) process
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.section:
        print(f"{load()} at the start of the section")
        figures = _section(args, args.section)
        print(f"{load()} at the end of the section")
        print(_MARK + json.dumps(figures))
        return 0
    window, stride = (31, 16) if args.quick else (15, 8)
    start_load = os.getloadavg()
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads ({os.cpu_count()} CPUs), {load()}, "
          f"224x224, window {window}, stride {stride}, median [min–max] of {1 if args.quick else args.repeats}; "
          f"each section in a fresh process")
    sections = [] if args.no_occlusion else [f"occlusion:{k.strip()}" for k in args.models.split(",")]
    sections += ([] if args.no_lime else ["lime"]) + ([] if args.no_interactive else ["interactive"])
    passed = list(argv if argv is not None else sys.argv[1:])
    figures = {}
    for name in sections:
        # A fresh process per section: the memory state a section leaves behind (VGG16's gigabytes of activations,
        # the allocator's thresholds) changes the next section's timings by up to 2x, for either side.
        out = subprocess.run([sys.executable, "-m", "bench.bench_speed", *passed, "--section", name],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith(_MARK):
                figures[name] = json.loads(line[len(_MARK):])
            else:
                print(line, flush=True)
    occ = {k.split(":", 1)[1]: v for k, v in figures.items() if k.startswith("occlusion:")}
    summary(occ, figures.get("lime"), figures.get("interactive"))
    end_load = os.getloadavg()
    print(f"\nrun took {(time.perf_counter() - t_start) / 60:.1f} min on {torch.get_num_threads()} torch threads; "
          f"1-min load {start_load[0]:.2f} at the start, {end_load[0]:.2f} at the end, 15-min {end_load[2]:.2f} "
          f"({os.cpu_count()} CPUs)" + ("  — NOT a quiet machine: rerun for README's figures"
                                        if not quiet(start_load[0], end_load[2], torch.get_num_threads(),
                                                     os.cpu_count() or 1) else ""))
    return 0


def quiet(start_1min: float, end_15min: float, threads: int, cpus: int) -> bool:
    """Whether the run had the machine to itself: little load before it began, and over its last 15 minutes no
    more than its own threads (each busy thread adds about 1 to the load average) plus a quarter of a core."""
    return start_1min <= 0.5 * cpus and end_15min <= min(threads, cpus) + 0.25


def summary(occ: dict[str, dict], lime_fig: dict | None, inter: list | None) -> None:
    """The issue's five figures, each beside its peer and its goal: timings as median [min–max] of the repeats,
    ratios of medians."""
    print("\n## the five figures (goal → measured)")
    goals = {"vgg16": 6.0, "resnet18": 2.5, "efficientnet_lite0": 1.5}
    med = lambda st: st["median"]
    rows = []
    for key, f in occ.items():
        r = med(f["captum"]) / med(f["exact"])
        rows.append((f"1 exact occlusion {key}", f"captum {fmt(f['captum'])}", fmt(f["exact"]), r,
                     f"≥ {goals.get(key, 1.0)}×, err ≤ 1e-4 (err {f['err']:.1e})",
                     r >= goals.get(key, 1.0) and f["err"] <= 1e-4))
    if "resnet18" in occ and "approx" in occ["resnet18"]:
        f = occ["resnet18"]
        r = med(f["captum"]) / med(f["approx"])
        rows.append(("2 approximate occlusion resnet18", f"captum {fmt(f['captum'])}", fmt(f["approx"]), r,
                     f"≥ 10×, SSIM ≥ 0.9 (SSIM {f['ssim']:.3f}, same max {f['same_max']}; "
                     f"{f['photos']} photos: SSIM ≥ {f['photos_ssim_min']:.3f}, same max {f['photos_same_max']})",
                     r >= 10 and f["ssim"] >= 0.9 and f["same_max"]))
    if "efficientnet_lite0" in occ:
        f = occ["efficientnet_lite0"]
        rows.append(("3 first occlusion map, default model", f"exact map {fmt(f['exact'])}", fmt(f["first"]),
                     med(f["exact"]) / med(f["first"]), "≤ 1 s", med(f["first"]) <= 1.0))
    if lime_fig:
        f = lime_fig
        rows.append(("4 LIME, default model (mean)", f"lime {f['lime']:.2f} s", f"{f['fast']:.2f} s",
                     f["lime"] / f["fast"],
                     f"≥ 3×, agreement ≥ lime↔lime ({f['fast_lime']:.3f} vs {f['lime_lime']:.3f}); per run: lime "
                     f"{fmt(f['lime_runs'])}, fast {fmt(f['fast_runs'])}",
                     f["lime"] / f["fast"] >= 3 and f["fast_lime"] >= f["lime_lime"]))
    if inter:
        fwd, cap = inter[0][1], inter[1][1]
        up = inter[2][1]
        rows.append(("5 upload → 4 explanation plots (median)", f"captum 3 maps {cap:.3f} s", f"{up:.3f} s",
                     cap / up, "≤ 1 s", up <= 1.0))
        worst = max(row[1] for row in inter[3:])
        rows.append(("5 slowest layer/channel switch (median)", f"forward {fwd:.3f} s", f"{worst:.3f} s", fwd / worst,
                     "≤ 0.15 s", all(row[1] <= 0.15 for row in inter[3:])))
    print(f"{'figure':42} {'peer':>36} {'ours':>26} {'ratio':>7}  goal")
    for name, peer, ours, ratio, goal, ok in rows:
        print(f"{name:42} {peer:>36} {ours:>26} {ratio:6.1f}×  {goal}  {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    sys.exit(main())
