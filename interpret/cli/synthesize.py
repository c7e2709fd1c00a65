"""Command line for synthesized images (activation maximisation) with the objective algebra and the presets.

    python -m interpret synthesize --model efficientnet_lite0 --objective "logit(espresso)" --out out/
    python -m interpret synthesize --model efficientnet_lite0 --preset quick --batch 4 \\
        --objective "channel(_blocks.6, 5) + 0.5*channel(_blocks.6, 7) + 0.1*diversity(_blocks.6)" --out out/
    python -m interpret synthesize --model classroom_clean --objective "logit(star) - logit(circle)" --steps 128

Writes one PNG per image and ``settings.json`` (objective, settings, per-step values) into ``--out``; prints the
objective at the start and the end and the time per step. ``--direction NAME=FILE.npy`` makes a vector available
to ``direction(layer, NAME)``. Every regulariser has its switch, as on the page.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from interpret.cli.device_arg import add_device_argument, device_of_args
from interpret.core.errors import InputError
from interpret.units.synthesis import objectives as SO, render as syn
from interpret.units.synthesis.export import export_files
from models.device import DeviceError
from models.registry import ModelUnavailable, load_model

_FIELDS = ("steps", "size", "batch", "lr", "decay_power", "sd", "pad", "jitter", "scale", "rotate", "jitter2", "l2",
           "tv", "blur_every", "blur_sigma", "seed")


def settings_of_args(a: argparse.Namespace) -> syn.Settings:
    """The preset with every option the user gave on top."""
    over = {f: getattr(a, f) for f in _FIELDS if getattr(a, f) is not None}
    if a.pixel:
        over["param"] = "pixel"
    if a.no_decorrelate:
        over["decorrelate"] = False
    if a.no_upsample:
        over["upsample"] = False
    if a.no_transforms:
        over.update(pad=0, jitter=0, scale=0.0, rotate=0, jitter2=0)
    return syn.preset(a.preset, **over)


def load_vectors(items: Sequence[str] | None) -> dict[str, np.ndarray]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--direction takes NAME=FILE.npy, not {item!r}")
        try:
            out[name] = np.load(path, allow_pickle=False).astype(np.float64).ravel()
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the vector {path!r}: {e}") from None
    return out


def _run(a: argparse.Namespace) -> int:
    try:
        settings = settings_of_args(a)
        objective = SO.parse(a.objective, load_vectors(a.direction))
        handle = load_model(a.model, device_of_args(a))

        def progress(step, value, images):
            if not a.quiet:
                print(f"\rstep {step}/{settings.steps}: objective {value:.4g}", end="", file=sys.stderr, flush=True)

        res = syn.synthesize(handle, objective, settings, progress=progress)
    except (InputError, ModelUnavailable, DeviceError, ValueError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    if not a.quiet:
        print(file=sys.stderr)
    n = res.steps_done
    print(f"{res.objective}: {res.history[0]:.4g} → {res.history[-1]:.4g} in {n} steps, {res.seconds:.1f} s "
          f"({1e3 * res.seconds / max(n, 1):.1f} ms/step, batch {settings.batch}, {res.device})")
    for name, vals in res.terms.items():
        print(f"  {name}: {vals[0]:.4g} → {vals[-1]:.4g}")
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in export_files(res, a.stem).items():
            (out / name).write_bytes(data)
        print(f"wrote {len(res.images)} PNG(s) and settings.json to {out}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``synthesize`` on an argparse subparsers object (for ``python -m interpret``)."""
    p = subparsers.add_parser("synthesize", help="synthesized images: maximise channels, units, classes, directions")
    p.add_argument("--model", required=True)
    p.add_argument("--objective", required=True,
                   help='e.g. "logit(espresso) - logit(cup)" or "channel(L, 3) + 0.5*channel(L, 7) + '
                        '0.1*diversity(L)"; terms: channel, neuron, logit, direction, diversity')
    p.add_argument("--preset", default="quality", choices=sorted(syn.PRESETS),
                   help="quality: Lucent's recipe, 512 steps (default); quick: 64 steps")
    for f, kind, text in [("steps", int, "optimisation steps"), ("size", int, "side of the optimised image"),
                          ("batch", int, f"images at once (1–{syn.MAX_BATCH})"), ("lr", float, "Adam's learning rate"),
                          ("decay_power", float, "Fourier amplitude decay 1/f^d"), ("sd", float, "start spread"),
                          ("pad", int, "px of grey padding"), ("jitter", int, "first random shift (px)"),
                          ("scale", float, "random scale ±s"), ("rotate", int, "random rotation ±degrees"),
                          ("jitter2", int, "second random shift (px)"), ("l2", float, "L2 penalty weight"),
                          ("tv", float, "total-variation weight"), ("blur_every", int, "blur every N steps"),
                          ("blur_sigma", float, "blur σ (px)"), ("seed", int, "random seed")]:
        p.add_argument("--" + f.replace("_", "-"), dest=f, type=kind, default=None, help=text)
    p.add_argument("--pixel", action="store_true", help="optimise pixels instead of a Fourier spectrum")
    p.add_argument("--no-decorrelate", action="store_true", help="plain RGB instead of decorrelated colour")
    p.add_argument("--no-upsample", action="store_true", help="do not resize to the model's input size")
    p.add_argument("--no-transforms", action="store_true", help="no padding, jitter, scale or rotation")
    p.add_argument("--direction", action="append", metavar="NAME=FILE.npy", help="a vector for direction(L, NAME)")
    p.add_argument("--out", default=None, help="folder for the PNGs and settings.json")
    p.add_argument("--stem", default=None, help="file-name stem (default: from the objective)")
    p.add_argument("--quiet", action="store_true")
    add_device_argument(p)
    p.set_defaults(func=_run)
    return p
