"""What libgomp's wait policy costs or saves: typical app workloads on EfficientNet-Lite0 (a forward pass at batch 1
and 32, a saliency map, a quality-preset synthesis step), each policy in its own process (the policy is read when
torch loads its OpenMP library), medians of repeats, main thread, the machine's torch threads.

    python -m bench.bench_omp_policy [--policies default,PASSIVE]

Run it on a quiet machine and again while another CPU-heavy process runs: spinning threads (the default) are
fastest alone and worst when a core is taken by someone else; PASSIVE is the reverse.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure() -> dict:
    import torch

    from interpret.units.synthesis import objectives as O
    from interpret.units.synthesis.render import preset, synthesize
    from models import load_model

    h = load_model("efficientnet_lite0")

    def med(f, n=7):
        f()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return sorted(ts)[n // 2]

    x1, x32 = torch.randn(1, 3, 224, 224), torch.randn(32, 3, 224, 224)

    def fwd(x):
        with torch.no_grad():
            h.net(x)

    def sal():
        x = x1.clone().requires_grad_(True)
        torch.autograd.grad(h.net(x)[0, 967], [x])

    out = {"forward b1": med(lambda: fwd(x1)), "saliency": med(sal), "forward b32": med(lambda: fwd(x32), 3),
           "synthesis step": med(lambda: synthesize(h, O.logit(967), preset("quality", steps=8, progress_every=0)),
                                 3) / 8}
    return {k: round(1e3 * v, 1) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_omp_policy")
    ap.add_argument("--policies", default="default,PASSIVE")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(measure()))
        return 0
    for pol in a.policies.split(","):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if pol != "default":
            env["OMP_WAIT_POLICY"] = pol
        load = os.getloadavg()[0]
        res = subprocess.run([sys.executable, "-m", "bench.bench_omp_policy", "--child"], env=env,
                             capture_output=True, text=True, check=True)
        ms = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"OMP_WAIT_POLICY={pol:8s} " + "  ".join(f"{k} {v} ms" for k, v in ms.items()) +
              f"   (load average {load:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
