"""How well does each attribution method localise the object? Pointing game and positive energy in the mask,
over N generated test images with exact object masks, for both classroom models; for the spurious model also
how often the map's maximum lands on the cue tag.

``python -m interpret.evaluation.localization --n 200`` prints a markdown table and writes
``weights/localization.json`` so the app shows it without recomputing.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from models.classroom import WEIGHTS_DIR, format_accuracy, generate, load

from interpret.attribution.registry import METHODS, explain
from interpret.core.tensors import device_of, to_numpy
from interpret.evaluation.metrics import energy_in_mask, pointing_game

# The shipped result lives beside the classroom weights it was measured on; this evaluation runs on the
# interpret floor because it calls the attribution methods and metrics (models/ must not import interpret/).
RESULT_PATH = WEIGHTS_DIR / "localization.json"
LOC_SEED = 4   # a test split used by nothing else


# Reduced settings for the perturbation/sampling methods on 64×64 images (defaults are sized for 224²).
FAST_PARAMS: dict[str, dict] = {
    "occlusion": dict(window=8, stride=4),
    "lime": dict(num_samples=150, segmentation="slic"),
    "smoothgrad": dict(samples=16),
    "integrated_gradients": dict(steps=16),
}
SKIP = {"backprop"}   # the plain gradient image duplicates "saliency" as a map

# (model key, split name, generate() flags, target: "true" class or the model's "predicted" class)
EVAL_SETS = [
    ("classroom_clean", "test", {}, "true"),
    ("classroom_spurious", "test", {"spurious": True}, "true"),
    ("classroom_spurious", "cue_flipped", {"cue_flipped": True}, "true"),
    ("classroom_spurious", "cue_flipped", {"cue_flipped": True}, "predicted"),
    ("classroom_clean", "cue_flipped", {"cue_flipped": True}, "true"),
]


def evaluate(handle, ds, methods: list[str], params: dict[str, dict] | None = None, log=print,
             target: str = "true") -> list[dict]:
    """Scores of every method on every image of ``ds``: mean pointing hit, mean positive energy in the object mask,
    and (over images carrying the cue) how often the maximum is on the cue. ``target``: explain the "true" class
    or the model's "predicted" one."""
    params = {**FAST_PARAMS, **(params or {})}
    x01 = torch.from_numpy(ds.images).permute(0, 3, 1, 2).to(device_of(handle)).float() / 255
    xs = handle.preprocess.normalize(x01)
    with torch.no_grad():
        pred = to_numpy(handle.net(xs).argmax(1))
    acc = float((pred == ds.labels).mean())
    targets = ds.labels if target == "true" else pred
    rows = []
    for name in methods:
        t0 = time.perf_counter()
        pts, ens, cue_pts = [], [], []
        for i in range(len(ds)):
            a = explain(handle, xs[i:i + 1], int(targets[i]), name, **params.get(name, {})).map
            pts.append(float(pointing_game(a, ds.masks[i])))
            ens.append(energy_in_mask(a, ds.masks[i]))
            if ds.cue[i]:
                cue_pts.append(float(pointing_game(a, ds.cue_masks[i])))
        sec = (time.perf_counter() - t0) / len(ds)
        rows.append(dict(method=name, pointing=float(np.nanmean(pts)), energy=float(np.nanmean(ens)),
                         on_cue=float(np.mean(cue_pts)) if cue_pts else None, n_cue=len(cue_pts),
                         seconds_per_image=round(sec, 4), params=params.get(name, {})))
        log(f"  {name:22s} pointing {rows[-1]['pointing']:.3f}  energy {rows[-1]['energy']:.3f}  "
            f"on cue {rows[-1]['on_cue'] if cue_pts else float('nan'):.3f} ({len(cue_pts)})  {sec * 1000:.0f} ms/img")
    # chance level: a uniformly random pointing location, and a uniform map's energy, score the mask's area share
    area = float(ds.masks.mean(axis=(1, 2)).mean())
    cue_area = float(ds.cue_masks[ds.cue].mean(axis=(1, 2)).mean()) if ds.cue.any() else None
    rows.append(dict(method="chance (random point)", pointing=area, energy=area, on_cue=cue_area,
                     n_cue=int(ds.cue.sum()), seconds_per_image=0.0, params={}))
    for r in rows:
        r["accuracy"] = acc
    return rows


def _run_set(args: tuple) -> dict:
    key, split, flags, target, n, seed, methods, threads = args
    torch.set_num_threads(threads)
    ds = generate("test", n, seed, **flags)
    rows = evaluate(load(key), ds, methods, target=target,
                    log=lambda s: print(f"[{key} / {split} / {target}] {s.strip()}", flush=True))
    return dict(model=key, split=split, target=target, accuracy=rows[0]["accuracy"], rows=rows)


def run(n: int = 200, seed: int = LOC_SEED, methods: list[str] | None = None, jobs: int = 1) -> dict:
    """Evaluate every registered method (minus SKIP) on every EVAL_SETS entry (``jobs`` sets in parallel
    processes); return the JSON-able result."""
    methods = methods or [m for m in METHODS if m not in SKIP]
    tasks = [(key, split, flags, target, n, seed, methods, 1 if jobs > 1 else 2)
             for key, split, flags, target in EVAL_SETS]
    if jobs > 1:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            sets = pool.map(_run_set, tasks)
    else:
        sets = [_run_set(t) for t in tasks]
    return {"n": n, "seed": seed, "sets": sets,
            "labels": {m: METHODS[m].label for m in methods}}


def markdown(result: dict) -> str:
    """One table: a row per method; per evaluation set a cell "pointing · energy · max on cue"."""
    sets = result["sets"]
    head = ["method"] + [f"{s['model'].replace('classroom_', '')} model, {s['split'].replace('_', '-')} split"
                         + (", predicted class" if s.get("target") == "predicted" else "") for s in sets]
    head += ["ms / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    labels = result.get("labels", {})
    for i, r0 in enumerate(sets[0]["rows"]):
        cells = [labels.get(r0["method"], r0["method"]).replace("|", "\\|")]
        for s in sets:
            r = s["rows"][i]
            cue = "–" if r["on_cue"] is None else f"{r['on_cue']:.2f}"
            cells.append(f"{r['pointing']:.2f} · {r['energy']:.2f} · {cue}")
        cells.append(f"{1000 * np.mean([s['rows'][i]['seconds_per_image'] for s in sets]):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    n = result["n"]
    accs = ", ".join(dict.fromkeys(f"{s['model'].replace('classroom_', '')} on {s['split'].replace('_', '-')} "
                                   f"{format_accuracy(s['accuracy'], n)}" for s in sets))
    lines += ["", f"Each cell: pointing game hit rate · share of positive attribution inside the object mask · share "
              f"of tagged images whose map maximum lies on the tag. N = {n} generated test images per "
              f"split (seed {result['seed']}); the map explains the true class unless the column says predicted class. "
              f"Accuracy on these {n} images per split: {accs}. They are a smaller sample than the "
              f"held-out test splits in the model notes, so the two may differ by a point or two."]
    return "\n".join(lines)


def load_result(path: Path = RESULT_PATH) -> dict | None:
    """The shipped localization result (for the app), or None if it has not been computed."""
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Localization scores of every attribution method on the classroom models")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=LOC_SEED)
    p.add_argument("--methods", nargs="*")
    p.add_argument("--out", type=Path, default=RESULT_PATH)
    p.add_argument("--jobs", type=int, default=1, help="evaluation sets computed in parallel processes")
    a = p.parse_args(argv)
    t0 = time.time()
    res = run(a.n, a.seed, a.methods, a.jobs)
    res["seconds"] = round(time.time() - t0, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    (a.out.with_suffix(".md")).write_text(markdown(res) + "\n")
    print(markdown(res))


if __name__ == "__main__":
    main()
