"""``python -m interpret ablate``: zero chosen units and measure the accuracy lost, against as many random units.

    python -m interpret ablate --model classroom_spurious --units features.23:3,17 --units features.20:5
    python -m interpret ablate --model classroom_spurious --concept tag --layers features.20 features.23
    python -m interpret ablate --model resnet18 --units layer4:0-9 --folder labelled/ --image cat.jpg
    python -m interpret ablate --story            # the Clever Hans story, measured; writes ablation_story.json

Classroom models are measured on generated "normal" (their own test distribution) and "cue-flipped" images;
other models on a labelled folder (``--folder``, class = sub-folder name) and/or the prediction change of one
``--image``. ``--concept`` picks "all detectors of concept X" from a Network Dissection of the classroom data.

The story (``--story``): on both classroom models, dissect every ReLU of the network, take the tag detectors
(IoU ≥ the dissection's threshold), and report normal and cue-flipped accuracy intact, with the tag detectors of
each layer (and of all layers together) zeroed, and with as many random units of the same layers zeroed (mean ±
std over seeded draws). The result is saved beside the classroom weights so the walk-through shows it without
recomputing.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from interpret.cli.device_arg import add_device_argument, device_of_args
from interpret.core.errors import InputError
from interpret.evaluation import ablation as ab
from interpret.units import dissection as dis
from models.classroom import VARIANTS, WEIGHTS_DIR, format_accuracy, generate
from models.device import DeviceError
from models.images import ImageError, decode_image
from models.registry import ModelUnavailable, load_model

STORY_PATH = WEIGHTS_DIR / "ablation_story.json"
STORY_SEED = 6          # generated test images used by nothing else (training 0/1, collection 2, samples 3, loc 4)
STORY_N = 600
STORY_DRAWS = 5
STORY_CONCEPT = "tag"
STORY_MODELS = ("classroom_spurious", "classroom_clean")


def relu_layers(handle) -> list[str]:
    """Module paths of the ReLU modules (the layers the story dissects and ablates)."""
    return [n for n, m in handle.net.named_modules() if type(m).__name__ in ("ReLU", "ReLU6")]


def parse_units(specs: Sequence[str]) -> ab.Units:
    """["features.23:3,17", "features.20:0-4"] → {"features.23": [3, 17], "features.20": [0, 1, 2, 3, 4]}."""
    out: ab.Units = {}
    for spec in specs:
        layer, sep, chans = spec.rpartition(":")
        if not sep or not layer:
            raise InputError(f"--units wants LAYER:CHANNELS, e.g. features.23:3,17 or layer4:0-9, not {spec!r}")
        vals: list[int] = []
        for part in (q.strip() for q in chans.split(",")):
            if re.fullmatch(r"\d+-\d+", part):
                a, b = part.split("-")
                vals.extend(range(int(a), int(b) + 1))
            elif re.fullmatch(r"-?\d+", part):
                vals.append(int(part))
            elif part:
                raise InputError(f"--units {spec!r}: {part!r} is not a channel number or range")
        out.setdefault(layer, []).extend(vals)
    return out


def classroom_sets(key: str, n: int = STORY_N, seed: int = STORY_SEED) -> dict[str, object]:
    """The two evaluation sets of a classroom model: its own test distribution ("normal": the Clever Hans model's
    tag goes with its class) and the cue-flipped one (every other class tagged, the tag class never)."""
    return {"normal": generate("test", n, seed, spurious=(key == "classroom_spurious")),
            "cue-flipped": generate("test", n, seed, cue_flipped=True)}


def concept_units(handle, concept: str, layers: Sequence[str], n: int = STORY_N, min_iou: float | None = None,
                  progress=None, seed: int = dis.DISSECTION_SEED):
    """(units, dissection): every detector of ``concept`` in ``layers`` from a dissection of ``n`` generated
    classroom images (seed ``seed``: the same images for every model, tags on 10 % of them whatever the class)."""
    data = dis.classroom_dissection_data(split="test", n=n, seed=seed, spurious=False)
    d = dis.dissect(handle, data, list(layers), progress=progress)
    return ab.units_from_dissection(d, concept, layers, min_iou), d


# ---- the story ---------------------------------------------------------------------------------------------------

def story_model(key: str, n: int = STORY_N, seed: int = STORY_SEED, draws: int = STORY_DRAWS,
                concept: str = STORY_CONCEPT, progress: Callable[[float, str], None] | None = None) -> dict:
    """One model's part of the story: its tag detectors per layer (unit, IoU) and one row per ablated set."""
    handle = load_model(key, "cpu")
    layers = relu_layers(handle)
    say = progress or (lambda f, text: None)
    t0 = time.perf_counter()
    units, d = concept_units(handle, concept, layers, n,
                             progress=lambda done, total: say(0.4 * done / max(total or 1, 1), "dissecting"))
    t_dis = time.perf_counter() - t0
    iou = {L: [[u, round(float(d.layers[L].iou[u, d.layers[L].concepts.index(concept)]), 4)] for u in us]
           for L, us in units.items()}
    sets = classroom_sets(key, n, seed)
    plans = [(L, {L: us}) for L, us in units.items()]
    if len(units) > 1:
        plans.append(("all layers", units))
    rows = []
    for i, (name, u) in enumerate(plans):
        def prog(done, total, i=i):
            say(0.4 + 0.6 * (i + done / max(total, 1)) / len(plans), f"ablating {name}")
        rep = ab.ablation_report(handle, sets, u, random_draws=draws, seed=seed + i, progress=prog)
        rows.append(dict(layers=name, **rep.to_dict()))
    if not rows:  # no detector: the intact accuracies alone
        base = {s: ab.accuracy(handle, ds.images, ds.labels, None) for s, ds in sets.items()}
        rows.append(dict(layers="(none)", units={}, n_units=0, baseline=base, ablated=base, control={},
                         control_units=[], n_images={s: len(ds) for s, ds in sets.items()}, seed=seed, notes=[]))
    say(1.0, "done")
    return dict(key=key, name=handle.name, layers=layers, detectors=iou,
                n_detectors={L: len(v) for L, v in iou.items()}, dissection_seconds=round(t_dis, 1),
                iou_threshold=d.iou_threshold, rows=rows, seconds=round(time.perf_counter() - t0, 1))


def run_story(n: int = STORY_N, seed: int = STORY_SEED, draws: int = STORY_DRAWS, concept: str = STORY_CONCEPT,
              models: Sequence[str] = STORY_MODELS, progress: Callable[[float, str], None] | None = None) -> dict:
    """The story on every model in ``models``; ``progress(fraction, text)``."""
    t0 = time.perf_counter()
    out = {}
    for i, key in enumerate(models):
        sub = None if progress is None else (
            lambda f, text, i=i, key=key: progress((i + f) / len(models), f"{VARIANTS.get(key, key)}: {text}"))
        out[key] = story_model(key, n, seed, draws, concept, sub)
    return dict(concept=concept, n_images=n, seed=seed, draws=draws, dissection_seed=dis.DISSECTION_SEED,
                dissection=dict(data=f"generated test images, seed {dis.DISSECTION_SEED}, n {n}, tags on 10 % of "
                                     "them whatever the class", quantile=0.005),
                models=out, seconds=round(time.perf_counter() - t0, 1))


def _pct(a: float) -> str:
    return f"{100 * a:.1f} %"


def story_markdown(story: dict) -> str:
    """The story as a markdown table: per model and ablated set, normal and cue-flipped accuracy intact → with
    the tag detectors zeroed → with as many random units zeroed (mean ± std over the draws)."""
    n = story["n_images"]
    lines = [f"| model | tag detectors zeroed | units | normal: intact → ablated | normal: random (mean ± std) | "
             f"cue-flipped: intact → ablated | cue-flipped: random (mean ± std) |",
             "|---|---|---:|---|---|---|---|"]
    for key, m in story["models"].items():
        for r in m["rows"]:
            cells = []
            for s in ("normal", "cue-flipped"):
                c = r["control"].get(s)
                cells.append(f"{_pct(r['baseline'][s])} → **{_pct(r['ablated'][s])}**")
                cells.append(f"{_pct(c['mean'])} ± {100 * c['std']:.1f}" if c else "–")
            lines.append(f"| {m['name']} | {r['layers']} | {r['n_units']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{n} generated test images per set (seed {story['seed']}); random control: {story['draws']} "
                 f"draws of as many random units of the same layers, none of them a tag detector. Tag detectors: "
                 f"units whose IoU with the tag mask is ≥ {next(iter(story['models'].values()))['iou_threshold']} "
                 "(Network Dissection of every ReLU on the same "
                 f"{n} generated images for both models, seed {story.get('dissection_seed', dis.DISSECTION_SEED)}, "
                 "tags on 10 % of them whatever the class).")
    return "\n".join(lines)


def story_summary(story: dict) -> str:
    """One sentence per model, read off the figures: the layer whose zeroed tag detectors leave the highest
    cue-flipped accuracy, against the intact model and as many random units of that layer."""
    out = []
    for m in story["models"].values():
        rows = [r for r in m["rows"] if r["control"]]
        if not rows:
            out.append(f"{m['name']}: no tag detector at IoU ≥ {m['iou_threshold']}, nothing to zero.")
            continue
        r = max(rows, key=lambda r: (r["ablated"]["cue-flipped"],
                                     r["ablated"]["cue-flipped"] - r["control"]["cue-flipped"]["mean"]))
        a0, a1, c = r["baseline"]["cue-flipped"], r["ablated"]["cue-flipped"], r["control"]["cue-flipped"]
        n0, n1 = r["baseline"]["normal"], r["ablated"]["normal"]
        if a1 > a0 and a1 > c["mean"] + 2 * c["std"]:
            verdict = "better than intact and than random units: these units carry part of the shortcut"
        elif a1 > a0:
            verdict = "better than intact, but within the spread of random units"
        else:
            verdict = "no better than intact: zeroing tag detectors undoes no shortcut here"
        what = "tag detector" if r["n_units"] == 1 else f"{r['n_units']} tag detectors"
        out.append(f"{m['name']}: zeroing the {what} of {r['layers']} takes its cue-flipped accuracy from "
                   f"{_pct(a0)} to {_pct(a1)}, where as many random units give {_pct(c['mean'])} ± "
                   f"{100 * c['std']:.1f} ({verdict}; normal images {_pct(n0)} → {_pct(n1)}).")
    return " ".join(out)


def load_story(path: Path = STORY_PATH) -> dict | None:
    """The shipped story result, or None when absent."""
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


# ---- commands ----------------------------------------------------------------------------------------------------

def _print_report(rep: ab.AblationReport) -> None:
    print(f"ablated {rep.n_units} units: {json.dumps(rep.units)}")
    for name in rep.baseline:
        c = rep.control.get(name)
        ctrl = f"; {rep.n_units} random units: {_pct(c.mean)} ± {100 * c.std:.1f} (min {_pct(c.min)}, max " \
               f"{_pct(c.max)}, {len(c.draws)} draws)" if c and c.draws else ""
        n = rep.n_images[name]
        print(f"  {name:12s} intact {format_accuracy(rep.baseline[name], n)} → ablated "
              f"{format_accuracy(rep.ablated[name], n)}{ctrl}")
    if rep.prediction is not None:
        p = rep.prediction
        print(f"  image: p({p.target_label}) {p.p_before:.3f} → {p.p_after:.3f}")
        print("    before: " + ", ".join(f"{lab} {q:.3f}" for _, lab, q in p.before))
        print("    after:  " + ", ".join(f"{lab} {q:.3f}" for _, lab, q in p.after))
    for note in rep.notes:
        print(f"  note: {note}")


def _cmd_story(a: argparse.Namespace) -> int:
    shown = [None]

    def progress(frac, text):
        line = f"{100 * frac:3.0f} % {text}"
        if not a.quiet and line != shown[0]:
            shown[0] = line
            print(f"\r{line:70s}", end="", file=sys.stderr, flush=True)

    story = run_story(a.n, a.seed, a.draws, a.concept, progress=progress)
    if not a.quiet:
        print(file=sys.stderr)
    out = Path(a.out) if a.out else STORY_PATH
    out.write_text(json.dumps(story, indent=1))
    print(story_markdown(story))
    print("\n" + story_summary(story))
    print(f"\nwall time {story['seconds']} s; written to {out}")
    return 0


def _cmd(a: argparse.Namespace) -> int:
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.story:
        return _cmd_story(a)
    if not a.model:
        print("error: give --model (or --story)", file=sys.stderr)
        return 2
    try:
        handle = load_model(a.model, device_of_args(a))
    except (ModelUnavailable, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if bool(a.units) == bool(a.concept_given):
            raise InputError("give the units by hand (--units LAYER:CHANNELS) or by concept (--concept C "
                             "--layers L …), not both and not neither")
        if a.units:
            units = parse_units(a.units)
        else:
            if handle.family != "classroom":
                raise InputError("--concept needs concept masks: only the classroom models have them")
            layers = a.layers or relu_layers(handle)
            units, _ = concept_units(handle, a.concept, layers, a.n, a.min_iou)
            if not units:
                raise InputError(f"no detector of {a.concept!r} in {layers}")
        sets: dict[str, object] = {}
        if handle.family == "classroom" and not a.folder:
            sets = classroom_sets(handle.key, a.n, a.seed)
        if a.folder:
            imgs, labels, skipped = ab.labelled_folder(handle, a.folder)
            sets["folder"] = (imgs, labels)
            if skipped:
                print(f"skipped {len(skipped)} files (first: {skipped[0]})", file=sys.stderr)
        image = decode_image(Path(a.image).read_bytes()) if a.image else None
        if not sets and image is None:
            raise InputError("nothing to measure: give --folder (a labelled image folder) and/or --image")
        if sets:
            rep = ab.ablation_report(handle, sets, units, a.draws, a.seed, image=image)
        else:
            chosen = ab.check_units(handle, units)
            rep = ab.AblationReport(chosen, {}, {}, {}, [], {}, a.seed, ab.prediction_change(handle, image, chosen))
    except (InputError, ImageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(rep.to_dict(), indent=1))
    else:
        _print_report(rep)
    return 0


class _Concept(argparse.Action):
    def __call__(self, parser, ns, values, option_string=None):
        ns.concept, ns.concept_given = values, True


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``ablate`` on an argparse subparsers object (for ``python -m interpret``)."""
    p = subparsers.add_parser("ablate", help="zero chosen units; accuracy vs as many random units (--story: the "
                                             "Clever Hans story)")
    p.add_argument("--model", default=None, help="model key (see list-models)")
    p.add_argument("--units", action="append", default=[], metavar="LAYER:CHANNELS",
                   help="units to zero, e.g. features.23:3,17 or layer4:0-9 (repeat for more layers)")
    p.add_argument("--concept", action=_Concept, default=STORY_CONCEPT,
                   help="instead of --units: every detector of this concept (classroom models; e.g. tag, star)")
    p.add_argument("--layers", nargs="+", default=None, help="with --concept: the layers (default: every ReLU)")
    p.add_argument("--min-iou", type=float, default=None, help="with --concept: detector threshold (default: the "
                                                                "dissection's, 0.04)")
    p.add_argument("--folder", default=None, help="labelled image folder (class = sub-folder name)")
    p.add_argument("--image", default=None, help="an image whose top-5 change is shown")
    p.add_argument("--n", type=int, default=STORY_N, help="generated images per classroom set")
    p.add_argument("--seed", type=int, default=STORY_SEED)
    p.add_argument("--draws", type=int, default=STORY_DRAWS, help="random-unit control draws")
    p.add_argument("--story", action="store_true", help="the Clever Hans story on both classroom models")
    p.add_argument("--out", default=None, help=f"with --story: where to write the JSON (default {STORY_PATH})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is much faster on a busy shared CPU)")
    p.add_argument("--quiet", action="store_true")
    add_device_argument(p)
    p.set_defaults(func=_cmd, concept_given=False)
    return p
