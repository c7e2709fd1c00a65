"""Top-patch scan on Ray against the in-process scan, side by side in one run (a benchmark, not a test):

1. a bare forward pass (decode + preprocess + whole network, nothing kept) at T threads;
2. the in-process scan at 1 thread and at T threads;
3. the scan on Ray with 1 worker at 1 thread (overhead goal ≤ 10 % against in-process at 1 thread);
4. the scan on Ray with T workers at 1 thread each, against in-process at T threads.

Images/s are over a folder of real photos (crops of the scikit-image photos, JPEG) scanned for every channel of
one layer of the default model (k = 9). Ray runs are timed warm (workers started and models loaded by a first
small run; that start-up is printed separately), each Ray result is checked equal to the in-process result.

    python -m bench.bench_ray [--images 192] [--threads 2] [--layer _blocks.10] [--batch-size 16] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from bench.bench_units import bare_forward, photos
from interpret.scale import ray_engine as RE
from interpret.scale.reducers import TopPatchesReducer
from models.collections import collection_spec
from models.registry import DEFAULT_MODEL, load_model


def write_photos(folder: str, n: int, seed: int = 0) -> None:
    """n JPEG crops of the scikit-image photos (the unit bench's stream, written to disk)."""
    for name, img in photos(n, seed):
        img.save(os.path.join(folder, f"{name}.jpg"), quality=90)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--threads", type=int, default=2, help="cores to compare against (workers at 1 thread each)")
    ap.add_argument("--layer", default="_blocks.10")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="bench_ray_")
    try:
        write_photos(folder, a.images)
        spec = collection_spec(folder)
        n = len(spec.open())
        handle = load_model(a.model)
        red = TopPatchesReducer(a.layer, None, k=9, batch_size=a.batch_size)
        print(f"{n} images, {a.model} {a.layer} (all channels, k=9), batch {a.batch_size}; "
              f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        runs: dict[str, list[float]] = {}
        ref, out = {}, {}

        def forward() -> None:
            torch.set_num_threads(a.threads)
            bare_forward(handle, ((name, img) for _, name, img in spec.open()), a.batch_size)

        def local(t: int) -> None:
            torch.set_num_threads(t)
            ref[t] = red.run(handle, red.prepare(handle), spec.open())

        def on_ray(w: int) -> None:
            torch.set_num_threads(1)
            out[w] = RE.run(red, a.model, spec, workers=w, threads_per_worker=1)[0]

        names = [f"bare forward, {a.threads} threads", "in-process scan, 1 thread",
                 f"in-process scan, {a.threads} threads", "Ray, 1 worker × 1 thread",
                 f"Ray, {a.threads} workers × 1 thread"]
        fns = [forward, lambda: local(1), lambda: local(a.threads), lambda: on_ray(1), lambda: on_ray(a.threads)]
        with RE.session(num_cpus=a.threads):
            starts = {}
            for w in (1, a.threads):
                torch.set_num_threads(1)
                warm = time.perf_counter()
                RE.run(red, a.model, spec, spec.subset(spec.open().items[:a.batch_size * w]), workers=w,
                       n_shards=w)
                starts[w] = time.perf_counter() - warm
            # The repeats alternate the five runs, so a change in the machine's load touches them all alike;
            # Ray runs reuse the warm pool (the 1-worker run takes its first worker).
            for _ in range(a.repeats):
                for name, fn in zip(names, fns):
                    runs.setdefault(name, []).append(n / timed(fn))
        same = all(out[w].records() == ref[1].records() for w in out) and ref[a.threads].records() == ref[1].records()
        print(f"{'':40s} {'images/s: median [min–max] of ' + str(a.repeats):>36s}")
        med = {}
        for name in names:
            v = sorted(runs[name])
            med[name] = float(np.median(v))
            print(f"{name:40s} {med[name]:9.1f} [{v[0]:.1f}–{v[-1]:.1f}]")
        print(f"worker start-up incl. model load (first run of each pool): "
              + ", ".join(f"{w} worker(s) {s:.1f} s" for w, s in starts.items()))
        print(f"every Ray and in-process result equal: {same}")
        r1 = med[names[3]] / med[names[1]]
        r2 = med[names[4]] / med[names[2]]
        print(f"Ray 1 worker / in-process 1 thread: {r1:.2f} (overhead {100 * (1 - r1):.0f} %)")
        print(f"Ray {a.threads} workers × 1 thread / in-process {a.threads} threads: {r2:.2f}")
        print(f"Ray {a.threads} workers / Ray 1 worker: {med[names[4]] / med[names[3]]:.2f}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
