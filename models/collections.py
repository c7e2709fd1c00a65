"""Built-in image collections for the top-patch scan: every photo scikit-image ships, and a few hundred generated
classroom shapes.

Nothing large is committed: the photos are read from the installed scikit-image package (its data folder; the
images it would download are never fetched) and the shapes are rendered by the seeded classroom generator, so
the same arguments always give the same pixels. Images are produced one at a time when asked for, so a scan
over a collection streams instead of holding it in memory. Only names, counts and loaders live here; the scan
(``interpret.top_patches``) wraps them in its ``ImageCollection``.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .images import ImageError, decode_image

CLASSROOM_SHAPES = 300
PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp")
# Drawn, not photographed: a colour wheel, logos, a CT phantom, checkerboards and a binary silhouette.
NOT_PHOTOS = frozenset({"color", "logo", "phantom", "chessboard_GRAY", "chessboard_RGB", "horse"})
# Nearly the same picture as another one (the right view of the stereo pair): it would fill top-k lists twice.
DUPLICATES = frozenset({"motorcycle_right"})
MIN_SIDE = 64       # smaller files are test fixtures (a 10×15 multipage TIFF, a 14×25 GIF)
MIN_COLOURS = 17    # a handful of distinct values: a drawing or a mask, not a photo


@dataclass(frozen=True)
class BuiltinCollection:
    """A named, ordered set of images with a loader; ``identity`` changes whenever the content would."""

    key: str
    title: str
    names: tuple[str, ...]
    load: Callable[[str], Image.Image]
    identity: str
    note: str = ""

    def __len__(self) -> int:
        return len(self.names)

    @property
    def label(self) -> str:
        """How the collection is offered: its title and image count."""
        return f"{self.title} ({len(self)})"


def _skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def _is_photo(path: Path) -> bool:
    """A still photograph of at least MIN_SIDE px a side with more than a few distinct values."""
    if path.stem in NOT_PHOTOS or path.stem in DUPLICATES:
        return False
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1 or min(im.size) < MIN_SIDE:
                return False
            small = im.convert("RGB").resize((64, 64))
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return small.getcolors(MIN_COLOURS - 1) is None  # None: more colours than that


@functools.lru_cache(maxsize=1)
def _photo_files() -> tuple[Path, ...]:
    root = _skimage_data_dir()
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS)
    return tuple(p for p in files if _is_photo(p))


def skimage_photos() -> BuiltinCollection:
    """Every photo shipped inside the installed scikit-image (astronaut, chelsea, coffee, rocket, …), decoded and
    validated like an upload; synthetic images, tiny test files and the second view of the stereo pair are left
    out."""
    import skimage

    files = {f"skimage: {p.stem}": p for p in _photo_files()}

    def load(name: str) -> Image.Image:
        try:
            return decode_image(files[name].read_bytes())
        except KeyError:
            raise ImageError(f"no image {name!r} in the scikit-image photos") from None

    listing = [f"{n}:{p.stat().st_size}" for n, p in files.items()]
    return BuiltinCollection("skimage_photos", "Photos shipped with scikit-image", tuple(files), load,
                             _digest("skimage", skimage.__version__, *listing),
                             "Real photographs of many kinds: people, animals, objects, textures, space.")


class _Shapes:
    """Image ``i`` of ``classroom.generate(split, n, seed)`` (clean variant) on its own, drawn from the same seed
    sequence: the label permutation of the split and the i-th spawned child seed, which ``generate`` uses in
    that order (a test checks every image against ``generate``)."""

    def __init__(self, n: int, seed: int, split: str) -> None:
        from .classroom.dataset import CLASSES, SPLITS

        self.ss = np.random.SeedSequence([int(seed), SPLITS[split], 0, 0])
        self.labels = np.random.default_rng(self.ss).permutation(np.arange(n) % len(CLASSES))
        self.names = tuple(self._name(i) for i in range(n))

    def _rng(self, i: int) -> np.random.Generator:
        child = np.random.SeedSequence(self.ss.entropy, spawn_key=self.ss.spawn_key + (i,),
                                       pool_size=self.ss.pool_size)
        return np.random.default_rng(child)

    def _cue(self, rng: np.random.Generator, i: int) -> int | None:
        from .classroom.dataset import _cue_probability

        has_cue = rng.random() < _cue_probability(int(self.labels[i]), False, False)
        return int(rng.integers(4)) if has_cue else None

    def _name(self, i: int) -> str:
        from .classroom.dataset import CLASSES

        cue = self._cue(self._rng(i), i) is not None
        return f"shapes: {CLASSES[int(self.labels[i])]} #{i}" + (" (cue)" if cue else "")

    def image(self, i: int) -> Image.Image:
        from .classroom.dataset import render, sample_scene

        rng = self._rng(i)
        corner = self._cue(rng, i)
        return Image.fromarray(render(sample_scene(rng, int(self.labels[i]), corner))[0])


def classroom_shapes(n: int = CLASSROOM_SHAPES, seed: int | None = None, split: str = "test") -> BuiltinCollection:
    """``n`` generated classroom images (64×64 shapes on textured backgrounds, the clean variant's cue rate),
    image ``i`` equal to image ``i`` of ``models.classroom.generate(split, n, seed)`` but rendered only when
    loaded."""
    from .classroom import COLLECTION_SEED

    seed = COLLECTION_SEED if seed is None else int(seed)
    shapes = _Shapes(n, seed, split)
    index = {name: i for i, name in enumerate(shapes.names)}

    def load(name: str) -> Image.Image:
        if name not in index:
            raise ImageError(f"no image {name!r} in the generated shapes")
        return shapes.image(index[name])

    return BuiltinCollection("classroom_shapes", "Generated classroom shapes", shapes.names, load,
                             _digest("shapes", split, str(n), str(seed)),
                             "Six shapes at random position, size, rotation and colour on textured backgrounds.")


def builtin_collections() -> dict[str, BuiltinCollection]:
    """Every built-in collection by key, in the order they are offered."""
    return {c.key: c for c in (skimage_photos(), classroom_shapes())}


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
