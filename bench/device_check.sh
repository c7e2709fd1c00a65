#!/usr/bin/env bash
# One device check for issue 14 (under 5 minutes on an H200; runs on a CPU too, with smaller settings):
# prints the device, runs the device-parametrised oracle tests, then bench/bench_device.py (ratios).
#   bash bench/device_check.sh            # the best device present ($CNN_LENS_DEVICE overrides)
#   CNN_LENS_DEVICE=cpu bash bench/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" TQDM_DISABLE=1
PY=${PYTHON:-python3}

# A bare machine (the device one gets a copy of the working tree): install what is missing, keeping its torch.
if ! "$PY" -c "import streamlit, captum, lime, pytest" >/dev/null 2>&1; then
    echo "== installing requirements (torch kept as installed)"
    grep -vE '^(torch|torchvision)([<>=!~ ]|$)' requirements.txt > /tmp/cnn_lens_requirements.txt
    "$PY" -m pip install -q -r /tmp/cnn_lens_requirements.txt -r requirements-test.txt \
        || { echo "pip install failed (no package index reachable?): install requirements*.txt first"; exit 1; }
fi

"$PY" - <<'PY'
import torch
from models.device import available_devices, resolve_device
d = resolve_device()
print("== device:", d, torch.cuda.get_device_name(d) if d.type == "cuda" else "",
      "| available:", ", ".join(available_devices()), "| torch", torch.__version__)
PY

DEV=$("$PY" -c "from models.device import resolve_device; print(resolve_device().type)")
# DEVICE_CHECK_ONLY=1: the device's variants only (the CPU ones run in CI anyway), when time is short
K="$DEV or cpu"; [ "${DEVICE_CHECK_ONLY:-0}" = 1 ] && K="$DEV"
echo "== device-parametrised oracle tests (-k \"$K\")"
t0=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider -x -k "$K" \
    tests/models/test_device.py tests/interpret/core/test_memory.py tests/interpret/test_device_outputs.py \
    tests/interpret/attribution/test_gradients.py tests/interpret/attribution/test_cam.py \
    tests/interpret/attribution/test_occlusion.py tests/interpret/attribution/test_occlusion_approx.py \
    tests/interpret/attribution/test_lime.py tests/interpret/attribution/test_lime_fast.py \
    tests/interpret/engines/test_incremental.py tests/interpret/evaluation/test_metrics.py \
    tests/interpret/evaluation/test_sanity.py tests/interpret/units/test_filters_activations.py \
    tests/interpret/units/test_receptive_field.py tests/interpret/units/test_top_patches.py \
    tests/interpret/units/test_feature_vis.py
status=$?
echo "== tests: exit $status, $(( $(date +%s) - t0 )) s"

echo "== benchmark"
"$PY" -m bench.bench_device
bench=$?
exit $(( status || bench ))
