"""``python -m interpret ablate``: unit parsing, the report against the library called directly, a labelled folder,
the Clever Hans story on a small set (its detectors are the dissection's, its rows the ablation's), the story's
sentence read off the figures, and the shipped story reproduced for the row the walk-through quotes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from interpret.cli import ablate as cli
from interpret.cli.main import main
from interpret.core.errors import InputError
from interpret.evaluation import ablation as ab
from interpret.units import dissection as dis
from models.classroom import generate, load


@pytest.fixture(scope="module")
def spurious():
    return load("classroom_spurious")


def test_parse_units():
    assert cli.parse_units(["features.23:3,17", "features.20:0-2", "features.23:5"]) == {
        "features.23": [3, 17, 5], "features.20": [0, 1, 2]}
    for bad in ("features.23", ":3", "features.23:x", "features.23:3-"):
        with pytest.raises(InputError):
            cli.parse_units([bad])


def test_json_report_equals_the_library(spurious, capsys):
    assert main(["ablate", "--model", "classroom_spurious", "--units", "features.23:3,16,88", "--n", "36",
                 "--draws", "2", "--seed", "9", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = ab.ablation_report(spurious, cli.classroom_sets("classroom_spurious", 36, 9), {"features.23": [3, 16, 88]},
                              random_draws=2, seed=9).to_dict()
    for k in ("units", "baseline", "ablated", "control_units", "n_images"):
        assert got[k] == json.loads(json.dumps(want[k])), k
    assert got["control"]["cue-flipped"]["draws"] == want["control"]["cue-flipped"]["draws"]
    # the normal set is the Clever Hans model's own distribution; the flipped one tags every non-star
    ds = cli.classroom_sets("classroom_spurious", 36, 9)
    assert ds["normal"].spurious and ds["cue-flipped"].cue_flipped
    star = ds["cue-flipped"].classes.index("star")
    assert (ds["cue-flipped"].cue == (ds["cue-flipped"].labels != star)).all()


@pytest.mark.parametrize("args, words", [
    (["--model", "classroom_clean"], "not both and not neither"),
    (["--model", "classroom_clean", "--units", "nope:1"], "no layer named"),
    (["--model", "classroom_clean", "--units", "features.23:96"], "channels 0…95"),
    (["--model", "classroom_clean", "--units", "features.23:1", "--concept", "tag"], "not both"),
    (["--model", "classroom_clean", "--concept", "tag", "--layers", "features.2", "--min-iou", "1.0", "--n", "12"],
     "no detector of 'tag'"),
])
def test_bad_arguments_are_messages(args, words, capsys):
    assert main(["ablate", *args]) == 2
    assert words in capsys.readouterr().err


def test_labelled_folder_and_image(spurious, tmp_path, capsys):
    ds = generate("test", 18, seed=11, cue_flipped=True)
    for i in range(len(ds)):
        folder = tmp_path / ds.classes[ds.labels[i]]
        folder.mkdir(exist_ok=True)
        ds.pil(i).save(folder / f"{i:02d}.png")
    (tmp_path / "not_a_class").mkdir()
    ds.pil(0).save(tmp_path / "not_a_class" / "x.png")
    ds.pil(0).save(tmp_path / "loose.png")
    images, labels, skipped = ab.labelled_folder(spurious, str(tmp_path))
    assert len(images) == 18 and sorted(labels.tolist()) == sorted(ds.labels.tolist())
    assert len(skipped) == 2 and any("not_a_class" in s for s in skipped)
    units = {"features.20": [1, 2]}
    assert main(["ablate", "--model", "classroom_spurious", "--units", "features.20:1,2", "--folder", str(tmp_path),
                 "--image", str(tmp_path / "loose.png"), "--draws", "1", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    order = np.argsort([f"{ds.classes[ds.labels[i]]}/{i:02d}.png" for i in range(18)])  # the folder's sorted order
    assert got["baseline"]["folder"] == ab.accuracy(spurious, ds.images[order], ds.labels[order], None)
    assert got["ablated"]["folder"] == ab.accuracy(spurious, ds.images[order], ds.labels[order], units)
    want = ab.prediction_change(spurious, ds.pil(0), units)
    assert got["prediction"]["p_after"] == pytest.approx(want.p_after, rel=1e-12)
    with pytest.raises(InputError, match="sub-folder named after"):
        ab.labelled_folder(spurious, str(tmp_path / "not_a_class"))


@pytest.mark.slow
def test_story_on_a_small_set(spurious, tmp_path):
    story = cli.run_story(n=24, draws=1, models=("classroom_spurious",))
    m = story["models"]["classroom_spurious"]
    d = dis.dissect(spurious, dis.classroom_dissection_data(n=24), cli.relu_layers(spurious))
    want = {L: sorted(d.layers[L].detectors("tag")) for L in d.layers}
    assert {L: [u for u, _ in v] for L, v in m["detectors"].items()} == {L: v for L, v in want.items() if v}
    sets = cli.classroom_sets("classroom_spurious", 24, cli.STORY_SEED)
    layer_rows = [r for r in m["rows"] if r["layers"] != "all layers"]
    assert [r["layers"] for r in layer_rows] == [L for L in d.layers if want[L]]
    for r in m["rows"]:
        for s, ds in sets.items():
            assert r["baseline"][s] == ab.accuracy(spurious, ds.images, ds.labels, None)
            assert r["ablated"][s] == ab.accuracy(spurious, ds.images, ds.labels, r["units"])
            assert r["control"][s]["draws"] == [ab.accuracy(spurious, ds.images, ds.labels, u)
                                                 for u in r["control_units"]]
    if len(layer_rows) > 1:
        assert m["rows"][-1]["layers"] == "all layers"
        assert m["rows"][-1]["n_units"] == sum(r["n_units"] for r in layer_rows)
    md = cli.story_markdown(story)
    assert md.count("| Classroom CNN (shapes, Clever Hans) |") == len(m["rows"])


def _row(layer, base, abl, mean, std):
    return dict(layers=layer, n_units=3, baseline={"normal": 0.9, "cue-flipped": base},
                ablated={"normal": 0.8, "cue-flipped": abl},
                control={"normal": dict(mean=0.9, std=0.0), "cue-flipped": dict(mean=mean, std=std)})


def test_summary_is_read_off_the_figures():
    story = {"models": {"a": dict(name="A", iou_threshold=0.04, rows=[_row("l1", 0.8, 0.85, 0.6, 0.05),
                                                                       _row("l2", 0.8, 0.95, 0.7, 0.05)]),
                        "b": dict(name="B", iou_threshold=0.04, rows=[_row("l1", 0.8, 0.83, 0.8, 0.05)]),
                        "c": dict(name="C", iou_threshold=0.04, rows=[_row("l1", 0.9, 0.85, 0.8, 0.05)]),
                        "d": dict(name="D", iou_threshold=0.04, rows=[])}}
    s = cli.story_summary(story)
    assert "A: zeroing the 3 tag detectors of l2 takes its cue-flipped accuracy from 80.0 % to 95.0 %" in s
    assert "70.0 % ± 5.0 (better than intact and than random units" in s
    assert "B: zeroing the 3 tag detectors of l1" in s and "within the spread of random units" in s
    assert "C: zeroing" in s and "no better than intact" in s
    assert "D: no tag detector" in s


@pytest.mark.slow
def test_shipped_story_reproduces(spurious):
    """The row the walk-through quotes (the Clever Hans model's best tag-detector layer) is recomputed from
    scratch: the same detectors from a fresh dissection, the same accuracies and random draws."""
    story = cli.load_story()
    assert story is not None, "models/classroom/weights/ablation_story.json is missing"
    m = story["models"]["classroom_spurious"]
    row = max((r for r in m["rows"] if r["control"]), key=lambda r: r["ablated"]["cue-flipped"])
    layer = row["layers"]
    d = dis.dissect(spurious, dis.classroom_dissection_data(n=story["n_images"]), [layer])
    assert [u for u, _ in m["detectors"][layer]] == sorted(d.layers[layer].detectors("tag"))
    rep = ab.ablation_report(spurious, cli.classroom_sets("classroom_spurious", story["n_images"], story["seed"]),
                             row["units"], random_draws=story["draws"], seed=row["seed"])
    assert rep.baseline == row["baseline"] and rep.ablated == row["ablated"]
    assert rep.control_units == row["control_units"]
    assert {k: v.draws for k, v in rep.control.items()} == {k: v["draws"] for k, v in row["control"].items()}
