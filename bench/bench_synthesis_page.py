"""The Synthesized images page's time per step against the library's, side by side in one run.

Starts ``streamlit run app.py`` on 127.0.0.1, drives Chromium (Playwright) to the page, runs the chosen preset
N times with fresh seeds and reads the server-side seconds the page prints ("N steps in X s"); between the page's
runs the same objective and settings run through the library in this process (main thread). Prints medians with
min–max, the ratio page / library and the load average before and after.

    python bench/bench_synthesis_page.py --runs 5 --preset quick [--omp-wait-policy PASSIVE]
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("streamlit exited: " + log_path.read_text()[-2000:])
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("streamlit did not become healthy")


def _stats(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.1f} ms/step (min {min(xs):.1f}, max {max(xs):.1f}, n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--preset", default="quick", choices=["quick", "quality"])
    ap.add_argument("--class-index", type=int, default=967, help="the logit maximised (default espresso)")
    ap.add_argument("--log", default="/tmp/bench_synthesis_page_server.log")
    ap.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE"], default=None,
                    help="set OMP_WAIT_POLICY for the server and this process (before torch loads libgomp); "
                         "PASSIVE avoids libgomp's spin-waiting, which on 2 shared cores makes a 2-thread step "
                         "up to 40x slower while another process computes")
    a = ap.parse_args()
    if a.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = a.omp_wait_policy  # inherited by the server; read when torch loads
    assert "torch" not in sys.modules or not a.omp_wait_policy, "torch was imported before the policy was set"

    from playwright.sync_api import sync_playwright

    from interpret.units.synthesis import objectives as O
    from interpret.units.synthesis.render import preset, synthesize
    from models import load_model
    from tests.e2e.test_browser import go, wait_idle

    handle = load_model("efficientnet_lite0")
    load0 = os.getloadavg()
    proc, url = _serve(Path(a.log))
    page_ms: list[float] = []
    lib_ms: list[float] = []
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                  args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            wait_idle(page)
            go(page, "Synthesized images")
            page.get_by_text("Quick" if a.preset == "quick" else "Quality (Lucent's recipe)", exact=True).click()
            wait_idle(page)
            # the class row: preselected is the photo's prediction (espresso for the default coffee photo)
            main = page.locator('[data-testid="stMain"]')
            for run in range(a.runs + 1):  # run 0 warms both paths (first-call costs), not counted
                seed = 100 + run
                box = page.get_by_label("Seed", exact=True)
                box.fill(str(seed))
                box.press("Tab")
                page.get_by_role("button", name="Synthesize").click()
                wait_idle(page, settle_ms=500)
                txt = main.inner_text()
                m = re.search(r"(\d+) steps in ([\d.]+) s", txt)
                if not m:
                    raise RuntimeError("the page printed no timing: " + txt[-600:])
                ms_page = 1e3 * float(m.group(2)) / int(m.group(1))
                s = preset(a.preset, seed=seed, progress_every=16)
                res = synthesize(handle, O.logit(a.class_index), s)
                ms_lib = 1e3 * res.seconds / len(res.history)
                tag = "warm-up" if run == 0 else f"run {run}"
                print(f"{tag:8s} seed {seed}: page {ms_page:6.1f} ms/step   library {ms_lib:6.1f} ms/step",
                      flush=True)
                if run:
                    page_ms.append(ms_page)
                    lib_ms.append(ms_lib)
            b.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    load1 = os.getloadavg()
    print(f"\nOMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"preset {a.preset} ({preset(a.preset).steps} steps at {preset(a.preset).size}², batch 1), "
          f"EfficientNet-Lite0, logit {a.class_index}")
    print(f"page    (server side): {_stats(page_ms)}")
    print(f"library (main thread): {_stats(lib_ms)}")
    print(f"ratio page / library (medians): {statistics.median(page_ms) / statistics.median(lib_ms):.2f}")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
