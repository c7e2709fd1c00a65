"""Command line for Network Dissection of a classroom model against the generator's concept masks.

    python -m interpret dissect --model classroom_spurious --layers features.2,features.9,features.16,features.23
    python -m interpret dissect --model classroom_clean --engine ray --workers 2 --json out.json

Prints per layer the units sorted by IoU (unit, best concept, IoU, threshold) and how many units detect each
concept (IoU ≥ --iou-threshold); ``--json [FILE]`` writes the same as JSON (to stdout without FILE). The data are
a generated classroom split (``--split``, ``--n``, ``--seed``) with the cue rates of the model's own variant
(``--cues auto``) or those of the clean / Clever Hans variant.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from interpret.cli import engine_args
from interpret.cli.device_arg import add_device_argument, device_of_args
from interpret.core.errors import InputError
from interpret.scale import ray_engine
from interpret.scale.dissection_reducer import dissect_on_ray
from interpret.units import dissection as DS
from models.device import DeviceError
from models.registry import ModelUnavailable, load_model

CLASSROOM_LAYERS = ("features.2", "features.9", "features.16", "features.23")  # the ReLU ending each block


def parse_layers(text: str | None) -> list[str]:
    """"a,b , c" → ["a", "b", "c"]; None/"" → the classroom blocks."""
    if not text:
        return list(CLASSROOM_LAYERS)
    return [t.strip() for t in text.split(",") if t.strip()]


def as_json(d: DS.Dissection, model: str, top: int | None = None) -> dict:
    """The dissection as plain JSON data: settings, per layer the units by IoU and the detector counts."""
    return {"model": model, "source": d.source, "n_images": d.n_images, "quantile": d.quantile,
            "iou_threshold": d.iou_threshold, "seconds": round(d.seconds, 3), "cancelled": d.cancelled,
            "layers": {name: {"units": len(ld.thresholds), "map_size": list(ld.map_size),
                              "counts": {c: n for c, n in ld.counts(d.iou_threshold).items()},
                              "ranking": [{"unit": u, "concept": c, "iou": round(v, 6),
                                           "threshold": float(ld.thresholds[u])}
                                          for u, c, v in ld.best()[:top]]}
                       for name, ld in d.layers.items()}}


def table(d: DS.Dissection, top: int | None = None) -> str:
    """The human-readable report: per layer a ranking and the non-zero detector counts."""
    out = [f"{d.source}; top {100 * d.quantile:g} % quantile, detectors: IoU >= {d.iou_threshold:g}; "
           f"{d.seconds:.1f} s"]
    for name, ld in d.layers.items():
        h, w = ld.map_size
        out.append(f"\n{name}: {len(ld.thresholds)} units, {h}x{w} map")
        out.append(f"  {'unit':>5}  {'concept':<14} {'IoU':>7}  {'threshold':>10}")
        for u, c, v in ld.best()[:top]:
            mark = " *" if v >= d.iou_threshold else ""
            out.append(f"  {u:>5}  {c:<14} {v:7.4f}  {ld.thresholds[u]:10.4f}{mark}")
        counts = {c: n for c, n in ld.counts(d.iou_threshold).items() if n}
        out.append("  detectors per concept: " + (", ".join(f"{c} {n}" for c, n in counts.items()) or "none"))
    return "\n".join(out)


def _run(a: argparse.Namespace) -> int:
    if not a.model.startswith("classroom_"):
        print(f"error: {a.model} has no concept masks; dissection runs on the classroom models "
              "(classroom_clean, classroom_spurious). For other models use the class selectivity view of the "
              "Dissection page.", file=sys.stderr)
        return 2
    spurious = a.model == "classroom_spurious" if a.cues == "auto" else a.cues == "spurious"
    layers = parse_layers(a.layers)
    top = a.top or None
    t0 = time.perf_counter()
    try:
        if a.engine == "ray":
            data = DS.ClassroomConcepts(a.split, a.n, a.seed, spurious)

            def progress(frac, text):
                if not a.quiet:
                    print(f"\r{text}", end="", file=sys.stderr, flush=True)

            with ray_engine.session(engine_args.address(a)):
                d, _ = dissect_on_ray(a.model, data, layers, a.quantile, a.iou_threshold, a.batch_size,
                                      progress=progress, **engine_args.engine_kwargs(a))
        else:
            handle = load_model(a.model, device_of_args(a))
            data = DS.classroom_dissection_data(a.split, a.n, a.seed, spurious)

            def progress(done, total):
                if not a.quiet:
                    print(f"\r{done}/{total} image passes", end="", file=sys.stderr, flush=True)

            d = DS.dissect(handle, data, layers, a.quantile, a.iou_threshold, progress, a.batch_size)
    except (InputError, ModelUnavailable, DeviceError, ValueError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    d.seconds = time.perf_counter() - t0
    if not a.quiet:
        print(file=sys.stderr)
    if a.json is not None:
        text = json.dumps(as_json(d, a.model, top), indent=1)
        if a.json == "-":
            print(text)
        else:
            with open(a.json, "w") as f:
                f.write(text)
    if a.json != "-":
        print(table(d, top))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``dissect`` on an argparse subparsers object (for ``python -m interpret``)."""
    p = subparsers.add_parser("dissect", help="Network Dissection of a classroom model (units labelled by concept)")
    p.add_argument("--model", required=True, help="classroom_clean or classroom_spurious")
    p.add_argument("--layers", default=None,
                   help=f"comma-separated module paths (default: {','.join(CLASSROOM_LAYERS)})")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--n", type=int, default=600, help="images (default 600)")
    p.add_argument("--seed", type=int, default=DS.DISSECTION_SEED,
                   help=f"generator seed (default {DS.DISSECTION_SEED}: a split no model was trained on)")
    p.add_argument("--cues", default="auto", choices=("auto", "clean", "spurious"),
                   help="tag rates of the data: the model's own variant (auto), clean (10 %%, any class) or "
                        "spurious (95 %% of stars)")
    p.add_argument("--quantile", type=float, default=0.005, help="top activation quantile per unit (0.005)")
    p.add_argument("--iou-threshold", type=float, default=0.04, help="IoU that makes a detector (0.04)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--top", type=int, default=0, help="units listed per layer (default 0: all)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write JSON to FILE (no FILE: JSON on stdout instead of the table)")
    p.add_argument("--quiet", action="store_true")
    add_device_argument(p)
    engine_args.add_engine_args(p)
    p.set_defaults(func=_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interpret.cli.dissect")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_parser(sub)
    args = parser.parse_args(["dissect", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
