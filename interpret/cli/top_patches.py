"""Command line for the top-patches scan over a server folder, split into shards and merged again.

    python -m interpret.cli.top_patches scan --model efficientnet_lite0 --layer _blocks.5 --channels 0-7 \\
        --folder photos/ --k 9 --shard 0/4 --out part0.npz
    python -m interpret.cli.top_patches merge part0.npz part1.npz part2.npz part3.npz --out all.npz

``python -m interpret top-patches scan|merge …`` runs the same commands (``interpret.cli.main`` registers them
via ``add_parser``).
Shards are contiguous runs of whole batches; the merged file equals the one-run result exactly, provided
every shard used the same --batch-size.

With ``--engine ray`` one command does all of it on Ray workers (a local Ray on this machine's cores, or the
cluster at ``--address`` / ``$CNN_LENS_RAY_ADDRESS``), keeping finished shards in ``--parts`` so a rerun resumes:

    python -m interpret top-patches scan --model resnet18 --layer layer3 --images 'data/shard-{000..099}.tar' \
        --engine ray --workers 8 --out all.npz
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from models.device import DeviceError
from models.registry import ModelUnavailable, load_model

from interpret.cli import engine_args
from interpret.cli.device_arg import add_device_argument, device_of_args
from interpret.core.errors import InputError
from interpret.scale import ray_engine, reducers
from interpret.units import top_patches as tp
from models.collections import CollectionError, collection_spec, from_folder


def parse_channels(text: str | None) -> list[int] | None:
    """"0-3,7,9" → [0, 1, 2, 3, 7, 9]; None/"all" → None (every channel)."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def parse_shard(text: str | None) -> tuple[int, int]:
    """"i/n" (0-based i) → (i, n)."""
    if not text:
        return (0, 1)
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard wants i/n, e.g. 0/4, not {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return (i, n)


def run_scan(handle, folder: str, layer: str, channels: list[int] | None = None, k: int = 9, per_image: int = 1,
             batch_size: int = 16, shard: tuple[int, int] = (0, 1), call_index: int = -1, progress=None
             ) -> tp.TopPatches:
    """The scan the CLI runs: images of ``folder`` (sorted; or any collection ``collection_spec`` names: a
    zip, a list file, a tar shard set), shard ``shard``."""
    col = from_folder(folder) if os.path.isdir(folder) else collection_spec(folder).open()
    if shard != (0, 1):
        col = col.shard(shard[0], shard[1], batch_size)
    return tp.scan(handle, col, layer, channels, k=k, per_image=per_image, batch_size=batch_size,
                   call_index=call_index, progress=progress)


def _summary(res: tp.TopPatches) -> dict:
    return {"layer": res.layer, "channels": len(res.channels), "images": res.n_images, "skipped": len(res.skipped),
            "seconds": round(res.seconds, 2), "best": {c: round(v[0].value, 4) for c, v in res.patches.items() if v}}


def _cmd_scan_ray(a: argparse.Namespace) -> int:
    """The scan on Ray: shards on workers, parts kept in --parts (resume), merged exactly into --out."""
    try:
        spec = collection_spec(a.images or a.folder)
        listing = spec.open()
        red = reducers.TopPatchesReducer(a.layer, None if a.channels is None else tuple(parse_channels(a.channels)),
                                         a.k, a.per_image, a.batch_size, a.call_index)
        with ray_engine.session(engine_args.address(a)):
            res, info = ray_engine.run(red, a.model, spec, listing, parts_dir=a.parts or f"{a.out}.parts",
                                       progress=engine_args.progress_printer(a.quiet), **engine_args.engine_kwargs(a))
    except (InputError, CollectionError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    if not a.quiet:
        print(file=sys.stderr)
    _write(res, a)
    print(json.dumps({**_summary(res), "shards": info.shards, "reused": info.reused, "workers": info.workers,
                      "retried": info.retried}))
    return 0


def _write(res: tp.TopPatches, a: argparse.Namespace) -> None:
    tp.save(res, a.out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({**res.params(), "n_images": res.n_images, "skipped": res.skipped, "patches": res.records()}, f,
                      indent=1)


def _cmd_scan(a: argparse.Namespace) -> int:
    if (a.folder is None) == (a.images is None):
        print("error: give exactly one of --folder and --images", file=sys.stderr)
        return 2
    if a.engine == "ray":
        if a.shard:
            print("error: --shard is for hand-started shards; --engine ray makes and runs the shards itself",
                  file=sys.stderr)
            return 2
        return _cmd_scan_ray(a)
    try:
        handle = load_model(a.model, device_of_args(a))
    except (ModelUnavailable, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def progress(done, total):
        print(f"\r{done}/{total} images", end="", file=sys.stderr, flush=True)

    try:
        res = run_scan(handle, a.folder or a.images, a.layer, parse_channels(a.channels), a.k, a.per_image,
                       a.batch_size, parse_shard(a.shard), a.call_index, None if a.quiet else progress)
    except (InputError, CollectionError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    if not a.quiet:
        print(file=sys.stderr)
    _write(res, a)
    print(json.dumps(_summary(res)))
    return 0


def _cmd_merge(a: argparse.Namespace) -> int:
    res = tp.merge([tp.load(p) for p in a.parts])
    tp.save(res, a.out)
    print(json.dumps(_summary(res)))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``top-patches {scan,merge}`` on an argparse subparsers object (for ``python -m interpret``)."""
    p = subparsers.add_parser("top-patches", help="top-activating patches over a folder (sharded scan + merge)")
    sub = p.add_subparsers(dest="tp_cmd", required=True)
    s = sub.add_parser("scan", help="scan a folder (or one shard of it) and save the result (.npz)")
    s.add_argument("--model", required=True, help="model key (see the model list)")
    s.add_argument("--layer", required=True, help="layer module path, e.g. _blocks.5 or layer3")
    s.add_argument("--channels", default=None, help="e.g. 0-15,31 (default: all)")
    s.add_argument("--folder", default=None, help="a folder of images (searched recursively)")
    s.add_argument("--images", default=None, metavar="COLLECTION",
                   help="a folder, a .zip, a .txt list of image paths, or tar shards like shard-{000..009}.tar")
    s.add_argument("--k", type=int, default=9)
    s.add_argument("--per-image", type=int, default=1, help="patches per image and channel (default 1)")
    s.add_argument("--batch-size", type=int, default=16, help="must be the same for all shards")
    s.add_argument("--call-index", type=int, default=-1, help="which call of a module used several times")
    s.add_argument("--shard", default=None, help="i/n: scan shard i (0-based) of n")
    s.add_argument("--out", required=True, help="result file (.npz)")
    s.add_argument("--json", default=None, help="also write the ranking (no pixels) as JSON")
    s.add_argument("--quiet", action="store_true")
    add_device_argument(s)
    s.add_argument("--parts", default=None, help="with --engine ray: folder of finished shards' parts, reused by "
                                                 "a rerun with the same arguments (default: OUT.parts)")
    engine_args.add_engine_args(s)
    s.set_defaults(func=_cmd_scan)
    m = sub.add_parser("merge", help="merge shard results into the one-run result")
    m.add_argument("parts", nargs="+")
    m.add_argument("--out", required=True)
    m.set_defaults(func=_cmd_merge)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interpret.cli.top_patches")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_parser(sub)
    args = parser.parse_args(["top-patches", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
