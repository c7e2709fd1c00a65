"""Top patches page with ``CNN_LENS_RAY_ADDRESS`` set: the server folder is scanned on that Ray cluster (a real
local Ray started in-process on 127.0.0.1), the progress line is fed by the workers, and the table equals the
in-process scan of the same folder."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import pytest
import ray
from PIL import Image
from streamlit.testing.v1 import AppTest

from interpret.scale import ray_engine as RE
from interpret.units import top_patches as tp
from models.collections import from_folder
from models.registry import load_model
from tests.apptest_util import navigation_only

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MODEL = "classroom_clean"


@pytest.fixture(scope="module")
def ray_address():
    assert not ray.is_initialized()
    RE.connect(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _png(seed: int) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (50, 60, 3), dtype=np.uint8)).save(b, "PNG")
    return b.getvalue()


def test_server_folder_scan_runs_on_the_ray_cluster(ray_address, tmp_path, monkeypatch):
    for i in range(20):
        (tmp_path / f"im{i:02d}.png").write_bytes(_png(i))
    (tmp_path / "junk.png").write_bytes(b"no image")
    monkeypatch.setenv("CNN_LENS_COLLECTION_DIR", str(tmp_path))
    monkeypatch.setenv(RE.ENV_ADDRESS, ray_address)
    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.session_state["model_key"] = MODEL
        at.run()
        at.switch_page(str(ROOT / "pages" / "top_patches.py")).run()
        assert not at.exception, at.exception
        at.radio(key="tp_source").set_value("folder").run()
        at.radio(key="tp_chmode").set_value("typed").run()
        at.text_input(key="tp_typed").set_value("0, 3")
        at.number_input(key="tp_k").set_value(3)
        next(b for b in at.button if b.label == "Scan").click().run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
    assert any(f"Ray cluster at {ray_address}" in c.value for c in at.caption)
    layer = at.selectbox(key=f"tp_layer_{MODEL}").value.split(" — ")[0]
    assert "20 images scanned" in next(m.value for m in at.markdown if "images scanned" in m.value)
    handle = load_model(MODEL)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray workers run: a conv's sums may be split differently at other counts
    try:
        ref = tp.scan(handle, from_folder(tmp_path), layer, [0, 3], k=3, per_image=1, batch_size=8)
    finally:
        torch.set_num_threads(n_threads)
    table = at.dataframe[-1].value
    assert list(table["image"]) == [r["image"] for r in ref.records()]
    np.testing.assert_array_equal(table["value"].to_numpy(), [r["value"] for r in ref.records()])
    assert list(at.dataframe[0].value["file"]) == ["junk.png"]
