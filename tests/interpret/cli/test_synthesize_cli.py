"""``python -m interpret synthesize``: the files it writes are exactly what the library gives for the same
settings, every option reaches the settings, and bad input is a message with exit status 2."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from interpret.cli.main import build_parser, main
from interpret.cli.synthesize import settings_of_args
from interpret.units.synthesis import render as syn
from interpret.units.synthesis import objectives as O
from interpret.units.synthesis.export import export_zip, png_bytes
from models.registry import load_model


def _args(*extra):
    return build_parser().parse_args(["synthesize", "--model", "classroom_clean", "--objective", "logit(star)",
                                      *extra])


def test_options_reach_the_settings():
    s = settings_of_args(_args("--preset", "quick", "--batch", "3", "--steps", "7", "--pixel", "--no-decorrelate",
                               "--no-transforms", "--l2", "0.5", "--blur-every", "2", "--seed", "9"))
    assert s == syn.preset("quick", batch=3, steps=7, param="pixel", decorrelate=False, pad=0, jitter=0, scale=0.0,
                           rotate=0, jitter2=0, l2=0.5, blur_every=2, seed=9)
    assert settings_of_args(_args()) == syn.PRESETS["quality"]


def test_files_equal_the_library_result(tmp_path, capsys):
    rc = main(["synthesize", "--model", "classroom_clean", "--objective", "logit(star) - 0.5*logit(circle)",
               "--preset", "quick", "--steps", "12", "--size", "32", "--batch", "2", "--seed", "3", "--out",
               str(tmp_path), "--stem", "s", "--quiet"])
    assert rc == 0
    h = load_model("classroom_clean")
    want = syn.synthesize(h, O.logit("star") - 0.5 * O.logit("circle"),
                          syn.preset("quick", steps=12, size=32, batch=2, seed=3))
    for i in range(2):
        got = np.asarray(Image.open(tmp_path / f"s_{i}.png").convert("RGB"))
        assert (tmp_path / f"s_{i}.png").read_bytes() == png_bytes(want.images[i])
        np.testing.assert_array_equal(got, np.clip(want.images[i] * 255 + 0.5, 0, 255).astype(np.uint8))
    meta = json.loads((tmp_path / "settings.json").read_text())
    assert meta["settings"]["batch"] == 2 and meta["settings"]["seed"] == 3 and meta["steps_done"] == 12
    assert meta["history"] == pytest.approx(want.history, abs=0) and set(meta["terms"]) == set(want.terms)
    assert "class star − 0.5 × class circle" in capsys.readouterr().out
    names = zipfile.ZipFile(io.BytesIO(export_zip(want, "s"))).namelist()
    assert sorted(names) == ["s_0.png", "s_1.png", "settings.json"]


def test_direction_vector_from_a_file(tmp_path):
    v = np.zeros(16)
    v[3] = 1.0
    np.save(tmp_path / "v.npy", v)
    rc = main(["synthesize", "--model", "classroom_clean", "--objective", "direction(features.2, v)", "--preset",
               "quick", "--steps", "3", "--size", "32", "--direction", f"v={tmp_path / 'v.npy'}", "--quiet"])
    assert rc == 0


@pytest.mark.parametrize("extra, msg", [
    (["--objective", "chanel(features.2, 1)"], "unknown term"),
    (["--objective", "logit(zebra)"], "unknown class"),
    (["--objective", "channel(features.2, 99)"], "out of range"),
    (["--objective", "direction(features.2, v)"], "no vector named"),
    (["--objective", "logit(star)", "--batch", "99"], "batch"),
    (["--objective", "logit(star)", "--direction", "oops"], "NAME=FILE"),
])
def test_bad_input_is_a_message(extra, msg, capsys):
    rc = main(["synthesize", "--model", "classroom_clean", "--preset", "quick", "--steps", "2", "--size", "32",
               "--quiet", *extra])
    assert rc == 2
    assert msg in capsys.readouterr().err
