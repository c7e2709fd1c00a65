"""The Ray engine on a real local Ray (2 CPUs, 127.0.0.1): a sharded scan equals the in-process scan bit for bit
(same images, same ties, same skipped files); a worker process killed mid-scan is restarted, its shard retried,
and the result is still exact; a stopped run resumes from its parts folder to the same result; a batch
explanation equals a plain loop of ``explain`` over the images; the CLI runs both."""
from __future__ import annotations

import csv
import io
import os
import signal
import sys
import tarfile
import time

import numpy as np
import pytest
import ray
import ray.cloudpickle
import torch
from PIL import Image

from interpret.attribution.registry import explain
from interpret.cli.main import main as cli_main
from interpret.core.errors import InputError
from interpret.scale import ray_engine as RE
from interpret.scale.reducers import TopPatchesReducer
from interpret.units import top_patches as tp
from models.collections import collection_spec
from models.registry import load_model

pytestmark = pytest.mark.slow
MODEL = "classroom_clean"
LAYER = "features.3"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module, shut down afterwards; workers run at 1 torch thread, as the oracle does."""
    assert not ray.is_initialized()
    assert RE.connect(num_cpus=2)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the slow test reducer, sent by value
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def handle():
    return load_model(MODEL)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _image(rng, k: int) -> bytes:
    # repeated tiles: equal activations at several units and images, so tie-breaking is exercised
    tile = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    arr = np.tile(tile, (6, 6, 1)) if k % 5 == 0 else rng.integers(0, 256, (48 + k % 7, 52, 3), dtype=np.uint8)
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "PNG")
    return b.getvalue()


@pytest.fixture(scope="module")
def tars(tmp_path_factory):
    """A WebDataset-style shard set: 3 tars × 12 images (one undecodable), plus two identical images."""
    d = tmp_path_factory.mktemp("tars")
    rng = np.random.default_rng(0)
    dup = _image(rng, 1)
    for s in range(3):
        with tarfile.open(d / f"shard-{s:03d}.tar", "w") as tf:
            for k in range(12):
                data = b"not an image" if (s, k) == (1, 4) else dup if k == 7 else _image(rng, 12 * s + k)
                ti = tarfile.TarInfo(f"{s:02d}{k:03d}.png")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return str(d / "shard-{000..002}.tar")


def _same(a: tp.TopPatches, b: tp.TopPatches) -> None:
    assert a.records() == b.records()
    assert a.n_images == b.n_images and a.skipped == b.skipped and a.rf == b.rf
    for c in a.channels:
        for p, q in zip(a.patches[c], b.patches[c]):
            assert p.patch.dtype == q.patch.dtype and np.array_equal(p.patch, q.patch)


def _reference(handle, pattern, reducer) -> tp.TopPatches:
    spec = collection_spec(pattern)
    return tp.scan(handle, spec.open(), reducer.layer, reducer.channels, k=reducer.k, per_image=reducer.per_image,
                   batch_size=reducer.batch_size, call_index=reducer.call_index)


REDUCER = TopPatchesReducer(LAYER, (0, 1, 5, 7), k=6, per_image=2, batch_size=4)


def test_sharded_ray_scan_equals_in_process_scan(handle, tars, one_thread):
    ref = _reference(handle, tars, REDUCER)
    assert ref.n_images == 35 and [n for n, _ in ref.skipped] == ["shard-001.tar/01004.png"]
    seen = []
    res, info = RE.run(REDUCER, MODEL, collection_spec(tars), workers=2, n_shards=4, progress=seen.append)
    _same(ref, res)
    assert (info.shards, info.workers, info.computed, info.reused) == (4, 2, 4, 0)
    assert not res.cancelled
    assert seen[-1].done == seen[-1].total == 36 and seen[-1].shards_done == 4
    dones = [p.done for p in seen]
    assert dones == sorted(dones)  # progress never runs backwards without a fault


class SlowTopPatches(TopPatchesReducer):
    """The top-k reducer, 0.15 s slower per batch: wide windows for killing a worker or stopping mid-scan."""

    def run(self, handle, ctx, images, progress=None, cancel=None):
        def slow(done, total):
            time.sleep(0.15)
            if progress is not None:
                progress(done, total)
        return super().run(handle, ctx, images, slow, cancel)


SLOW = SlowTopPatches(LAYER, (0, 1, 5, 7), k=6, per_image=2, batch_size=4)


def test_killed_worker_is_restarted_and_the_result_is_exact(handle, tars, one_thread):
    ref = _reference(handle, tars, SLOW)
    killed = []

    def progress(p: RE.Progress):
        for shard, pid in p.running.items():
            if not killed and pid != os.getpid():
                os.kill(pid, signal.SIGKILL)  # a real process death, mid-shard
                killed.append((shard, pid))

    res, info = RE.run(SLOW, MODEL, collection_spec(tars), workers=2, n_shards=3, progress=progress)
    assert killed
    _same(ref, res)
    assert info.retried >= 1  # the killed shard was finished by another worker process


def test_stopped_scan_resumes_from_its_parts(handle, tars, tmp_path, one_thread):
    ref = _reference(handle, tars, SLOW)
    parts = tmp_path / "parts"
    arrived = []
    res1, info1 = RE.run(SLOW, MODEL, collection_spec(tars), workers=2, n_shards=6, parts_dir=parts,
                         on_part=lambda i, p: arrived.append(i), cancel=lambda: bool(arrived))
    on_disk = sorted(p.name for p in parts.glob("part-*.npz"))
    assert res1.cancelled and info1.cancelled
    assert 1 <= len(on_disk) < 6 and not list(parts.glob("*.tmp*"))
    res2, info2 = RE.run(SLOW, MODEL, collection_spec(tars), workers=2, n_shards=6, parts_dir=parts)
    assert info2.reused == len(on_disk) and info2.computed == 6 - len(on_disk)
    _same(ref, res2)
    assert not res2.cancelled
    # other arguments, same folder: refused, named
    other = SlowTopPatches(LAYER, (0, 1), k=6, per_image=2, batch_size=4)
    with pytest.raises(InputError, match="different run"):
        RE.run(other, MODEL, collection_spec(tars), workers=2, n_shards=6, parts_dir=parts)


def test_unknown_model_is_a_message(tars):
    with pytest.raises(InputError, match="unknown model"):
        RE.run(REDUCER, "no_such_model", collection_spec(tars), workers=1, n_shards=1)


def test_cli_explain_on_ray_equals_a_plain_loop(handle, tars, tmp_path, one_thread):
    out = tmp_path / "maps"
    folder = tmp_path / "imgs"
    folder.mkdir()
    spec = collection_spec(tars)
    col = spec.open()
    chosen = col.items[10:17]  # includes the undecodable member
    for _, name, img in spec.subset(chosen):
        img.save(folder / name.replace("/", "_"))
    (folder / "broken.png").write_bytes(b"no")
    rc = cli_main(["explain", "--images", str(folder), "--model", MODEL, "--method", "gradient", "--out", str(out),
                   "--engine", "ray", "--workers", "2", "--shards", "3", "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "index.csv")))
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["image"] for r in rows if r["status"] != "ok"] == ["broken.png"]
    names = sorted(p.name for p in folder.iterdir() if p.name != "broken.png")
    assert [r["image"] for r in ok] == names
    for r in ok:
        img = Image.open(folder / r["image"]).convert("RGB")
        x = handle.input_tensor(img)
        probs = handle.predict(x)
        pred = int(np.argmax(probs))
        with torch.set_grad_enabled(True):
            attr = explain(handle, x, pred, "gradient")
        assert int(r["predicted"]) == pred == int(r["target"])
        got = np.load(out / r["map"])
        assert got.dtype == attr.map.dtype and np.array_equal(got, attr.map)
        assert (out / r["overlay"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / r["settings"]).exists()
    # the in-process engine writes the same files
    local = tmp_path / "local"
    assert cli_main(["explain", "--images", str(folder), "--model", MODEL, "--method", "gradient", "--out",
                     str(local), "--quiet"]) == 0
    assert (local / "index.csv").read_text() == (out / "index.csv").read_text()
    for r in ok:
        assert np.array_equal(np.load(local / r["map"]), np.load(out / r["map"]))


def test_cli_top_patches_on_ray_equals_local_cli(tars, tmp_path, one_thread):  # workers: 1 thread too
    common = ["top-patches", "scan", "--model", MODEL, "--layer", LAYER, "--channels", "0-3", "--images", tars,
              "--k", "3", "--batch-size", "4", "--quiet"]
    assert cli_main([*common, "--out", str(tmp_path / "local.npz")]) == 0
    assert cli_main([*common, "--out", str(tmp_path / "ray.npz"), "--engine", "ray", "--workers", "2",
                     "--threads-per-worker", "1", "--shards", "3"]) == 0
    local, dist = tp.load(tmp_path / "local.npz"), tp.load(tmp_path / "ray.npz")
    assert local.records() == dist.records() and local.skipped == dist.skipped
    assert len(list((tmp_path / "ray.npz.parts").glob("part-*.npz"))) == 3


def _listening(path: str) -> dict[int, str]:
    """socket inode → local address of the LISTEN sockets in /proc/net/tcp or tcp6."""
    out = {}
    for line in open(path).read().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A":
            out[int(f[9])] = f[1].split(":")[0]
    return out


def _descendants(root: int) -> set[int]:
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux /proc")
def test_local_ray_listens_on_loopback_only(tars):
    RE.run(REDUCER, MODEL, collection_spec(tars), workers=2, n_shards=2)  # the workers are up
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    listen = {**_listening("/proc/net/tcp"), **(_listening("/proc/net/tcp6") if os.path.exists("/proc/net/tcp6")
                                               else {})}
    mine = set()
    for pid in _descendants(os.getpid()) | {os.getpid()}:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    mine.add(int(link[8:-1]))
        except OSError:
            pass
    ours = {inode: addr for inode, addr in listen.items() if inode in mine}
    assert len(ours) >= 4  # GCS, raylet, workers: the check sees Ray's servers
    assert all(addr in loopback for addr in ours.values()), ours
