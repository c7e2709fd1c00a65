"""The command line, run in-process on the default model with a real photo."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from interpret.cli.explain import parse_param
from interpret.cli.main import main
from interpret.plots.export import scaled_map
from interpret.attribution.occlusion import occlusion


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def test_parse_param():
    assert parse_param("window=31") == ("window", 31)
    assert parse_param("noise = 0.2") == ("noise", 0.2)
    assert parse_param("squared=true") == ("squared", True)
    assert parse_param("layer=_blocks.15") == ("layer", "_blocks.15")
    assert parse_param("layer=None") == ("layer", None)
    assert parse_param("hide_color=[0, 0, 0]") == ("hide_color", [0, 0, 0])


def test_scaled_map():
    u, lo, hi = scaled_map(np.array([[-2.0, 1.0]]), signed=True)
    assert (lo, hi) == (-2.0, 2.0) and u.tolist() == [[0.0, 0.75]]
    u, lo, hi = scaled_map(np.array([[1.0, 3.0]]), signed=False)
    assert (lo, hi) == (1.0, 3.0) and u.tolist() == [[0.0, 1.0]]


def test_explain_occlusion_all_outputs(photo, tmp_path, default_handle, capsys):
    outs = [tmp_path / f"o.{ext}" for ext in ("npy", "json", "png", "html")]
    args = ["explain", str(photo), "--model", "efficientnet_lite0", "--method", "occlusion",
            "--param", "window=112", "--param", "stride=112", "--param", "baseline=mean"]
    for o in outs:
        args += ["--out", str(o)]
    assert main(args) == 0
    # oracle: the same computation through the library
    h = default_handle
    x = h.input_tensor(Image.open(photo).convert("RGB"))
    target = int(h.predict(x).argmax())
    ref = occlusion(h, x, target, window=112, stride=112, baseline="mean")
    m = np.load(outs[0])
    assert m.shape == (224, 224) and m.dtype == np.float32
    # the registry's default engine is the incremental one (BN folded: equal up to float rounding, issue 7's 1e-4)
    scale = np.abs(ref.map).max()
    assert np.abs(m - ref.map).max() <= 1e-4 * scale
    rec = json.loads(outs[1].read_text())
    assert rec["model"] == "efficientnet_lite0" and rec["method"] == "occlusion" and rec["target"] == target
    assert rec["params"]["window"] == 112 and rec["params"]["baseline"] == "mean"
    assert rec["map"]["max"] == pytest.approx(float(ref.map.max()), rel=1e-5)
    assert rec["top5"][0]["index"] == target and len(rec["image_sha256"]) == 64
    png = Image.open(outs[2])
    assert png.format == "PNG" and png.width > 448 and png.height > 448
    html = outs[3].read_text()
    assert "plotly" in html.lower() and len(html) > 100_000  # plotly.js inlined: opens offline
    assert "occlusion for class" in capsys.readouterr().out


def test_explain_saliency_target_by_label_and_batch(photo, tmp_path, default_handle):
    other = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(other)
    out = tmp_path / "{stem}.npy"
    assert main(["explain", str(photo), str(other), "--method", "saliency", "--target", "Tabby",
                 "--out", str(out), "--quiet"]) == 0
    a, b = np.load(tmp_path / "chelsea.npy"), np.load(tmp_path / "coffee.npy")
    assert a.shape == b.shape == (224, 224) and not np.array_equal(a, b)
    rec_path = tmp_path / "r.json"
    assert main(["explain", str(photo), "--method", "saliency", "--target", "281", "--out", str(rec_path)]) == 0
    rec = json.loads(rec_path.read_text())
    assert rec["target"] == default_handle.labels.index("tabby") == 281


def test_errors(photo, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    assert main(["explain", str(bad), "--method", "saliency", "--out", str(tmp_path / "a.npy")]) == 1
    assert "bad.png" in capsys.readouterr().err
    assert main(["explain", str(photo), "--method", "nope", "--out", str(tmp_path / "a.npy")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["explain", str(photo), "--method", "saliency", "--out", str(tmp_path / "a.gif")]) == 2
    assert main(["explain", str(photo), "--method", "saliency", "--target", "no such class",
                 "--out", str(tmp_path / "a.npy")]) == 2
    assert main(["explain", str(photo), "--model", "nope", "--method", "saliency",
                 "--out", str(tmp_path / "a.npy")]) == 2
    assert main(["explain", str(photo), "--method", "occlusion", "--param", "window=3", "--param", "stride=9",
                 "--out", str(tmp_path / "a.npy")]) == 2


def test_listings(capsys):
    assert main(["list-methods"]) == 0
    out = capsys.readouterr().out
    assert "occlusion" in out and "lime" in out and "saliency" in out
    assert main(["list-models"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out


@pytest.mark.parametrize("cmd", [["explain", "{photo}", "--method", "saliency", "--out", "{out}.npy"],
                                 ["top-patches", "scan", "--model", "efficientnet_lite0", "--layer", "_blocks.0",
                                  "--folder", "{folder}", "--out", "{out}.npz"]])
def test_device_option_refuses_an_unknown_device(cmd, photo, tmp_path, capsys):
    """Every command that loads a model takes --device; a bad name is a plain error naming what exists."""
    args = [a.format(photo=photo, out=tmp_path / "o", folder=photo.parent) for a in cmd]
    assert main(args + ["--device", "warp-drive"]) == 2
    err = capsys.readouterr().err
    assert "warp-drive" in err and "available here: cpu" in err


def test_device_option_runs_on_the_cpu(photo, tmp_path, default_handle):
    out = tmp_path / "s.npy"
    assert main(["explain", str(photo), "--method", "saliency", "--out", str(out), "--device", "cpu",
                 "--quiet"]) == 0
    assert out.exists()
