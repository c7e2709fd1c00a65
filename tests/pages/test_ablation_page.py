"""AppTest of the unit-ablation page: hand-picked units and "detectors of a concept" on the classroom models, and
the prediction-only view on an ImageNet model. The numbers shown are checked against the library called directly
and, for the top 5, against a deep copy of the network whose weights producing those units are zeroed."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.apptest_util import navigation_only

ROOT = Path(__file__).resolve().parents[2]
SPURIOUS = "Classroom CNN (shapes, Clever Hans)"


@pytest.fixture(autouse=True)
def _nav():
    with navigation_only():
        yield


def _page(model: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page(str(ROOT / "pages" / "ablation.py")).run()
    if model:
        at.selectbox(key="model_select").select(model).run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _run(at: AppTest) -> None:
    next(b for b in at.button if b.label == "Run").click().run()
    _ok(at)


def _pick_layer(at: AppTest, key: str, layer: str) -> None:
    sel = at.selectbox(key=key)
    sel.select(next(o for o in sel.options if o.startswith(layer + " "))).run()


def _top5(at: AppTest, i: int) -> list[tuple[str, float]]:
    df = [d.value for d in at.dataframe if list(d.value.columns) == ["class", "probability"]][i]
    return list(zip(df["class"], df["probability"]))


def test_hand_picked_units_on_the_clever_hans_model():
    from interpret.cli.ablate import STORY_SEED, classroom_sets
    from interpret.evaluation import ablation as ab
    from models.classroom import load

    at = _page(SPURIOUS)
    _pick_layer(at, "abl_layer_classroom_spurious", "features.23")
    at.multiselect(key="abl_units_classroom_spurious_features.23").set_value([3, 16, 88])
    at.number_input(key="abl_n").set_value(60)
    at.number_input(key="abl_draws").set_value(2)
    _run(at)
    h = load("classroom_spurious")
    units = {"features.23": [3, 16, 88]}
    want = ab.ablation_report(h, classroom_sets("classroom_spurious", 60, STORY_SEED), units, random_draws=2, seed=0)
    table = next(d.value for d in at.dataframe if "intact" in d.value.columns)
    assert list(table["data set"]) == ["normal", "cue-flipped"]
    assert list(table["intact"]) == [f"{100 * want.baseline[s]:.1f} %" for s in ("normal", "cue-flipped")]
    assert list(table["chosen units zeroed"]) == [f"{100 * want.ablated[s]:.1f} %" for s in ("normal", "cue-flipped")]
    assert list(table["random units zeroed (mean ± std)"]) == [
        f"{100 * want.control[s].mean:.1f} % ± {100 * want.control[s].std:.1f}" for s in ("normal", "cue-flipped")]
    assert at.subheader[0].value.startswith("3 units zeroed: features.23 [3, 16, 88]")
    assert at.get("plotly_chart")
    # top 5 of the current image: intact = the handle's own prediction; zeroed = a copy with BN features.22's scale
    # and shift zeroed for those channels (ReLU(0) = 0), to the 4 decimals shown
    img = at.session_state["image"]
    assert [c for c, _ in _top5(at, 0)] == [lab for _, lab, _ in h.topk(img, 5)]
    net = copy.deepcopy(h.net)
    with torch.no_grad():
        net.features[22].weight[units["features.23"]] = 0
        net.features[22].bias[units["features.23"]] = 0
        p = torch.softmax(net(h.input_tensor(img)).double(), 1)[0].numpy()
    order = np.argsort(-p)[:5]
    after = _top5(at, 1)
    assert [c for c, _ in after] == [h.labels[i] for i in order]
    assert [q for _, q in after] == pytest.approx([p[i] for i in order], abs=5e-5 + 1e-6)


def test_no_unit_chosen_is_a_warning():
    at = _page(SPURIOUS)
    at.multiselect(key=next(m.key for m in at.multiselect if m.key.startswith("abl_units_"))).set_value([])
    _run(at)
    assert any("at least one unit" in w.value for w in at.warning)


def test_detectors_of_a_concept_come_from_the_dissection():
    from interpret.units import dissection as dis
    from models.classroom import load

    at = _page(SPURIOUS)
    at.radio(key="abl_mode").set_value("concept").run()
    at.multiselect(key="abl_layers_classroom_spurious").set_value(["features.23"]).run()
    at.number_input(key="abl_n").set_value(60)
    at.number_input(key="abl_draws").set_value(1)
    _run(at)
    d = dis.dissect(load("classroom_spurious"), dis.classroom_dissection_data(n=60), ["features.23"])
    want = sorted(d.layers["features.23"].detectors("tag", 0.04))
    assert want, "the Clever Hans model has tag detectors in its last layer"
    assert at.subheader[0].value == f"{len(want)} units zeroed: features.23 {want}"
    # a threshold no unit reaches: a warning, no error
    at.number_input(key="abl_min_iou").set_value(1.0)
    _run(at)
    assert any("No unit of features.23 detects 'tag'" in w.value for w in at.warning)


def test_imagenet_model_shows_the_prediction_change_only():
    at = _page()   # the default model, EfficientNet-Lite0
    assert at.radio(key="abl_mode").options == ["Pick units by hand"]
    _run(at)
    assert not [d for d in at.dataframe if "intact" in d.value.columns]
    from models import default

    h = default.load()
    img = at.session_state["image"]
    assert [c for c, _ in _top5(at, 0)] == [lab for _, lab, _ in h.topk(img, 5)]
    assert any("prediction change" in c.value for c in at.caption)
