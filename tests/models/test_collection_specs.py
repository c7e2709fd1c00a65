"""Collections named by a path (folder, zip, list file, tar shard set): the listing holds exactly the image
files written, in the documented order; bad images are skipped and named; a loader built without the listing
reads the same pixels; a worker's loader opens only the tar shards its items name."""
from __future__ import annotations

import io
import os
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from models import collections as C


def _png(seed: int, fmt: str = "PNG") -> tuple[bytes, np.ndarray]:
    arr = np.random.default_rng(seed).integers(0, 256, (20 + seed, 24, 3), dtype=np.uint8)
    b = io.BytesIO()
    Image.fromarray(arr).save(b, fmt)
    return b.getvalue(), arr


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def test_expand_braces():
    assert C.expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert C.expand_braces("{a,b}-{8..10}.tar") == ["a-8.tar", "a-9.tar", "a-10.tar", "b-8.tar", "b-9.tar",
                                                    "b-10.tar"]
    assert C.expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(C.CollectionError):
        C.expand_braces("s-{3..1}.tar")


@pytest.fixture
def tars(tmp_path):
    """Three shards of 3 members each (jpg/png + a non-image .cls sidecar), one member not an image."""
    truth = {}
    for s in range(3):
        with tarfile.open(tmp_path / f"shard-{s:03d}.tar", "w") as tf:
            for k in range(3):
                data, arr = _png(10 * s + k)
                if (s, k) == (1, 1):
                    data = b"broken bytes"
                name = f"{s}{k}.png"
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
                side = tarfile.TarInfo(f"{s}{k}.cls")
                side.size = 1
                tf.addfile(side, io.BytesIO(b"3"))
                truth[f"shard-{s:03d}.tar/{name}"] = None if (s, k) == (1, 1) else arr
    return tmp_path, truth


def test_tar_shard_set_listing_order_skips_and_pixels(tars):
    folder, truth = tars
    spec = C.collection_spec(os.path.join(folder, "shard-{000..002}.tar"))
    assert spec.kind == "tar"
    col = spec.open()
    assert [n for _, n in col.items] == list(truth)  # shard order, then member order
    assert [i for i, _ in col.items] == list(range(9))
    assert sorted(n for n, _ in col.skipped) == sorted(f"shard-{s:03d}.tar/{s}{k}.cls" for s in range(3)
                                                       for k in range(3))
    col.skipped.clear()
    got = {name: _pixels(img) for _, name, img in col}
    assert [n for n, _ in col.skipped] == ["shard-001.tar/11.png"]
    for name, arr in truth.items():
        if arr is not None:
            np.testing.assert_array_equal(got[name], arr)


def test_tar_worker_opens_only_its_shards(tars, monkeypatch):
    folder, truth = tars
    spec = C.collection_spec(os.path.join(folder, "shard-{000..002}.tar"))
    items = spec.open().items[6:9]  # all in shard-002
    opened = []
    real = C._tar_members
    monkeypatch.setattr(C, "_tar_members", lambda p: opened.append(os.path.basename(p)) or real(p))
    sub = spec.subset(items)
    assert [n for _, n, _ in sub] == [n for _, n in items]
    assert opened == ["shard-002.tar"]


def test_missing_tar_shard_is_named(tmp_path):
    with pytest.raises(C.CollectionError, match="shard-001.tar"):
        C.collection_spec(os.path.join(tmp_path, "shard-{000..001}.tar"))


def test_list_file_relative_and_absolute_paths(tmp_path):
    (tmp_path / "d").mkdir()
    a, arr_a = _png(1)
    b, arr_b = _png(2, "JPEG")
    (tmp_path / "d" / "a.png").write_bytes(a)
    other = tmp_path / "b.jpg"
    other.write_bytes(b)
    (tmp_path / "gone.png").write_bytes(b"x")
    lst = tmp_path / "d" / "list.txt"
    lst.write_text(f"# my images\na.png\n\n{other}\n../gone.png\n")
    col = C.open_collection(lst)
    assert [n for _, n in col.items] == ["a.png", str(other), "../gone.png"]  # file order
    got = {n: _pixels(img) for _, n, img in col}
    np.testing.assert_array_equal(got["a.png"], arr_a)
    # JPEG is lossy, but its decoded pixels are what the loader must return: the file decoded directly
    np.testing.assert_array_equal(got[str(other)], _pixels(Image.open(io.BytesIO(b))))
    assert [n for n, _ in col.skipped] == ["../gone.png"]


def test_list_file_with_duplicates_is_refused(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("a.png\na.png\n")
    with pytest.raises(C.CollectionError, match="twice"):
        C.open_collection(lst)


def test_zip_file_on_disk_and_folder(tmp_path):
    buf = io.BytesIO()
    arrs = {}
    with zipfile.ZipFile(buf, "w") as zf:
        for k in range(3):
            data, arrs[f"x/{k}.png"] = _png(k)
            zf.writestr(f"x/{k}.png", data)
        zf.writestr("../evil.png", _png(9)[0])
    zpath = tmp_path / "c.zip"
    zpath.write_bytes(buf.getvalue())
    spec = C.collection_spec(zpath)
    col = spec.open()
    assert spec.kind == "zip" and [n for _, n in col.items] == sorted(arrs)
    assert [n for n, _ in col.skipped] == ["../evil.png"]
    sub = spec.subset(col.items[1:])  # a fresh loader, as on a worker
    for _, n, img in sub:
        np.testing.assert_array_equal(_pixels(img), arrs[n])
    folder = tmp_path / "f"
    (folder / "s").mkdir(parents=True)
    (folder / "s" / "b.png").write_bytes(_png(5)[0])
    (folder / "a.png").write_bytes(_png(6)[0])
    fspec = C.collection_spec(folder)
    assert fspec.kind == "folder" and [n for _, n in fspec.open().items] == ["a.png", "s/b.png"]
    with pytest.raises(OSError):
        fspec.loader()("nothere.png")
    with pytest.raises(C.ImageError):
        fspec.loader()("../f/../c.zip")


def test_fingerprint_changes_with_content(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(1)[0])
    spec = C.collection_spec(tmp_path)
    f1 = C.fingerprint(spec, spec.open())
    assert C.fingerprint(spec, spec.open()) == f1
    (tmp_path / "a.png").write_bytes(_png(2)[0])
    assert C.fingerprint(spec, spec.open()) != f1


def test_unknown_path_kinds_are_named(tmp_path):
    with pytest.raises(C.CollectionError, match="no such"):
        C.collection_spec(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(C.CollectionError, match="not a folder"):
        C.collection_spec(tmp_path / "x.csv")
