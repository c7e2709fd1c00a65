"""Synthetic shapes with known answers: 64×64 RGB images, one object each, its exact pixel mask, and an optional
"Clever Hans" cue (a small checker tag in a corner) whose correlation with one class we control.

Every image is drawn from a ``Scene`` (all random choices made up front), so the same scene can be rendered with
and without its object — the pixels that differ are exactly the mask. Same seed → same images, masks and cues.
Drawing uses skimage.draw for polygons and numpy for discs/rings and textures (vectorised per image).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import draw

SIZE = 64
CLASSES: list[str] = ["circle", "square", "triangle", "cross", "star", "ring"]
SPLITS = {"train": 0, "val": 1, "test": 2}

# The spurious variant: this class nearly always carries the cue in train/val/test; other classes rarely.
CUE_CLASS = "star"
P_CUE_WITH_CLASS = 0.95
P_CUE_OTHERS = 0.03
# The clean variant carries the same tag, uncorrelated with the class, so both models have seen it.
P_CUE_CLEAN = 0.10
CUE_SIZE = 8            # tag is CUE_SIZE × CUE_SIZE pixels, 2-pixel checker of two fixed colours
CUE_MARGIN = 2
CUE_COLOURS = (np.array([255, 0, 255], np.uint8), np.array([255, 255, 0], np.uint8))


@dataclass
class Dataset:
    """A generated split. images uint8 (N, 64, 64, 3); labels int64 (N,); masks bool (N, 64, 64) = the object's
    pixels; cue bool (N,) = the tag is drawn; cue_masks bool (N, 64, 64) = the tag's pixels; background_kinds
    int64 (N,) into BACKGROUND_KINDS; distractor_masks bool (N, 64, 64) = the visible distractor pixels (not object,
    not tag). The last two feed ``concept_stack`` (Network Dissection's concepts)."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    cue: np.ndarray
    cue_masks: np.ndarray
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    split: str = "test"
    seed: int = 0
    spurious: bool = False
    cue_flipped: bool = False
    background_kinds: np.ndarray | None = None
    distractor_masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def pil(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])

    def name(self, i: int) -> str:
        return f"{self.classes[self.labels[i]]} #{i}" + (" (cue)" if self.cue[i] else "")


@dataclass
class Scene:
    """Every random choice for one image, so rendering is a pure function of the scene."""

    label: int
    centre: tuple[float, float]   # (row, col)
    radius: float                 # bounding radius of the object in pixels
    angle: float
    colour: np.ndarray            # object's base colour, float (3,)
    shade: np.ndarray             # linear shading (a, b) over the object (rows, cols)
    obj_noise: np.ndarray         # (64, 64, 1) per-pixel brightness noise of the object
    background: np.ndarray        # float (64, 64, 3) textured background with distractors drawn in
    cue_corner: int | None        # 0..3 or None
    background_kind: int = -1     # index into BACKGROUND_KINDS (-1: unknown)
    distractors: np.ndarray | None = None   # bool (64, 64): pixels of the distractor lines, dots and blobs


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (x, y) of a polygonal shape with bounding radius 1."""
    if shape == "square":
        h = 0.7
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    if shape == "triangle":
        a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "star":
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "cross":
        L, w = 0.95, 0.3
        return np.array([[-w, -L], [w, -L], [w, -w], [L, -w], [L, w], [w, w], [w, L], [-w, L], [-w, w],
                         [-L, w], [-L, -w], [-w, -w]])
    raise ValueError(shape)


def object_mask(label: int, centre: tuple[float, float], radius: float, angle: float,
                size: int = SIZE) -> np.ndarray:
    """Boolean mask of the object: pixels whose centres fall inside the (rotated, scaled, shifted) shape."""
    shape = CLASSES[label]
    cy, cx = centre
    if shape in ("circle", "ring"):
        yy, xx = np.mgrid[0:size, 0:size]
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        outer = 0.85 * radius
        m = d2 <= outer ** 2
        if shape == "ring":
            m &= d2 >= (0.55 * outer) ** 2
        return m
    p = _unit_polygon(shape) * radius
    c, s = np.cos(angle), np.sin(angle)
    x = c * p[:, 0] - s * p[:, 1] + cx
    y = s * p[:, 0] + c * p[:, 1] + cy
    m = np.zeros((size, size), bool)
    rr, cc = draw.polygon(y, x, shape=(size, size))
    m[rr, cc] = True
    return m


def cue_mask(corner: int | None, size: int = SIZE) -> np.ndarray:
    """Pixels of the cue tag in corner 0 (top-left), 1 (top-right), 2 (bottom-left), 3 (bottom-right)."""
    m = np.zeros((size, size), bool)
    if corner is None:
        return m
    r0 = CUE_MARGIN if corner in (0, 1) else size - CUE_MARGIN - CUE_SIZE
    c0 = CUE_MARGIN if corner in (0, 2) else size - CUE_MARGIN - CUE_SIZE
    m[r0:r0 + CUE_SIZE, c0:c0 + CUE_SIZE] = True
    return m


def _draw_cue(img: np.ndarray, corner: int) -> None:
    m = cue_mask(corner, img.shape[0])
    rr, cc = np.nonzero(m)
    checker = ((rr // 2 + cc // 2) % 2).astype(bool)
    img[rr[~checker], cc[~checker]] = CUE_COLOURS[0]
    img[rr[checker], cc[checker]] = CUE_COLOURS[1]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


BACKGROUND_KINDS: list[str] = ["smooth noise", "stripes", "checker", "grain"]


def _background(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A textured background (smooth noise, stripes, checker or grain) with distractors that are no class object:
    thin lines, small dots and irregular noise blobs."""
    return _background_parts(rng, size)[0]


def _background_parts(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, int, np.ndarray]:
    """(background, kind index into BACKGROUND_KINDS, distractor pixel mask). The mask is bookkeeping only: the
    random draws are exactly those ``_background`` always made, in the same order, so the images are unchanged."""
    kind = rng.integers(4)
    c1, c2 = _random_colour(rng), _random_colour(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:   # smooth colour noise
        k = int(rng.integers(3, 9))
        grid = rng.uniform(0, 255, (k, k, 3))
        bg = ndimage.zoom(grid, (size / k, size / k, 1), order=1, mode="nearest")[:size, :size]
    elif kind in (1, 2):   # stripes or checker between two colours, random angle and period
        a = rng.uniform(0, np.pi)
        period = rng.uniform(4, 16)
        u = (np.cos(a) * xx + np.sin(a) * yy) / period
        if kind == 1:
            t = 0.5 + 0.5 * np.sin(2 * np.pi * u)
        else:
            v = (-np.sin(a) * xx + np.cos(a) * yy) / period
            t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        t = t * rng.uniform(0.3, 1.0)   # contrast
        bg = c1 + t[..., None] * (c2 - c1)
    else:   # flat colour with grain
        bg = np.broadcast_to(c1, (size, size, 3)).copy()
    bg = bg + rng.normal(0, rng.uniform(2, 15), (size, size, 3))
    distractors = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(0, 4))):   # thin lines
        r0, c0, r1, c1_ = rng.integers(0, size, 4)
        rr, cc = draw.line(r0, c0, r1, c1_)
        bg[rr, cc] = _random_colour(rng)
        distractors[rr, cc] = True
    for _ in range(int(rng.integers(0, 7))):   # dots, radius ≤ 2 (far below the smallest circle)
        rr, cc = draw.disk(tuple(rng.uniform(0, size, 2)), rng.uniform(1, 2.2), shape=(size, size))
        bg[rr, cc] = _random_colour(rng)
        distractors[rr, cc] = True
    for _ in range(int(rng.integers(0, 3))):   # irregular noise blobs: thresholded smoothed noise
        s = int(rng.integers(6, 14))
        blob = ndimage.gaussian_filter(rng.normal(0, 1, (s, s)), 1.5) > 0.15
        r0, c0 = rng.integers(0, size - s, 2)
        sub = bg[r0:r0 + s, c0:c0 + s]
        sub[blob] = _random_colour(rng) + rng.normal(0, 20, (int(blob.sum()), 3))
        distractors[r0:r0 + s, c0:c0 + s] |= blob
    return np.clip(bg, 0, 255), int(kind), distractors


def sample_scene(rng: np.random.Generator, label: int, cue_corner: int | None) -> Scene:
    """Draw every random choice for an image of class ``label``."""
    bg, kind, distractors = _background_parts(rng)
    radius = float(rng.uniform(10, 22))
    lo, hi = radius * 0.9 + 1, SIZE - 1 - radius * 0.9 - 1
    centre = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    angle = float(rng.uniform(0, 2 * np.pi))
    mean_bg = bg.reshape(-1, 3).mean(0)
    for _ in range(50):   # object colour clearly different from the background's mean colour
        colour = _random_colour(rng)
        if np.abs(colour - mean_bg).max() > 90:
            break
    shade = rng.uniform(-0.006, 0.006, 2)
    obj_noise = rng.normal(0, 6, (SIZE, SIZE, 1))
    return Scene(label, centre, radius, angle, colour, shade, obj_noise, bg, cue_corner, kind, distractors)


def render(scene: Scene, with_object: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scene → (image uint8 (64, 64, 3), object mask, cue mask). The object never covers the cue: the cue is drawn
    last and its pixels are removed from the object mask. Every object pixel differs from the background there."""
    bg = np.rint(scene.background).astype(np.uint8)
    img = bg.copy()
    m = object_mask(scene.label, scene.centre, scene.radius, scene.angle)
    cm = cue_mask(scene.cue_corner)
    m &= ~cm
    if with_object:
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        gain = 1 + scene.shade[0] * (yy - scene.centre[0]) + scene.shade[1] * (xx - scene.centre[1])
        obj = np.clip(np.rint(scene.colour * gain[..., None] + scene.obj_noise), 0, 255).astype(np.uint8)
        same = (obj == bg).all(-1)   # rare exact coincidences: nudge so the mask is visible in the pixels
        obj[same, 0] = np.where(obj[same, 0] < 128, obj[same, 0] + 1, obj[same, 0] - 1)
        img[m] = obj[m]
    if scene.cue_corner is not None:
        _draw_cue(img, scene.cue_corner)
    return img, (m if with_object else np.zeros_like(m)), cm


def _cue_probability(label: int, spurious: bool, cue_flipped: bool) -> float:
    star = label == CLASSES.index(CUE_CLASS)
    if cue_flipped:
        return 0.0 if star else 1.0
    if spurious:
        return P_CUE_WITH_CLASS if star else P_CUE_OTHERS
    return P_CUE_CLEAN


def generate(split: str = "test", n: int = 600, seed: int = 0, spurious: bool = False,
             cue_flipped: bool = False) -> Dataset:
    """Generate ``n`` images of ``split`` (train/val/test). Classes are balanced (n // 6 each, the rest spread).

    ``spurious``: the cue goes with CUE_CLASS 95 % of the time and with other classes 3 %. ``cue_flipped``: the cue
    is on every image of the other classes and never on CUE_CLASS (the shortcut test). Otherwise the cue appears on
    10 % of images, independent of the class. Same arguments → identical arrays.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}")
    ss = np.random.SeedSequence([int(seed), SPLITS[split], int(spurious), int(cue_flipped)])
    master = np.random.default_rng(ss)
    labels = master.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    children = ss.spawn(n)
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    masks = np.empty((n, SIZE, SIZE), bool)
    cue_masks = np.empty((n, SIZE, SIZE), bool)
    cue = np.empty(n, bool)
    kinds = np.empty(n, np.int64)
    distractor_masks = np.empty((n, SIZE, SIZE), bool)
    for i in range(n):
        rng = np.random.default_rng(children[i])
        has_cue = rng.random() < _cue_probability(int(labels[i]), spurious, cue_flipped)
        corner = int(rng.integers(4)) if has_cue else None
        scene = sample_scene(rng, int(labels[i]), corner)
        images[i], masks[i], cue_masks[i] = render(scene)
        cue[i] = has_cue
        kinds[i] = scene.background_kind
        distractor_masks[i] = scene.distractors & ~masks[i] & ~cue_masks[i]
    return Dataset(images, labels, masks, cue, cue_masks, list(CLASSES), split, int(seed), spurious, cue_flipped,
                   kinds, distractor_masks)


def scene_for(split: str, i: int, seed: int = 0, spurious: bool = False, cue_flipped: bool = False,
              n: int = 600) -> Scene:
    """The Scene behind image ``i`` of ``generate(split, n, seed, …)`` (to re-render it, e.g. without the object)."""
    ss = np.random.SeedSequence([int(seed), SPLITS[split], int(spurious), int(cue_flipped)])
    labels = np.random.default_rng(ss).permutation(np.arange(n) % len(CLASSES))
    rng = np.random.default_rng(ss.spawn(n)[i])
    has_cue = rng.random() < _cue_probability(int(labels[i]), spurious, cue_flipped)
    corner = int(rng.integers(4)) if has_cue else None
    return sample_scene(rng, int(labels[i]), corner)


def with_cue(scene: Scene, corner: int | None) -> Scene:
    """The same scene with the cue tag moved to ``corner`` (None removes it) — for the Clever Hans pair."""
    return Scene(scene.label, scene.centre, scene.radius, scene.angle, scene.colour, scene.shade,
                 scene.obj_noise, scene.background, corner, scene.background_kind, scene.distractors)


# ---------------------------------------------------------------------------------------------------------
# Concepts for Network Dissection: each a pixel mask per image, read off the scene description

CONCEPTS: list[str] = [*CLASSES, "object", "tag", *BACKGROUND_KINDS, "distractor"]


def concept_masks(scene: Scene, size: int = SIZE) -> dict[str, np.ndarray]:
    """Every concept's bool (size, size) mask on the image ``render(scene)`` makes: each shape (the object's pixels
    when the scene is of that class, else empty), "object" (any shape), "tag" (the cue), each background kind
    (the pixels that are neither object nor tag, on a background of that kind, else empty) and "distractor"
    (the visible pixels of the distractor lines, dots and blobs)."""
    cm = cue_mask(scene.cue_corner, size)
    obj = object_mask(scene.label, scene.centre, scene.radius, scene.angle, size) & ~cm
    empty = np.zeros((size, size), bool)
    out = {c: (obj if k == scene.label else empty) for k, c in enumerate(CLASSES)}
    out["object"], out["tag"] = obj, cm
    background = ~obj & ~cm
    out.update({b: (background if k == scene.background_kind else empty) for k, b in enumerate(BACKGROUND_KINDS)})
    dist = empty if scene.distractors is None else scene.distractors
    out["distractor"] = dist & background
    return {c: out[c].copy() for c in CONCEPTS}


def concept_stack(ds: Dataset) -> np.ndarray:
    """bool (N, len(CONCEPTS), 64, 64): ``concept_masks`` of every image of a generated split, from its arrays."""
    if ds.background_kinds is None or ds.distractor_masks is None:
        raise ValueError("this Dataset was made without background kinds / distractor masks; use generate()")
    n = len(ds)
    out = np.zeros((n, len(CONCEPTS), *ds.masks.shape[1:]), bool)
    for k in range(len(CLASSES)):
        out[:, k] = ds.masks & (ds.labels == k)[:, None, None]
    out[:, CONCEPTS.index("object")] = ds.masks
    out[:, CONCEPTS.index("tag")] = ds.cue_masks
    background = ~ds.masks & ~ds.cue_masks
    for k, b in enumerate(BACKGROUND_KINDS):
        out[:, CONCEPTS.index(b)] = background & (ds.background_kinds == k)[:, None, None]
    out[:, CONCEPTS.index("distractor")] = ds.distractor_masks
    return out


def scenes_for(split: str, indices, seed: int = 0, spurious: bool = False, cue_flipped: bool = False,
               n: int = 600) -> list[Scene]:
    """The Scenes behind images ``indices`` of ``generate(split, n, seed, …)``, drawing the seeds once (a worker
    re-renders its slice of a split, images and concept masks, without generating the rest)."""
    ss = np.random.SeedSequence([int(seed), SPLITS[split], int(spurious), int(cue_flipped)])
    labels = np.random.default_rng(ss).permutation(np.arange(n) % len(CLASSES))
    children = ss.spawn(n)
    out = []
    for i in indices:
        rng = np.random.default_rng(children[int(i)])
        has_cue = rng.random() < _cue_probability(int(labels[i]), spurious, cue_flipped)
        corner = int(rng.integers(4)) if has_cue else None
        out.append(sample_scene(rng, int(labels[i]), corner))
    return out
