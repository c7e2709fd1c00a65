"""``python -m interpret explain``: attribution maps of image files, written without the app.

    python -m interpret explain IMAGE [IMAGE …] --model NAME --method METHOD [--target CLASS] \\
        [--param k=v …] --out FILE [--out FILE …]

``--out`` by extension: ``.npy`` the raw map, ``.png`` the map over the image (rendered with Pillow, no browser
needed), ``.json`` the settings that reproduce the map and its statistics, ``.html`` the interactive plotly
figure (plotly.js inlined, so it opens offline). With several images each ``--out`` must contain ``{stem}``.

A whole collection (folder, zip, list file, tar shard set), in this process or on Ray workers:

    python -m interpret explain --images COLLECTION --method M [--target predicted|INDEX] --out DIR \
        [--engine ray [--address ADDR] [--workers N]]

writes per image ``NNNNNN_STEM.npy`` / ``.png`` / ``.json`` into DIR and ``index.csv`` (one row per image:
prediction, target, files, or why it was skipped).
"""
from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from models.handle import label_index
from models.images import ImageError, decode_image
from models.device import DeviceError
from models.registry import DEFAULT_MODEL, ModelUnavailable, load_model

from interpret.attribution.registry import METHODS, explain
from interpret.cli import engine_args
from interpret.cli.device_arg import add_device_argument, device_of_args
from interpret.core.errors import InputError
from interpret.scale import ray_engine
from interpret.scale.reducers import ExplainPart, ExplainReducer
from models.collections import CollectionError, collection_spec
from interpret.plots import export
from interpret.plots.attribution import overlay_figure

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
    """Write the map to every path of ``outs``, in the format its extension names (``OUT_TYPES``)."""
    method_label = METHODS[attr.method].label if attr.method in METHODS else attr.method
    label = handle.labels[attr.target]
    written = []
    for out in outs:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        ext = path.suffix.lower()
        if ext == ".npy":
            np.save(path, attr.map)
        elif ext == ".png":
            path.write_bytes(export.overlay_png(image, attr, label=label, method_label=method_label))
        elif ext == ".json":
            path.write_text(json.dumps(rec, indent=2))
        elif ext == ".html":
            path.write_text(export.figure_html(overlay_figure(image, attr, label=label, method_label=method_label)))
        else:
            raise InputError(f"unknown output type {ext!r} for {path}; use one of {OUT_TYPES}")
        written.append(path)
    return written


INDEX_COLUMNS = ("index", "image", "status", "predicted", "predicted_label", "probability", "target",
                 "target_label", "target_probability", "map", "overlay", "settings")


def _stem(index: int, name: str) -> str:
    base = Path(name).stem if "/" not in name else name.rsplit(".", 1)[0]
    return f"{index:06d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', base)[:80]}"


class CollectionWriter:
    """Writes the explained images of a collection into one folder as their parts arrive, and the index CSV."""

    def __init__(self, out_dir: str | Path, handle, source: str) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.handle, self.source = handle, source
        self.rows: list[dict] = []

    def add(self, part: ExplainPart) -> None:
        h = self.handle
        for it in part.items:
            stem = _stem(it.index, it.name)
            rec = export.settings_record(it.attr, h, it.name, it.probs)
            rec.update({"collection": self.source, "image_index": it.index, "pixels_sha256": it.sha256,
                        "command": "python -m interpret explain --images"})
            outs = [self.dir / f"{stem}{ext}" for ext in (".npy", ".png", ".json")]
            write_outputs(it.attr, h, it.display, outs, rec)
            pred = int(np.argmax(it.probs))
            self.rows.append({"index": it.index, "image": it.name, "status": "ok", "predicted": pred,
                              "predicted_label": h.labels[pred], "probability": f"{float(it.probs[pred]):.6g}",
                              "target": it.attr.target, "target_label": h.labels[it.attr.target],
                              "target_probability": f"{float(it.probs[it.attr.target]):.6g}",
                              "map": outs[0].name, "overlay": outs[1].name, "settings": outs[2].name})

    def finish(self, skipped) -> Path:
        """index.csv: explained images in collection order, then the skipped ones with the reason."""
        rows = sorted(self.rows, key=lambda r: r["index"])
        rows += [{"image": n, "status": f"skipped: {why}"} for n, why in skipped]
        path = self.dir / "index.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, INDEX_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        return path


def run_collection(args: argparse.Namespace) -> int:
    """``explain --images COLLECTION --out DIR``: every image of a collection, here or on Ray (--engine ray)."""
    if args.images or len(args.out) != 1 or Path(args.out[0]).suffix.lower() in OUT_TYPES:
        print("error: with --images give no image files and one --out folder", file=sys.stderr)
        return 2
    target = None if args.target in (None, "predicted") else args.target
    params = tuple(sorted(dict(args.param or []).items()))
    try:
        spec = collection_spec(args.images_collection)
        listing = spec.open()
        # on Ray the maps are made by the workers (on cuda with --gpus-per-worker); the local copy only names
        # labels for the writer, so it stays on the CPU and takes no GPU memory from the workers
        device = "cpu" if args.engine == "ray" else device_of_args(args)
        handle = load_model(DEFAULT_MODEL if args.model is None else args.model, device)
        red = ExplainReducer(args.method, target, params)
        writer = CollectionWriter(args.out[0], handle, spec.location)
        if args.engine == "ray":
            with ray_engine.session(engine_args.address(args)):
                res, _ = ray_engine.run(red, handle.key, spec, listing, on_part=lambda _, p: writer.add(p),
                                        progress=engine_args.progress_printer(args.quiet),
                                        **engine_args.engine_kwargs(args))
            if not args.quiet:
                print(file=sys.stderr)
        else:
            part = red.run(handle, red.prepare(handle), spec.subset(listing.items))  # fresh: decode skips only
            res = red.finish(part, listing, 0.0, False)
            writer.add(res)
    except (ModelUnavailable, CollectionError, ValueError) as e:  # InputError, LabelError: a bad option
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    index = writer.finish(res.skipped)
    if not args.quiet:
        print(f"{len(res.items)} images explained, {len(res.skipped)} skipped → {index}")
    return 0


def run(args: argparse.Namespace) -> int:
    """The ``explain`` command: 0 when every image was explained, 1 when an image could not be read, 2 on a bad
    option (model, method, class, parameter or output type)."""
    if getattr(args, "images_collection", None):
        return run_collection(args)
    if not args.images:
        print("error: give image files or --images COLLECTION", file=sys.stderr)
        return 2
    for out in args.out:
        if Path(out).suffix.lower() not in OUT_TYPES:
            print(f"error: --out {out}: unknown type; use one of {', '.join(OUT_TYPES)}", file=sys.stderr)
            return 2
        if len(args.images) > 1 and "{stem}" not in out:
            print("error: with several images every --out must contain {stem}", file=sys.stderr)
            return 2
    try:
        handle = load_model(DEFAULT_MODEL if args.model is None else args.model, device_of_args(args))
    except (ModelUnavailable, DeviceError) as e:
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
        except ValueError as e:  # InputError and NotDefined too: a bad option, told as such
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


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``explain`` on an argparse subparsers object."""
    e = subparsers.add_parser("explain", help="attribution map of one or more images")
    e.add_argument("images", nargs="*", metavar="IMAGE")
    e.add_argument("--images", dest="images_collection", default=None, metavar="COLLECTION",
                   help="explain every image of a folder, .zip, .txt list or tar shard set; --out is then a folder")
    e.add_argument("--model", default=None,
                   help="model key (python -m interpret list-models); the default model if omitted")
    e.add_argument("--method", required=True, help="method name (python -m interpret list-methods)")
    e.add_argument("--target", default=None, help="class index or label; default: the predicted class")
    e.add_argument("--param", action="append", type=parse_param, metavar="K=V", help="method parameter, repeatable")
    e.add_argument("--out", action="append", required=True, metavar="FILE",
                   help="output .npy / .png / .json / .html, repeatable")
    e.add_argument("--quiet", action="store_true")
    add_device_argument(e)
    engine_args.add_engine_args(e)
    e.set_defaults(func=run)
    return e
