"""Top-k patch scan: streaming == brute force over all stored activations; shards merged == one run; boxes are
the units' clipped receptive fields; collections from folders and zips are safe and count bad files."""
from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from interpret.units import top_patches as tp
from interpret.cli import top_patches as cli
from interpret.plots import units as UP
from interpret.core.layers import capture
from interpret.core.hooks import count_hooks
from interpret.units.receptive_field import rf_table, unit_box
from models.collections import from_zip
from models.handle import ModelHandle, Preprocess


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5, 1, 2)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, 1, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.relu(self.conv2(x))  # relu called twice: default = last call
        return self.fc(x.mean((2, 3)))


from conftest import handle_on  # noqa: E402


def _handle(size: int) -> ModelHandle:
    torch.manual_seed(0)
    return ModelHandle(key="tiny", name="tiny", net=Tiny().eval(),
                       preprocess=Preprocess(resize=size, crop=size, mean=(0.5,) * 3, std=(0.25,) * 3),
                       labels=["a", "b", "c"], source="test")


@pytest.fixture(scope="module")
def handle():
    return _handle(32)


def _photos(n: int = 22, seed: int = 0) -> list[tuple[str, Image.Image]]:
    rng = np.random.default_rng(seed)
    srcs = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    out = []
    for k in range(n):
        src = srcs[k % 4]
        s = int(rng.integers(40, 120))
        y, x = int(rng.integers(0, src.shape[0] - s)), int(rng.integers(0, src.shape[1] - s))
        out.append((f"img_{k:02d}.png", Image.fromarray(src[y:y + s, x:x + s])))
    if n > 16:
        out[7] = ("img_07.png", out[3][1].copy())  # exact duplicates: equal values, tie broken by image index
        out[15] = ("img_15.png", Image.new("RGB", (50, 50), (128, 128, 128)))
        out[16] = ("img_16.png", Image.new("RGB", (50, 50), (128, 128, 128)))  # flat: equal values across units
    return out


def brute_force(handle, photos, layer, channels, k, per_image, batch_size, call_index=-1):
    """Store every activation of every image, then sort: the obviously-correct oracle."""
    views = [np.asarray(handle.preprocess.view(im)) for _, im in photos]
    allacts = []
    for b in range(0, len(photos), batch_size):
        x = torch.stack([handle.preprocess(im) for _, im in photos[b:b + batch_size]])
        with capture(handle, layer, call_index) as cap:
            cap.run(x)
        allacts.append(cap.output)
    acts = torch.cat(allacts).cpu().numpy()  # (N, C, h, w)
    table = rf_table(handle)
    out = {}
    for c in channels:
        cands = []
        for n in range(len(photos)):
            flat = acts[n, c].ravel()
            order = sorted(range(flat.size), key=lambda p: (-flat[p], p))[:per_image]
            cands += [(-float(flat[p]), n, divmod(p, acts.shape[3])) for p in order]
        cands.sort()
        out[c] = [(-v, n, u, unit_box(table, layer, u), views[n]) for v, n, u in cands[:k]]
    return out


@pytest.mark.parametrize("layer,per_image,batch_size,size", [
    ("conv2", 1, 4, 32), ("relu", 3, 5, 32), ("conv1", 2, 16, 32),
    ("conv2", 2, 4, 16),  # field ≥ ¼ image: whole images shared between entries instead of crops
])
def test_streaming_equals_brute_force(layer, per_image, batch_size, size, device):
    """On each device against the brute force on the same device (the same batches: the same activations)."""
    handle = handle_on(_handle(size), device)
    photos = _photos()
    channels = [0, 3, 5]
    before = count_hooks(handle.net)
    res = tp.scan(handle, photos, layer, channels, k=7, per_image=per_image, batch_size=batch_size)
    assert count_hooks(handle.net) == before
    want = brute_force(handle, photos, layer, channels, 7, per_image, batch_size)
    table = rf_table(handle)
    assert res.n_images == len(photos) and not res.cancelled
    for c in channels:
        got = res.patches[c]
        assert len(got) == 7
        assert [(p.value, p.image_index, p.unit) for p in got] == [(v, n, u) for v, n, u, _, _ in want[c]]
        for p, (_, n, u, box, view) in zip(got, want[c]):
            assert p.box == box  # the unit's receptive field, clipped to the image
            y0, x0, y1, x1 = unit_box(table, layer, u, clip=False)
            assert p.box == (max(y0, 0), max(x0, 0), min(y1, size), min(x1, size))
            np.testing.assert_array_equal(p.patch, view[box[0]:box[2], box[1]:box[3]])
            assert p.image_name == photos[n][0]


def test_ties_are_deterministic(handle):
    flat = Image.new("RGB", (40, 40), (90, 90, 90))
    res = tp.scan(handle, [(f"n{i}", flat) for i in range(3)], "conv2", [0], k=5, per_image=3, batch_size=1)
    got = res.patches[0]
    # identical images give identical values: equal values are ranked by image index, then by unit index
    keys = [(-p.value, p.image_index, p.unit) for p in got]
    assert keys == sorted(keys)
    assert [p.image_index for p in got[:3]] == [0, 1, 2] and len({p.value for p in got[:3]}) == 1
    a = brute_force(handle, [(f"n{i}", flat) for i in range(3)], "conv2", [0], 5, 3, 1)[0]
    assert [(p.value, p.image_index, p.unit) for p in got] == [(v, n, u) for v, n, u, _, _ in a]


def _write_folder(tmp_path, photos):
    for name, im in photos:
        im.save(tmp_path / name)
    (tmp_path / "img_05.png").write_bytes(b"not really a png")  # replaced by garbage: skipped and counted
    (tmp_path / "notes.txt").write_text("ignored")


def test_shards_merge_to_one_run(handle, tmp_path):
    photos = _photos()
    _write_folder(tmp_path, photos)
    kw = dict(layer="conv2", channels=[0, 1, 7], k=5, per_image=2, batch_size=4)
    one = cli.run_scan(handle, str(tmp_path), **kw)
    assert one.n_images == len(photos) - 1 and [s[0] for s in one.skipped] == ["img_05.png"]
    parts = []
    for i in range(3):
        part = cli.run_scan(handle, str(tmp_path), shard=(i, 3), **kw)
        tp.save(part, tmp_path / f"part{i}.npz")
        parts.append(tp.load(tmp_path / f"part{i}.npz"))
    assert sum(p.n_images for p in parts) == one.n_images
    merged = tp.merge(parts)
    assert merged.records() == one.records()
    for c in one.channels:
        for a, b in zip(merged.patches[c], one.patches[c]):
            np.testing.assert_array_equal(a.patch, b.patch)
    # and via the command line (merge step), round-tripping files
    assert cli.main(["merge", *[str(tmp_path / f"part{i}.npz") for i in range(3)], "--out",
                     str(tmp_path / "m.npz")]) == 0
    assert tp.load(tmp_path / "m.npz").records() == one.records()
    with pytest.raises(ValueError, match="overlap"):
        tp.merge([parts[0], parts[0]])


def test_progress_and_cancel(handle):
    photos = _photos(12)
    seen = []
    tp.scan(handle, photos, "conv2", [0], k=3, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 12), (8, 12), (12, 12)]
    stop = threading.Event()
    res = tp.scan(handle, photos, "conv2", [0], k=3, batch_size=4, progress=lambda d, t: stop.set(), cancel=stop)
    assert res.cancelled and res.n_images == 4
    res = tp.scan(handle, photos, "conv2", [0], k=3, batch_size=4, cancel=lambda: True)
    assert res.cancelled and res.n_images == 4


def test_zip_collection_is_safe(handle):
    buf = io.BytesIO()
    good = _photos(3)
    with zipfile.ZipFile(buf, "w") as z:
        for name, im in good:
            b = io.BytesIO()
            im.save(b, "PNG")
            z.writestr(f"dir/{name}", b.getvalue())
        z.writestr("../evil.png", b.getvalue())
        z.writestr("/abs.png", b.getvalue())
        z.writestr("__MACOSX/dir/._img_00.png", b"junk")
        z.writestr("readme.txt", b"text")
        z.writestr("bad.jpg", b"\xff\xd8\xff garbage")
        z.writestr("huge.png", b"0" * 2000)
    col = from_zip(buf.getvalue())
    assert [n for _, n in col.items] == ["bad.jpg", "dir/img_00.png", "dir/img_01.png", "dir/img_02.png", "huge.png"]
    assert {s[0] for s in col.skipped} == {"../evil.png", "/abs.png", "__MACOSX/dir/._img_00.png", "readme.txt"}
    res = tp.scan(handle, col, "conv2", [0], k=2)
    assert res.n_images == 3 and {s[0] for s in res.skipped} >= {"bad.jpg", "huge.png"}
    small = from_zip(buf.getvalue(), max_file_bytes=1000)
    assert "huge.png" in {s[0] for s in small.skipped}
    with pytest.raises(ValueError, match="zip"):
        from_zip(b"not a zip")


def test_patch_figure(handle):
    res = tp.scan(handle, _photos(8), "conv2", [2, 4], k=4)
    fig = UP.top_patches_figure(res, 2, images=[tp.padded_patch(p, res.rf, res.input_size) for p in res.patches[2]])
    assert len(fig.data) == 4
    padded = tp.padded_patch(res.patches[2][0], res.rf, res.input_size)
    assert padded.shape == (res.rf[0][0], res.rf[0][1], 3)


@pytest.mark.slow
def test_cli_on_default_model(tmp_path):
    """``python -m interpret top-patches scan/merge`` end to end on the default model: 2 shards == one run."""
    from interpret.__main__ import main as interpret_main

    for name, im in _photos(6):
        im.save(tmp_path / name)
    base = ["top-patches", "scan", "--model", "efficientnet_lite0", "--layer", "_blocks.1", "--channels", "0-3,7",
            "--k", "3", "--batch-size", "2", "--folder", str(tmp_path), "--quiet"]
    assert interpret_main(base + ["--out", str(tmp_path / "one.npz"), "--json", str(tmp_path / "one.json")]) == 0
    for i in range(2):
        assert interpret_main(base + ["--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}.npz")]) == 0
    assert interpret_main(["top-patches", "merge", str(tmp_path / "s0.npz"), str(tmp_path / "s1.npz"),
                           "--out", str(tmp_path / "m.npz")]) == 0
    one, merged = tp.load(tmp_path / "one.npz"), tp.load(tmp_path / "m.npz")
    assert one.channels == [0, 1, 2, 3, 7] and one.n_images == 6
    assert merged.records() == one.records()
