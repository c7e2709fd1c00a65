"""Synthesized images, ours against torch-lucent's ``render_vis``, side by side in one process on the same models,
the same steps and the same seeds — what they look like to other networks, how high they drive a unit, and how
long they take.

    pip install -r requirements-bench.txt        # torch-lucent 0.1.8 and what it needs (bench only)
    python -m bench.bench_synthesis --out bench_out/synthesis            # the full run (512 steps)
    python -m bench.bench_synthesis --quick                              # a smoke run (8 steps, few classes)
    python -m bench.bench_synthesis --time-only --steps 64 --repeats 5  # time per image-step only

1. **Transfer.** Class images for 20 fixed ImageNet classes are made on EfficientNet-Lite0 and classified by
   EfficientNet-Lite1 and -Lite2 (and by Lite0 itself, the maker): the share of images whose target class is top-1
   and top-5. The same on the classroom models: made on the clean model and judged by the Clever Hans model, and
   the reverse (all 6 classes). A judge sees the optimised image resized (bilinear) to its input size with its own
   normalisation; both libraries' images are judged by the same code.
2. **Activation reached.** For 20 channels of two Lite0 layers (seeded draw), the channel objective reached on the
   finished image (no transforms, resized to 224) divided by the best value of the same quantity over the app's
   bundled photos (``models.images.sample_images``, 6 photos at the model's preprocessing): the channel mean (what
   both libraries maximise), and the channel's largest unit — the value of its best natural top patch.
3. **Time** per image-step, each side's own loop, with the load average.

Lucent's defaults are kept (``param.image(128)``, Adam lr 0.05, ``standard_transforms``, upsampling to 224) with
one exception: its ``preprocess=True`` appends ImageNet's mean/std, which is not EfficientNet-Lite's (0.498/0.502)
nor the classroom models'; the model's own normalisation is appended instead (``preprocess=False``), and for the
64² classroom models ``fixed_image_size=64`` replaces Lucent's upsampling to 224. Lucent hooks every module of the
model it is given and never removes the hooks: it gets a private copy of each network. Its random transforms draw
from numpy's and torch's global generators, seeded before each run. Classes or channels are optimised a few at a
time as one batch (``--batch``), each image with its own term (``channel(..., batch=i)`` in Lucent), which
optimises each image only through its own term in both libraries.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from interpret.units.synthesis import objectives as O
from interpret.units.synthesis.render import preset, synthesize, term_values
from models.handle import ModelHandle
from models.registry import load_model

# 20 well-known, clearly different ImageNet classes (torchvision's index → name).
CLASSES = (1, 22, 94, 130, 145, 291, 309, 323, 388, 417, 437, 471, 508, 574, 609, 817, 892, 948, 963, 980)
LAYERS = ("_blocks.6", "_blocks.12")
CLASSROOM = (("classroom_clean", "classroom_spurious"), ("classroom_spurious", "classroom_clean"))


# ---- judging ---------------------------------------------------------------------------------------------------

def to_input(images: np.ndarray, handle: ModelHandle) -> torch.Tensor:
    """N×H×W×3 images in [0, 1] → the judge's normalised input (bilinear resize to its input size)."""
    x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    size = tuple(int(v) for v in handle.input_size)
    if tuple(x.shape[2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return handle.preprocess.normalize(x)


def ranks(images: np.ndarray, targets: Sequence[int], judge: ModelHandle) -> list[int]:
    """The rank (0 = top-1) of each image's target class among the judge's logits."""
    with torch.no_grad(), judge.lock:
        logits = judge.net(to_input(images, judge))
    order = torch.argsort(logits, dim=1, descending=True)
    return [int((order[i] == t).nonzero()[0, 0]) for i, t in enumerate(targets)]


def hit_rates(rank_list: Sequence[int]) -> tuple[float, float]:
    r = np.asarray(rank_list)
    return float((r == 0).mean()), float((r < 5).mean())


def natural_best(handle: ModelHandle, layer: str, channels: Sequence[int],
                 photos: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the largest channel mean and the largest single unit over ``photos`` (PIL images at the
    model's preprocessing) — the second is the channel's best top-patch activation."""
    means, peaks = np.full(len(channels), -np.inf), np.full(len(channels), -np.inf)
    for img in photos:
        x = handle.preprocess(img).unsqueeze(0)
        m, p = channel_stats(handle, layer, channels, x)
        means, peaks = np.maximum(means, m[0]), np.maximum(peaks, p[0])
    return means, peaks


def channel_stats(handle: ModelHandle, layer: str, channels: Sequence[int],
                  x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N×K channel means, N×K largest units) of ``channels`` at ``layer`` for a normalised input batch."""
    from interpret.core.layers import capture

    with torch.no_grad(), capture(handle, layer, stop=False) as cap:
        cap.run(x)
        a = cap.output[:, list(channels)].flatten(2)
    return a.mean(2).double().numpy(), a.amax(2).double().numpy()


def reached(handle: ModelHandle, layer: str, channels: Sequence[int], images: np.ndarray):
    """The same two quantities on finished images (resized to the input size, no random transforms)."""
    return channel_stats(handle, layer, channels, to_input(images, handle))


# ---- the two renderers -----------------------------------------------------------------------------------------

@dataclass
class Run:
    images: np.ndarray
    seconds: float
    steps: int


def ours(handle: ModelHandle, objective: O.Objective, batch: int, steps: int, seed: int) -> Run:
    s = preset("quality", steps=steps, batch=batch, seed=seed, progress_every=0)
    t0 = time.perf_counter()
    res = synthesize(handle, objective, s)
    return Run(res.images, time.perf_counter() - t0, steps)


def lucent_module_name(net: torch.nn.Module, path: str) -> str:
    """Lucent's name for a module: the module path with "_" for "." (its hook_model joins the parts with "_")."""
    if path not in dict(net.named_modules()):
        raise KeyError(path)
    return path.replace(".", "_")


def lucent(handle: ModelHandle, terms: Sequence[tuple[str, int]], steps: int, seed: int,
           fixed_size: int | None = None) -> Run:
    """Lucent's render_vis with its defaults on a private copy of the net; ``terms``: (module path, channel) per
    image of the batch (the logits: the final Linear's path)."""
    from lucent.optvis import objectives as LO, param as LP, render as LR, transform as LT

    net = copy.deepcopy(handle.net).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    normalize = handle.preprocess.normalize
    obj = None
    for i, (path, ch) in enumerate(terms):
        o = LO.channel(lucent_module_name(net, path), int(ch), batch=i)
        obj = o if obj is None else obj + o
    np.random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    images = LR.render_vis(net, obj, lambda: LP.image(128, batch=len(terms)), thresholds=(steps,),
                           transforms=list(LT.standard_transforms) + [normalize], preprocess=False,
                           progress=False, show_image=False, fixed_image_size=fixed_size)
    return Run(np.asarray(images[-1], dtype=np.float32), time.perf_counter() - t0, steps)


def final_linear(net: torch.nn.Module) -> str:
    return [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)][-1]


# ---- the sections ----------------------------------------------------------------------------------------------

def chunks(seq: Sequence, n: int) -> list[Sequence]:
    return [seq[i:i + n] for i in range(0, len(seq), n)]


def render_both(maker: ModelHandle, batches: list[list[tuple[O.Objective, tuple[str, int]]]], steps: int,
                seed: int, with_lucent: bool, fixed_size: int | None = None, log: Callable = print):
    """Each batch by both libraries, alternating (so load changes hit both alike). Returns
    {name: (images N×H×W×3, seconds, image-steps)}."""
    out = {"ours": [], "lucent": []}
    secs = {"ours": 0.0, "lucent": 0.0}
    # untimed warm-up of both loops on the first batch (first-call kernels and allocations)
    ours(maker, sum(o for o, _ in batches[0]), len(batches[0]), 2, seed)
    if with_lucent:
        lucent(maker, [t for _, t in batches[0]], 2, seed, fixed_size)
    for k, batch in enumerate(batches):
        obj = sum(o for o, _ in batch)
        r = ours(maker, obj, len(batch), steps, seed + k)
        out["ours"].append(r.images)
        secs["ours"] += r.seconds
        if with_lucent:
            r2 = lucent(maker, [t for _, t in batch], steps, seed + k, fixed_size)
            out["lucent"].append(r2.images)
            secs["lucent"] += r2.seconds
        log(f"  batch {k + 1}/{len(batches)}: ours {r.seconds:.1f} s" +
            (f", lucent {r2.seconds:.1f} s" if with_lucent else ""))
    n = sum(len(b) for b in batches)
    return {name: (np.concatenate(v), secs[name], n * steps) for name, v in out.items() if v}


def transfer(args, with_lucent: bool, log=print) -> dict:
    res = {"classes": [], "imagenet": {}, "classroom": {}, "time": {}, "_images": {}}
    if "imagenet" in args.sections:
        res.update(_imagenet(args, with_lucent, log))
    if "classroom" in args.sections:
        _classroom(args, with_lucent, res, log)
    return res


def _imagenet(args, with_lucent: bool, log=print) -> dict:
    lite0 = load_model("efficientnet_lite0")
    judges = {key: load_model(key) for key in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")}
    classes = list(CLASSES[:args.classes])
    fc = final_linear(lite0.net)
    batches = [[(O.logit(c, batch=i), (fc, c)) for i, c in enumerate(ch)] for ch in chunks(classes, args.batch)]
    log(f"transfer: {len(classes)} classes on Lite0, {args.steps} steps, batches of {args.batch}")
    made = render_both(lite0, batches, args.steps, args.seed, with_lucent, log=log)
    res = {"classes": [lite0.labels[c] for c in classes], "imagenet": {}, "classroom": {}, "time": {}}
    for name, (images, secs, image_steps) in made.items():
        res["imagenet"][name] = {}
        for key, judge in judges.items():
            r = ranks(images, classes, judge)
            res["imagenet"][name][key] = {"top1": hit_rates(r)[0], "top5": hit_rates(r)[1], "ranks": r}
        res["time"][f"imagenet_{name}"] = {"seconds": secs, "ms_per_image_step": 1e3 * secs / image_steps}
        if args.out:
            np.save(Path(args.out) / f"imagenet_{name}.npy", images)
    res["_images"] = {name: v[0] for name, v in made.items()}
    return res


def _classroom(args, with_lucent: bool, res: dict, log=print) -> None:
    for maker_key, judge_key in CLASSROOM:
        maker, judge = load_model(maker_key), load_model(judge_key)
        cls = list(range(maker.num_classes))
        fcm = final_linear(maker.net)
        batches = [[(O.logit(c, batch=i), (fcm, c)) for i, c in enumerate(cls)]]
        log(f"transfer: classroom, made on {maker_key}, judged by {judge_key}")
        made_c = render_both(maker, batches, args.steps, args.seed, with_lucent, fixed_size=maker.input_size[0],
                             log=log)
        for name, (images, secs, image_steps) in made_c.items():
            entry = res["classroom"].setdefault(name, {})
            self_r, judge_r = ranks(images, cls, maker), ranks(images, cls, judge)
            entry[f"{maker_key}->{judge_key}"] = {"maker_top1": hit_rates(self_r)[0], "judge_top1":
                                                   hit_rates(judge_r)[0], "judge_ranks": judge_r}
            res["time"][f"classroom_{maker_key}_{name}"] = {"seconds": secs,
                                                            "ms_per_image_step": 1e3 * secs / image_steps}
            if args.out:
                np.save(Path(args.out) / f"classroom_{maker_key}_{name}.npy", images)


def activation(args, with_lucent: bool, log=print) -> dict:
    from models.images import sample_images

    h = load_model("efficientnet_lite0")
    photos = list(sample_images().values())
    rng = np.random.default_rng(args.seed)
    res = {"layers": {}, "time": {}}
    for layer in LAYERS:
        from interpret.core.layers import capture

        with torch.no_grad(), capture(h, layer) as cap:  # the layer's width (and a wrong name fails here)
            cap.run(to_input(np.zeros((1, 8, 8, 3), np.float32), h))
            n_ch = cap.output.shape[1]
        channels = sorted(rng.choice(n_ch, size=min(args.channels, n_ch), replace=False).tolist())
        best_mean, best_peak = natural_best(h, layer, channels, photos)
        batches = [[(O.channel(layer, c, batch=i), (layer, c)) for i, c in enumerate(ch)]
                   for ch in chunks(channels, args.batch)]
        log(f"activation: {len(channels)} channels of {layer}, {args.steps} steps")
        made = render_both(h, batches, args.steps, args.seed, with_lucent, log=log)
        entry = {"channels": channels, "natural_best_mean": best_mean.tolist(),
                 "natural_best_peak": best_peak.tolist()}
        for name, (images, secs, image_steps) in made.items():
            m, p = reached(h, layer, channels, images)
            per = np.arange(len(channels))
            entry[name] = {"mean_ratio": (m[per, per] / best_mean).tolist(),
                           "peak_ratio": (p[per, per] / best_peak).tolist()}
            res["time"][f"{layer}_{name}"] = {"seconds": secs, "ms_per_image_step": 1e3 * secs / image_steps}
        res["layers"][layer] = entry
    return res


# ---- report ----------------------------------------------------------------------------------------------------

def _fmt_rate(x: float) -> str:
    return f"{100 * x:5.1f} %"


def report(t: dict, a: dict, names: Sequence[str]) -> str:
    lines = [""]
    if t["imagenet"]:
        lines += ["Transfer of class images made on EfficientNet-Lite0 (target class top-1 / top-5 rate):",
                  f"  {'judge':<44}" + "".join(f"{n:>24}" for n in names)]
    for judge in (("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2") if t["imagenet"] else ()):
        cells = "".join(f"{_fmt_rate(t['imagenet'][n][judge]['top1']) + ' / ' + _fmt_rate(t['imagenet'][n][judge]['top5']):>24}"
                        for n in names)
        tag = " (maker)" if judge.endswith("0") else ""
        lines.append(f"  {judge + tag:<44}{cells}")
    if t["classroom"]:
        lines.append("Classroom (6 classes): top-1 rate of the maker / of the other model:")
    for pair in (next(iter(t["classroom"].values())) if t["classroom"] else ()):
        cells = "".join(f"{_fmt_rate(t['classroom'][n][pair]['maker_top1']) + ' / ' + _fmt_rate(t['classroom'][n][pair]['judge_top1']):>24}"
                        for n in names)
        lines.append(f"  {pair:<44}{cells}")
    if a["layers"]:
        lines.append("Activation reached / best over the bundled photos (median [min–max] over channels):")
    for layer, e in a["layers"].items():
        for key, what in (("mean_ratio", "channel mean"), ("peak_ratio", "top unit (top patch)")):
            cells = ""
            for n in names:
                r = np.asarray(e[n][key])
                cells += f"{np.median(r):>10.2f} [{r.min():.2f}–{r.max():.2f}]".rjust(24)
            lines.append(f"  {layer + ', ' + what:<44}{cells}")
    lines.append("Time per image-step (ms):")
    for key in sorted({k.rsplit('_', 1)[0] for k in {**t['time'], **a['time']}}):
        cells = "".join(f"{({**t['time'], **a['time']}).get(f'{key}_{n}', {}).get('ms_per_image_step', float('nan')):>24.1f}"
                        for n in names)
        lines.append(f"  {key:<44}{cells}")
    if len(names) == 2 and {**t["time"], **a["time"]}:
        tt = {**t["time"], **a["time"]}
        ratio = [tt[f"{k}_ours"]["seconds"] / tt[f"{k}_lucent"]["seconds"] for k in
                 {k.rsplit('_', 1)[0] for k in tt} if f"{k}_lucent" in tt]
        lines.append(f"  time ours / lucent: median {np.median(ratio):.2f} (range {min(ratio):.2f}–{max(ratio):.2f})")
    return "\n".join(lines)


def grid(images: dict[str, np.ndarray], labels: Sequence[str], path: Path, cols: int = 5) -> None:
    """Ours (top row of each pair) against Lucent's (bottom row) for the first ``cols`` classes, labelled."""
    from PIL import Image, ImageDraw, ImageFont

    names = [n for n in ("ours", "lucent") if n in images]
    side, pad, head = 128, 6, 26
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 14)
    except OSError:
        font = ImageFont.load_default()
    w = 90 + cols * (side + pad)
    h = head + len(names) * (side + pad)
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for j in range(min(cols, len(labels))):
        draw.text((90 + j * (side + pad), 4), labels[j][:18], fill="black", font=font)
        for i, n in enumerate(names):
            tile = Image.fromarray((np.clip(images[n][j], 0, 1) * 255 + 0.5).astype(np.uint8)).resize((side, side))
            canvas.paste(tile, (90 + j * (side + pad), head + i * (side + pad)))
    for i, n in enumerate(names):
        draw.text((6, head + i * (side + pad) + side // 2 - 8), {"ours": "CNN Lens", "lucent": "Lucent"}[n],
                  fill="black", font=font)
    canvas.save(path)


def timing(args, log=print) -> dict:
    """Time per image-step only: one batch of class images on Lite0 (and one of channels), ours and Lucent's
    alternating ``--repeats`` times; medians with min–max."""
    h = load_model("efficientnet_lite0")
    fc = final_linear(h.net)
    cls = list(CLASSES[:args.batch])
    chans = list(range(args.batch))
    cases = {"class logits": ([(O.logit(c, batch=i), (fc, c)) for i, c in enumerate(cls)]),
             f"{LAYERS[0]} channels": ([(O.channel(LAYERS[0], c, batch=i), (LAYERS[0], c))
                                        for i, c in enumerate(chans)])}
    out = {}
    for name, batch in cases.items():
        obj = sum(o for o, _ in batch)
        ours(h, obj, len(batch), 2, args.seed)
        lucent(h, [t for _, t in batch], 2, args.seed)
        t = {"ours": [], "lucent": []}
        for r in range(args.repeats):
            t["ours"].append(ours(h, obj, len(batch), args.steps, args.seed + r).seconds)
            t["lucent"].append(lucent(h, [tt for _, tt in batch], args.steps, args.seed + r).seconds)
        per = {k: 1e3 * np.asarray(v) / (args.steps * len(batch)) for k, v in t.items()}
        ratio = np.asarray(t["ours"]) / np.asarray(t["lucent"])
        out[name] = {k: {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}
                     for k, v in per.items()}
        out[name]["ratio_median"] = float(np.median(ratio))
        log(f"{name}, batch {len(batch)}, {args.steps} steps × {args.repeats}: ours "
            f"{np.median(per['ours']):.1f} ms/image-step [{per['ours'].min():.1f}–{per['ours'].max():.1f}], lucent "
            f"{np.median(per['lucent']):.1f} [{per['lucent'].min():.1f}–{per['lucent'].max():.1f}]; "
            f"ours/lucent {np.median(ratio):.2f} [{ratio.min():.2f}–{ratio.max():.2f}]")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_synthesis", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--classes", type=int, default=len(CLASSES))
    ap.add_argument("--channels", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4, help="images optimised together (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for the JSON, the images (.npy) and the grid PNG")
    ap.add_argument("--no-lucent", action="store_true", help="ours only (torch-lucent not installed)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 steps, 3 classes, 2 channels per layer")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sections", default="imagenet,classroom,activation",
                    help="comma-separated parts to run (default: all three)")
    ap.add_argument("--time-only", action="store_true", help="only the time per image-step, repeated")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of --time-only (default 3)")
    args = ap.parse_args(argv)
    args.sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    if args.quick:
        args.steps, args.classes, args.channels = 8, 3, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    with_lucent = not args.no_lucent
    if with_lucent:
        try:
            import lucent  # noqa: F401
        except ImportError:
            print("torch-lucent is not installed: pip install -r requirements-bench.txt (or pass --no-lucent)")
            return 2
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.time_only:
        if not with_lucent:
            print("--time-only compares with torch-lucent; install requirements-bench.txt")
            return 2
        load0 = os.getloadavg()
        tt = timing(args)
        print(f"torch threads {torch.get_num_threads()}; load average at start {load0[0]:.2f}, at end "
              f"{os.getloadavg()[0]:.2f}")
        if args.out:
            with open(Path(args.out) / "synthesis_timing.json", "w") as f:
                json.dump({"steps": args.steps, "repeats": args.repeats, "timing": tt, "load_start": load0,
                           "load_end": os.getloadavg()}, f, indent=1)
        return 0
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    t = transfer(args, with_lucent)
    a = activation(args, with_lucent) if "activation" in args.sections else {"layers": {}, "time": {}}
    names = ["ours", "lucent"] if with_lucent else ["ours"]
    print(f"\n{args.steps} steps, seed {args.seed}, torch threads {torch.get_num_threads()}; load average at start "
          f"{load0[0]:.2f}, at end {os.getloadavg()[0]:.2f}; wall {time.perf_counter() - t0:.0f} s")
    print(report(t, a, names))
    if args.out:
        images = t.pop("_images")
        if images:
            grid(images, t["classes"], Path(args.out) / "synthesis_grid.png")
        tag = "_".join(sorted(args.sections))
        with open(Path(args.out) / f"synthesis_bench_{tag}.json", "w") as f:
            json.dump({"steps": args.steps, "seed": args.seed, "batch": args.batch, "transfer": t, "activation": a,
                       "load_start": load0, "load_end": os.getloadavg()}, f, indent=1)
    else:
        t.pop("_images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
