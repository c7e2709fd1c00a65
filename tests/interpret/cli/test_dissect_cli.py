"""``python -m interpret dissect``: the table and JSON report what ``dissect`` computed (the same units, concepts,
IoUs and counts); bad input is a message and exit status 2. On a real local Ray (2 CPUs, 127.0.0.1) the two-phase
``DissectionReducer`` runs give exactly the in-process dissection, also through the CLI's ``--engine ray``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import ray
import torch

from interpret.cli.main import main as cli_main
from interpret.scale import ray_engine as RE
from interpret.scale.dissection_reducer import DissectionReducer, dissect_on_ray, write_folder
from interpret.units import dissection as DS
from models.registry import load_model

N, SEED = 24, 11
LAYERS = ["features.9", "features.16"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def local():
    """The in-process dissection of the Clever Hans model that every check compares with."""
    h = load_model("classroom_spurious")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return DS.dissect(h, DS.classroom_dissection_data("test", N, SEED, spurious=True), LAYERS, batch_size=8)
    finally:
        torch.set_num_threads(n)


def _args(*extra: str) -> list[str]:
    return ["dissect", "--model", "classroom_spurious", "--layers", ",".join(LAYERS), "--n", str(N), "--seed",
            str(SEED), "--batch-size", "8", "--quiet", *extra]


def test_json_on_stdout_matches_dissect(local, capsys):
    assert cli_main(_args("--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_images"] == N and out["model"] == "classroom_spurious" and "Clever Hans" in out["source"]
    for name, ld in local.layers.items():
        got = out["layers"][name]
        assert got["counts"] == ld.counts()
        assert [(r["unit"], r["concept"]) for r in got["ranking"]] == [(u, c) for u, c, _ in ld.best()]
        assert np.allclose([r["iou"] for r in got["ranking"]], [v for _, _, v in ld.best()], rtol=0, atol=5e-7)
        assert [r["threshold"] for r in got["ranking"]] == [float(ld.thresholds[u]) for u, _, _ in ld.best()]


def test_table_lists_units_by_iou_and_counts(local, tmp_path, capsys):
    path = tmp_path / "d.json"
    assert cli_main(_args("--top", "3", "--json", str(path))) == 0
    text = capsys.readouterr().out
    assert json.loads(path.read_text())["layers"]["features.9"]["ranking"][0]["unit"] == \
        local.layers["features.9"].best()[0][0]
    for name, ld in local.layers.items():
        block = text.split(f"{name}:")[1]
        rows = [ln.split() for ln in block.splitlines()[2:5]]
        assert [(int(r[0]), r[1]) for r in rows] == [(u, c) for u, c, _ in ld.best()[:3]]
        counts = ", ".join(f"{c} {n}" for c, n in ld.counts().items() if n) or "none"
        assert f"detectors per concept: {counts}" in block


def test_errors_are_messages(capsys):
    assert cli_main(["dissect", "--model", "efficientnet_lite0", "--quiet"]) == 2
    assert "no concept masks" in capsys.readouterr().err
    assert cli_main(["dissect", "--model", "classroom_clean", "--layers", "fc", "--n", "4", "--quiet"]) == 2
    assert "not a spatial map" in capsys.readouterr().err
    assert cli_main(["dissect", "--model", "classroom_clean", "--layers", "nope", "--n", "4", "--quiet"]) == 2
    assert "no layer named" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Ray

@pytest.fixture(scope="module")
def local_ray():
    assert not ray.is_initialized()
    assert RE.connect(num_cpus=2)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_two_phase_run_equals_local(local, local_ray, tmp_path):
    data = DS.ClassroomConcepts("test", N, SEED, spurious=True)
    seen = []
    d, infos = dissect_on_ray("classroom_spurious", data, LAYERS, batch_size=8, n_shards=3, workers=2,
                              folder=tmp_path / "png", progress=lambda f, t: seen.append(f))
    assert [i.shards for i in infos] == [3, 3] and d.n_images == N and not d.cancelled
    for name, ld in local.layers.items():
        r = d.layers[name]
        assert np.array_equal(r.thresholds, ld.thresholds)
        assert np.array_equal(r.intersections, ld.intersections) and np.array_equal(r.unions, ld.unions)
        assert r.best() == ld.best()
    assert seen and max(seen) <= 1.0 and seen == sorted(seen)


@pytest.mark.slow
def test_ray_worker_refuses_a_folder_that_is_not_the_split(local_ray, tmp_path):
    from interpret.core.errors import InputError

    data = DS.ClassroomConcepts("test", 8, SEED)
    spec = write_folder(DS.ClassroomConcepts("test", 8, SEED + 1), tmp_path / "other")
    with pytest.raises(InputError, match="is not image"):
        RE.run(DissectionReducer(data, ("features.2",), batch_size=8), "classroom_spurious", spec, workers=1)


@pytest.mark.slow
def test_cli_engine_ray_equals_local(local, local_ray, capsys):
    assert cli_main(_args("--json", "--engine", "ray", "--workers", "2", "--shards", "2")) == 0
    out = json.loads(capsys.readouterr().out)
    for name, ld in local.layers.items():
        assert out["layers"][name]["counts"] == ld.counts()
        assert [r["threshold"] for r in out["layers"][name]["ranking"]] == \
            [float(ld.thresholds[u]) for u, _, _ in ld.best()]
