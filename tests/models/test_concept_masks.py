"""The classroom generator's concept masks (Network Dissection's ground truth): the images it makes are unchanged
by the extension (digests taken before it, below), and every concept mask is right against an independent oracle
(distractors found by painting them with NaN through the same random draws)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from models.classroom import dataset as D

# sha256 over images, labels, masks, cue, cue_masks of generate(split, n, seed, spurious, cue_flipped), computed
# with the generator as it was before background kinds and distractor masks were recorded.
DIGESTS_BEFORE = {
    ("test", 40, 0, False, False): "90c4fb6317df15f2a65609413ada6a211587c209e3fff5286057da8516705a1e",
    ("train", 30, 3, True, False): "b4c9952d308b768ebbc22f33a5c36a41b5c5598b4201c6f5d89dd24bc3fdad8a",
    ("val", 25, 7, False, True): "5563b4ccd32db97318b84927847e44be6b921661092dd526af820c8a1dca0f38",
    ("test", 60, 1, True, False): "40b51e6ecc9763189792143cb544f2c04d83e088aeaef6fe7ef80a617c1e549d",
}


def _digest(ds: D.Dataset) -> str:
    h = hashlib.sha256()
    for a in (ds.images, ds.labels, ds.masks, ds.cue, ds.cue_masks):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("args", list(DIGESTS_BEFORE))
def test_images_and_masks_unchanged_for_a_seed(args):
    assert _digest(D.generate(*args)) == DIGESTS_BEFORE[args]


def _nan_distractors(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Oracle: ``_background_parts`` with every distractor colour replaced by NaN (the same draws are made), so
    the distractor pixels are exactly the NaN ones; also the kind (the first draw)."""
    real = D._random_colour
    calls = [0]

    def painted(r):
        c = real(r)  # the same draw
        calls[0] += 1
        return c if calls[0] <= 2 else np.full(3, np.nan)  # the first two are the background's own colours

    D._random_colour = painted
    try:
        bg, kind, _ = D._background_parts(rng)
    finally:
        D._random_colour = real
    return np.isnan(bg).any(-1), kind


def test_concept_masks_against_oracle():
    n, seed = 48, 5
    ds = D.generate("test", n, seed, spurious=True)
    stack = D.concept_stack(ds)
    scenes = D.scenes_for("test", range(n), seed, spurious=True, n=n)
    ss = np.random.SeedSequence([seed, D.SPLITS["test"], 1, 0])
    children = ss.spawn(n)
    kinds_seen = set()
    for i, scene in enumerate(scenes):
        img, obj, cue = D.render(scene)
        assert np.array_equal(img, ds.images[i])  # scenes_for re-renders the same image
        cm = D.concept_masks(scene)
        assert list(cm) == D.CONCEPTS
        for k, c in enumerate(D.CONCEPTS):
            assert np.array_equal(cm[c], stack[i, k]), (i, c)
        # oracle for kind and distractors: the same child seed, replayed (the cue draws first, as generate does)
        rng = np.random.default_rng(children[i])
        if rng.random() < D._cue_probability(int(ds.labels[i]), True, False):
            rng.integers(4)
        nan_mask, kind = _nan_distractors(rng)
        kinds_seen.add(kind)
        assert kind == scene.background_kind == ds.background_kinds[i]
        assert np.array_equal(cm["distractor"], nan_mask & ~obj & ~cue)
        assert np.array_equal(cm[D.BACKGROUND_KINDS[kind]], ~obj & ~cue)
        for k, b in enumerate(D.BACKGROUND_KINDS):
            if k != kind:
                assert not cm[b].any()
        for k, c in enumerate(D.CLASSES):
            assert np.array_equal(cm[c], obj if k == ds.labels[i] else np.zeros_like(obj))
        assert np.array_equal(cm["object"], ds.masks[i]) and np.array_equal(cm["tag"], ds.cue_masks[i])
        # object, tag and the image's background kind tile the image exactly once
        tiles = cm["object"].astype(int) + cm["tag"] + sum(cm[b].astype(int) for b in D.BACKGROUND_KINDS)
        assert (tiles == 1).all()
        # distractor pixels show the background as rendered (no object or tag painted over them)
        bg = np.rint(scene.background).astype(np.uint8)
        assert np.array_equal(img[cm["distractor"]], bg[cm["distractor"]])
    assert kinds_seen == {0, 1, 2, 3}
    assert stack[:, D.CONCEPTS.index("distractor")].any(axis=(1, 2)).mean() > 0.5


def test_with_cue_keeps_the_background_bookkeeping():
    s = D.scenes_for("val", [3], 2, n=10)[0]
    moved = D.with_cue(s, 1)
    assert moved.background_kind == s.background_kind and moved.distractors is s.distractors
    assert D.concept_masks(moved)["tag"].sum() == D.CUE_SIZE ** 2
