"""Command line for headless use.

    python -m interpret explain IMAGE [IMAGE …] --model NAME --method METHOD [--target CLASS] \\
        [--param k=v …] --out FILE [--out FILE …]
    python -m interpret list-models
    python -m interpret list-methods

``--out`` by extension: ``.npy`` the raw map, ``.png`` the map over the image (rendered with Pillow, no browser
needed), ``.json`` the settings that reproduce the map and its statistics, ``.html`` the interactive plotly
figure (plotly.js inlined, so it opens offline). With several images each ``--out`` must contain ``{stem}``.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# lime draws a tqdm bar on stderr for every explanation; tqdm reads this when first imported (by captum/lime).
os.environ.setdefault("TQDM_DISABLE", "1")

from . import export  # noqa: E402 - after TQDM_DISABLE

OUT_TYPES = (".npy", ".png", ".json", ".html")


def parse_param(text: str) -> tuple[str, Any]:
    """"k=v" → (k, v) with v read as JSON or a Python literal (3, 0.5, true, None, [1, 2]), else kept as text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"parameter {text!r} is not of the form name=value")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            return key, parse(raw)
        except (ValueError, SyntaxError, TypeError):
            pass
    return key, raw


def record(attr, handle, image_path: str, image_bytes: bytes, probs: np.ndarray) -> dict:
    """Everything needed to reproduce the map (image file and hash, model, method, class, parameters) and its
    statistics — the same record the app's JSON download holds."""
    rec = export.settings_record(attr, handle, str(image_path), probs)
    rec["image_sha256"] = hashlib.sha256(image_bytes).hexdigest()
    rec["command"] = "python -m interpret explain"
    return rec


def write_outputs(attr, handle, image: np.ndarray, outs: Sequence[str | Path], rec: dict) -> list[Path]:
    written = []
    for out in outs:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        ext = path.suffix.lower()
        if ext == ".npy":
            np.save(path, attr.map)
        elif ext == ".png":
            path.write_bytes(export.overlay_png(image, attr, label=handle.labels[attr.target]))
        elif ext == ".json":
            path.write_text(json.dumps(rec, indent=2))
        elif ext == ".html":
            from .plots import overlay_figure

            path.write_text(export.figure_html(overlay_figure(image, attr, label=handle.labels[attr.target])))
        else:
            raise ValueError(f"unknown output type {ext!r} for {path}; use one of {OUT_TYPES}")
        written.append(path)
    return written


def _cmd_explain(args: argparse.Namespace) -> int:
    import torch

    from models.handle import label_index
    from models.images import ImageError, decode_image
    from models.registry import ModelUnavailable, load_model

    from .methods import explain

    for out in args.out:
        if Path(out).suffix.lower() not in OUT_TYPES:
            print(f"error: --out {out}: unknown type; use one of {', '.join(OUT_TYPES)}", file=sys.stderr)
            return 2
        if len(args.images) > 1 and "{stem}" not in out:
            print("error: with several images every --out must contain {stem}", file=sys.stderr)
            return 2
    try:
        handle = load_model(args.model)
    except ModelUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params = dict(args.param or [])
    status = 0
    for image_path in args.images:
        try:
            data = Path(image_path).read_bytes()
            img = decode_image(data)
        except (OSError, ImageError) as e:
            print(f"error: {image_path}: {e}", file=sys.stderr)
            status = 1
            continue
        x = handle.input_tensor(img)
        probs = handle.predict(x)
        try:
            target = int(np.argmax(probs)) if args.target is None else label_index(handle, args.target)
            with torch.set_grad_enabled(True):
                attr = explain(handle, x, target, args.method, **params)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        image = handle.preprocess.to_display(x[0])
        rec = record(attr, handle, image_path, data, probs)
        outs = [o.replace("{stem}", Path(image_path).stem) for o in args.out]
        for p in write_outputs(attr, handle, image, outs, rec):
            if not args.quiet:
                print(f"{image_path}: {attr.method} for class {target} ({handle.labels[target]}) "
                      f"in {attr.seconds:.2f} s → {p}")
    return status


def _cmd_list_models(args: argparse.Namespace) -> int:
    from models.registry import list_models

    for e in list_models():
        print(f"{e.key:24s} {'yes' if e.available else 'no ':3s} {e.name} — {e.status}")
    return 0


def _cmd_list_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS

    for name, spec in METHODS.items():
        params = ", ".join(f"{p.name}={p.default!r}" for p in spec.params) or "no parameters"
        print(f"{name:22s} {'signed  ' if spec.signed else 'unsigned'} {spec.label} ({params})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m interpret", description="CNN Lens from the command line.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("explain", help="attribution map of one or more images")
    e.add_argument("images", nargs="+", metavar="IMAGE")
    e.add_argument("--model", default=None,
                   help="model key (python -m interpret list-models); the default model if omitted")
    e.add_argument("--method", required=True, help="method name (python -m interpret list-methods)")
    e.add_argument("--target", default=None, help="class index or label; default: the predicted class")
    e.add_argument("--param", action="append", type=parse_param, metavar="K=V", help="method parameter, repeatable")
    e.add_argument("--out", action="append", required=True, metavar="FILE",
                   help="output .npy / .png / .json / .html, repeatable")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_cmd_explain)
    sub.add_parser("list-models", help="models and whether they can be loaded here").set_defaults(
        func=_cmd_list_models)
    sub.add_parser("list-methods", help="attribution methods and their parameters").set_defaults(
        func=_cmd_list_methods)
    try:
        from .top_patches_cli import add_parser as add_top_patches
    except ImportError:  # pragma: no cover
        add_top_patches = None
    if add_top_patches is not None:
        add_top_patches(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "model", "") is None:
        from models.registry import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
