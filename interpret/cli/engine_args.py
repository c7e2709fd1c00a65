"""The ``--engine local|ray`` options shared by the commands that can run on Ray (top-patches scan, explain)."""
from __future__ import annotations

import argparse
import os
import sys

from interpret.scale import ray_engine


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """--engine, --address, --workers, --threads-per-worker, --gpus-per-worker, --shards."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: shards on Ray workers (a local Ray, or --address)")
    g.add_argument("--address", default=None,
                   help=f"Ray cluster to join (default: ${ray_engine.ENV_ADDRESS} if set, else a local Ray)")
    g.add_argument("--workers", type=int, default=None, help="Ray workers (default: CPUs / threads per worker)")
    g.add_argument("--threads-per-worker", type=int, default=1, help="torch threads (and Ray CPUs) per worker")
    g.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per worker (workers then run on cuda)")
    g.add_argument("--shards", type=int, default=None, help="number of shards (default: about 8 batches each)")


def address(a: argparse.Namespace) -> str | None:
    """--address, else $CNN_LENS_RAY_ADDRESS, else None (a local Ray)."""
    return a.address or os.environ.get(ray_engine.ENV_ADDRESS) or None


def engine_kwargs(a: argparse.Namespace) -> dict:
    """The ``ray_engine.run`` keywords the options set."""
    return {"workers": a.workers, "threads_per_worker": a.threads_per_worker, "gpus_per_worker": a.gpus_per_worker,
            "n_shards": a.shards}


def progress_printer(quiet: bool):
    """A ``Progress`` callback that redraws one line on stderr (None when quiet)."""
    if quiet:
        return None
    return lambda p: print(f"\r{p.text()}", end="", file=sys.stderr, flush=True)
