"""Built-in top-patch collections: the stated sizes, deterministic content, decodable images equal to what their
sources give (scikit-image's own loaders, the classroom generator), and the page offering them with counts."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from models import collections as bc
from models.images import ImageError

ROOT = Path(__file__).resolve().parents[2]
# Photos every scikit-image release since 0.19 ships inside the package, by skimage.data function.
SHIPPED = {"astronaut": "astronaut", "chelsea": "chelsea", "coffee": "coffee", "rocket": "rocket",
           "camera": "camera", "coins": "coins", "moon": "moon", "hubble_deep_field": "hubble_deep_field",
           "immunohistochemistry": "ihc", "retina": "retina", "page": "page", "text": "text",
           "clock": "clock_motion", "brick": "brick", "grass": "grass", "gravel": "gravel", "cell": "cell"}


def _sha(images) -> str:
    h = hashlib.sha256()
    for im in images:
        a = np.asarray(im)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def test_skimage_photos_are_the_shipped_photos_decoded_exactly():
    col = bc.skimage_photos()
    assert col.label == f"Photos shipped with scikit-image ({len(col)})"
    assert len(col) == len(set(col.names)) >= len(SHIPPED)
    for fn, stem in SHIPPED.items():  # oracle: scikit-image's own loader of the same photo
        im = col.load(f"skimage: {stem}")
        assert im.mode == "RGB"
        want = getattr(data, fn)()
        want = np.repeat(want[..., None], 3, axis=2) if want.ndim == 2 else want[..., :3]
        np.testing.assert_array_equal(np.asarray(im), want, err_msg=fn)
    stems = {n.removeprefix("skimage: ") for n in col.names}
    assert not stems & (bc.NOT_PHOTOS | bc.DUPLICATES)  # colour wheel, logos, phantom, checkerboards, silhouette
    assert "motorcycle_left" in stems
    for name in col.names:  # every listed one decodes as a photo-sized RGB image
        im = col.load(name)
        assert im.mode == "RGB" and min(im.size) >= bc.MIN_SIDE, name
    with pytest.raises(ImageError):
        col.load("skimage: no_such_photo")


def test_skimage_photos_skip_drawings_and_test_files(tmp_path, monkeypatch):
    """The filter, on a folder of known files: a photo-like image stays, the rest is left out gracefully."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 90, 3), np.uint8)).save(tmp_path / "photo.png")
    Image.fromarray(rng.integers(0, 256, (80, 90), np.uint8)).save(tmp_path / "grey.jpg")
    Image.fromarray(rng.integers(0, 256, (80, 90, 3), np.uint8)).save(tmp_path / "logo.png")  # named drawing
    Image.fromarray((np.indices((80, 80)).sum(0) % 2 * 255).astype(np.uint8)).save(tmp_path / "checks.png")
    Image.fromarray(rng.integers(0, 256, (20, 200, 3), np.uint8)).save(tmp_path / "thin.png")  # < MIN_SIDE
    frames = [Image.fromarray(rng.integers(0, 256, (80, 80, 3), np.uint8)) for _ in range(2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "notes.txt").write_text("not an image")
    monkeypatch.setattr(bc, "_skimage_data_dir", lambda: tmp_path)
    bc._photo_files.cache_clear()
    try:
        col = bc.skimage_photos()
        assert col.names == ("skimage: grey", "skimage: photo")
        assert col.load("skimage: grey").mode == "RGB"
    finally:
        bc._photo_files.cache_clear()


def test_classroom_shapes_size_determinism_and_generator_equality():
    from models.classroom import COLLECTION_SEED, generate

    col = bc.classroom_shapes()
    assert len(col) == bc.CLASSROOM_SHAPES == 300
    assert col.label == "Generated classroom shapes (300)"
    images = [col.load(n) for n in col.names]
    ds = generate("test", 300, COLLECTION_SEED)  # oracle: the classroom generator, all at once
    for i, im in enumerate(images):
        assert im.mode == "RGB" and im.size == (64, 64)
        np.testing.assert_array_equal(np.asarray(im), ds.images[i], err_msg=col.names[i])
    assert [n.removeprefix("shapes: ") for n in col.names] == [ds.name(i) for i in range(300)]
    # same seed -> the same bytes, from a fresh collection and in any order of loading
    again = bc.classroom_shapes()
    assert again.identity == col.identity and again.names == col.names
    assert _sha(again.load(n) for n in reversed(again.names)) == _sha(images[::-1])
    other = bc.classroom_shapes(n=12, seed=COLLECTION_SEED + 1)
    assert other.identity != col.identity
    assert _sha(other.load(n) for n in other.names) != _sha(images[:12])
    with pytest.raises(ImageError):
        col.load("shapes: circle #9999")


def test_builtin_collections_in_order():
    cols = bc.builtin_collections()
    assert list(cols) == ["skimage_photos", "classroom_shapes"]
    assert all(c.key == k and c.note for k, c in cols.items())


def test_top_patches_page_offers_and_scans_the_builtin_collections():
    """The page lists each collection with its count; scanning the photos covers every one of them."""
    from streamlit.testing.v1 import AppTest

    from tests.apptest_util import navigation_only

    with navigation_only():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        at.switch_page(str(ROOT / "pages" / "top_patches.py")).run()
        assert not at.exception, at.exception
        radio = at.radio(key="tp_source")
        photos, shapes = bc.skimage_photos(), bc.classroom_shapes()
        assert photos.label in radio.options and shapes.label in radio.options
        assert "Generated classroom shapes (300)" in radio.options
        radio.set_value("skimage_photos").run()
        at.number_input(key="tp_ntop").set_value(1)
        at.number_input(key="tp_k").set_value(3)
        next(b for b in at.button if b.label == "Scan").click().run()
        assert not at.exception, at.exception
        line = next(m.value for m in at.markdown if "images scanned" in m.value)
        assert f"{len(photos)} images scanned" in line
        rec = at.dataframe[-1].value
        assert set(rec["image"]) <= set(photos.names) and len(rec) == 3
