"""Image collections for the top-patch scan (``interpret.units.top_patches``): an ``ImageCollection`` (named
images in a fixed order, decoded lazily, shardable) built from PIL images, a server folder or an uploaded zip, and
the built-in collections: every photo scikit-image ships, and a few hundred generated classroom shapes.

Folders and zips are read defensively: only image file names, no paths leaving the folder or the archive, member
sizes bounded as declared and as read (zip bombs), every image decoded and validated by ``models.images``.
Nothing large is committed: the photos are read from the installed scikit-image package (its data folder; the
images it would download are never fetched) and the shapes are rendered by the seeded classroom generator, so
the same arguments always give the same pixels. Images are produced one at a time when asked for, so a scan
over a collection streams instead of holding it in memory.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from .images import ImageError, decode_image

# ---------------------------------------------------------------------------------------------------------
# Image collections

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
ZIP_MAX_FILES = 5000
ZIP_MAX_FILE_BYTES = 20 * 1024 * 1024
ZIP_MAX_TOTAL_BYTES = 500 * 1024 * 1024


class CollectionError(ValueError):
    """A collection the user named cannot be read as one (not a folder, duplicate image names)."""


@dataclass
class ImageCollection:
    """Named images in a fixed order, decoded lazily. ``items`` are (index in the whole collection, name);
    images that fail to load are skipped during iteration and listed in ``skipped`` as (name, reason)."""

    items: list[tuple[int, str]]
    loader: Callable[[str], Image.Image]
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[int, str, Image.Image]]:
        for idx, name in self.items:
            try:
                img = self.loader(name)
            except (ImageError, OSError, ValueError) as e:
                self.skipped.append((name, str(e)))
                continue
            yield idx, name, img

    def shard(self, i: int, n: int, batch_size: int = 16) -> "ImageCollection":
        """Shard ``i`` of ``n`` (0-based): a contiguous run of whole batches of ``batch_size`` images."""
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"shard {i}/{n}: need 0 <= i < n")
        n_batches = -(-len(self.items) // batch_size)
        b0, b1 = i * n_batches // n, (i + 1) * n_batches // n
        return ImageCollection(self.items[b0 * batch_size:b1 * batch_size], self.loader,
                               f"{self.source} [shard {i}/{n}]")


def from_images(images: Sequence[Image.Image] | Sequence[tuple[str, Image.Image]] | dict[str, Image.Image],
                source: str = "images") -> ImageCollection:
    """A collection from PIL images (names ``image_000`` …), (name, image) pairs or a name → image dict."""
    if isinstance(images, dict):
        pairs = list(images.items())
    else:
        pairs = [(p if isinstance(p, tuple) else (f"image_{k:03d}", p)) for k, p in enumerate(images)]
    table = dict(pairs)
    if len(table) != len(pairs):
        raise CollectionError("image names must be unique")
    return ImageCollection([(k, name) for k, (name, _) in enumerate(pairs)], table.__getitem__, source)


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def from_folder(folder: str | os.PathLike, recursive: bool = True, max_files: int | None = None,
                max_bytes: int = ZIP_MAX_FILE_BYTES) -> ImageCollection:
    """Image files under ``folder`` (by extension, sorted by relative path; symlinks leaving it ignored),
    decoded and validated with ``models.images.decode_image`` when iterated."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise CollectionError(f"not a folder: {folder}")
    paths = root.rglob("*") if recursive else root.iterdir()
    names = sorted(p.relative_to(root).as_posix() for p in paths
                   if p.is_file() and _is_image_name(p.name) and p.resolve().is_relative_to(root))
    if max_files is not None:
        names = names[:max_files]

    def load(name: str) -> Image.Image:
        p = root / name
        if p.stat().st_size > max_bytes:
            raise ImageError(f"file larger than {max_bytes} bytes")
        return decode_image(p.read_bytes())

    return ImageCollection([(k, n) for k, n in enumerate(names)], load, str(root))


def from_zip(data: bytes, max_files: int = ZIP_MAX_FILES, max_file_bytes: int = ZIP_MAX_FILE_BYTES,
             max_total_bytes: int = ZIP_MAX_TOTAL_BYTES) -> ImageCollection:
    """Image members of a zip archive held in memory. Nothing is extracted to disk; members with absolute or
    ``..`` paths, directories, hidden files and non-image names are ignored (listed in ``skipped``); member
    sizes are bounded both as declared and as actually read (zip bombs); images are decoded with
    ``models.images.decode_image``. Raises ImageError if ``data`` is not a zip archive."""
    try:
        zf = zipfile.ZipFile(data if hasattr(data, "read") else io.BytesIO(data))  # bytes, or an open file
    except zipfile.BadZipFile as e:
        raise ImageError(f"not a zip archive: {e}") from None
    names, skipped, total = [], [], 0
    for info in zf.infolist():
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if info.is_dir():
            continue
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or "__MACOSX" in parts:
            skipped.append((name, "unsafe or system path"))
            continue
        if not _is_image_name(name):
            skipped.append((name, "not an image file name"))
            continue
        if info.file_size > max_file_bytes:
            skipped.append((name, f"larger than {max_file_bytes} bytes"))
            continue
        if len(names) >= max_files or total + info.file_size > max_total_bytes:
            skipped.append((name, "archive limit reached (files or total size)"))
            continue
        total += info.file_size
        names.append(name)
    names.sort()
    lock = threading.Lock()

    def load(name: str) -> Image.Image:
        with lock, zf.open(name) as f:
            raw = f.read(max_file_bytes + 1)  # the declared size may lie
        if len(raw) > max_file_bytes:
            raise ImageError(f"larger than {max_file_bytes} bytes")
        return decode_image(raw)

    col = ImageCollection([(k, n) for k, n in enumerate(names)], load, "zip")
    col.skipped.extend(skipped)
    return col


def iter_images(images) -> Iterator[tuple[int, str, Image.Image]]:
    """(index, name, image) of an ImageCollection (its global indices; bad files skipped) or of any iterable of
    PIL images (named ``image_000`` …), (name, image) pairs or (index, name, image) triples."""
    if isinstance(images, ImageCollection):
        yield from images
        return
    for k, item in enumerate(images):
        if isinstance(item, Image.Image):
            yield k, f"image_{k:03d}", item
        elif len(item) == 3:
            yield int(item[0]), str(item[1]), item[2]
        else:
            yield k, str(item[0]), item[1]


# ---------------------------------------------------------------------------------------------------------
# Collections named by a path, rebuilt on other machines (scans spread over workers)

LIST_EXTENSIONS = (".txt", ".lst")


@dataclass(frozen=True)
class CollectionSpec:
    """A collection named by a path, small enough to send to a worker: a folder tree, a zip file, a list file of
    image paths (one a line; relative paths are read from the list file's folder; blank and ``#`` lines
    ignored) or a WebDataset-style tar shard set (``shard-{000..009}.tar``; members ``key.jpg`` / ``key.png``).

    ``open()`` lists the whole collection (the driver does this once); ``loader()`` reads single images by the
    names of that listing without listing anything, so a worker given a slice of the items opens only the
    files (tar shards, images) that slice names."""

    kind: str  # "folder" | "zip" | "list" | "tar"
    location: str  # folder, zip or list file path (absolute), or the tar pattern with absolute folder
    max_bytes: int = ZIP_MAX_FILE_BYTES

    def open(self) -> ImageCollection:
        """The full listing, in its fixed order, with this spec's loader."""
        if self.kind == "folder":
            col = from_folder(self.location, max_bytes=self.max_bytes)
        elif self.kind == "zip":
            col = _zip_listing(self.location, self.max_bytes)
        elif self.kind == "list":
            col = ImageCollection([(k, n) for k, n in enumerate(_list_names(self.location))], self.loader(),
                                  self.location)
        elif self.kind == "tar":
            col = _tar_listing(self)
        else:
            raise CollectionError(f"unknown collection kind {self.kind!r}")
        col.source = self.location
        return col

    def loader(self) -> Callable[[str], Image.Image]:
        """name (as listed by ``open``) → validated RGB image; ImageError/OSError for a bad or missing file."""
        if self.kind == "folder":
            return _path_loader(Path(self.location), self.max_bytes, confine=True)
        if self.kind == "list":
            return _path_loader(Path(self.location).parent, self.max_bytes, confine=False)
        if self.kind == "zip":
            return _ZipReader(self.location, self.max_bytes)
        if self.kind == "tar":
            return _TarReader(os.path.dirname(self.location), self.max_bytes)
        raise CollectionError(f"unknown collection kind {self.kind!r}")

    def subset(self, items: Sequence[tuple[int, str]], source: str = "") -> ImageCollection:
        """A collection of some of the listing's items (global indices kept), read with a fresh loader."""
        return ImageCollection(list(items), self.loader(), source or self.location)


def collection_spec(text: str | os.PathLike) -> CollectionSpec:
    """The spec a user's COLLECTION argument names: a folder, a ``.zip``, a ``.txt``/``.lst`` list file, or a tar
    shard set (a ``.tar`` path, possibly with ``{000..009}`` braces). CollectionError when it names nothing."""
    text = os.fspath(text)
    if ".tar" in text and ("{" in text or text.endswith(".tar")):
        folder, pattern = os.path.split(text)
        paths = [os.path.join(os.path.abspath(folder or "."), p) for p in expand_braces(pattern)]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise CollectionError(f"tar shard(s) not found: {', '.join(missing[:3])}"
                                  + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
        return CollectionSpec("tar", os.path.join(os.path.abspath(folder or "."), pattern))
    path = Path(text).resolve()
    if path.is_dir():
        return CollectionSpec("folder", str(path))
    if not path.is_file():
        raise CollectionError(f"no such folder or file: {text}")
    if path.suffix.lower() == ".zip":
        return CollectionSpec("zip", str(path))
    if path.suffix.lower() in LIST_EXTENSIONS:
        return CollectionSpec("list", str(path))
    raise CollectionError(f"{text}: not a folder, .zip, list file ({', '.join(LIST_EXTENSIONS)}) or .tar shard set")


def open_collection(text: str | os.PathLike) -> ImageCollection:
    """``collection_spec(text).open()``."""
    return collection_spec(text).open()


def expand_braces(pattern: str) -> list[str]:
    """WebDataset brace patterns: ``a-{000..003}.tar`` → a-000.tar … a-003.tar (zero padding kept),
    ``{a,b}.tar`` → a.tar, b.tar; several braces expand left to right."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    head, body, tail = pattern[:m.start()], m.group(1), pattern[m.end():]
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        a, b = r.group(1), r.group(2)
        width = len(a) if a.startswith("0") or len(a) == len(b) else 0
        if int(b) < int(a):
            raise CollectionError(f"empty range {{{body}}} in {pattern!r}")
        choices = [str(v).zfill(width) for v in range(int(a), int(b) + 1)]
    else:
        choices = body.split(",")
    return [x for c in choices for x in expand_braces(head + c + tail)]


def fingerprint(spec: CollectionSpec, col: ImageCollection) -> str:
    """A digest that changes when the listing or a listed file changes (names; sizes and modification times of
    the image files, or of the zip / tar files holding them)."""
    parts = [spec.kind, spec.location]
    if spec.kind in ("folder", "list"):
        base = Path(spec.location) if spec.kind == "folder" else Path(spec.location).parent
        for _, n in col.items:
            try:
                st = (base / n).stat()
                parts.append(f"{n}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{n}:missing")
    else:
        files = [spec.location] if spec.kind == "zip" else \
            [os.path.join(os.path.dirname(spec.location), p) for p in expand_braces(os.path.basename(spec.location))]
        for f in files:
            st = os.stat(f)
            parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
        parts.extend(n for _, n in col.items)
    return _digest(*parts)


def _list_names(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CollectionError(f"cannot read the list file {path}: {e}") from None
    names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if len(set(names)) != len(names):
        raise CollectionError(f"the list file {path} names some images twice")
    return names


def _path_loader(base: Path, max_bytes: int, confine: bool) -> Callable[[str], Image.Image]:
    root = base.resolve()

    def load(name: str) -> Image.Image:
        p = (root / name).resolve()
        if confine and not p.is_relative_to(root):
            raise ImageError("path leaves the collection folder")
        if not _is_image_name(p.name):
            raise ImageError("not an image file name")
        if p.stat().st_size > max_bytes:
            raise ImageError(f"file larger than {max_bytes} bytes")
        return decode_image(p.read_bytes())

    return load


def _zip_listing(path: str, max_bytes: int) -> ImageCollection:
    """from_zip's listing and checks, reading the archive from disk (members read one at a time)."""
    try:
        with open(path, "rb") as f:
            col = from_zip(f, max_file_bytes=max_bytes)  # type: ignore[arg-type]
    except ImageError as e:
        raise CollectionError(f"{path}: {e}") from None
    items, skipped = col.items, col.skipped
    out = ImageCollection(items, _ZipReader(path, max_bytes), path)
    out.skipped.extend(skipped)
    return out


class _ZipReader:
    """Reads members of a zip file on disk by name, opening the archive on first use (per process)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self._zf: zipfile.ZipFile | None = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"path": self.path, "max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(state["path"], state["max_bytes"])

    def __call__(self, name: str) -> Image.Image:
        with self._lock:
            if self._zf is None:
                self._zf = zipfile.ZipFile(self.path)
            info = self._zf.getinfo(name)
            if info.file_size > self.max_bytes:
                raise ImageError(f"larger than {self.max_bytes} bytes")
            with self._zf.open(info) as f:
                raw = f.read(self.max_bytes + 1)
        if len(raw) > self.max_bytes:
            raise ImageError(f"larger than {self.max_bytes} bytes")
        return decode_image(raw)


def _tar_members(path: str) -> list[tarfile.TarInfo]:
    try:
        with tarfile.open(path, "r:") as tf:  # uncompressed only: members are read by offset
            return tf.getmembers()
    except tarfile.TarError as e:
        raise CollectionError(f"{path}: not an uncompressed tar file: {e}") from None


def _tar_listing(spec: CollectionSpec) -> ImageCollection:
    folder, pattern = os.path.split(spec.location)
    items, skipped = [], []
    for shard in expand_braces(pattern):
        for m in _tar_members(os.path.join(folder, shard)):
            name = f"{shard}/{m.name}"
            if not m.isfile():
                continue
            if m.name.startswith("/") or ".." in m.name.split("/") or not _is_image_name(m.name):
                skipped.append((name, "not an image member"))
                continue
            items.append(name)
    col = ImageCollection([(k, n) for k, n in enumerate(items)], spec.loader(), spec.location)
    col.skipped.extend(skipped)
    return col


class _TarReader:
    """Reads ``SHARD.tar/member`` names of a tar shard set: a shard's member index is read the first time one of
    its members is asked for, so a worker touches only the tar files of its own items."""

    def __init__(self, folder: str, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self._index: dict[str, dict[str, tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"folder": self.folder, "max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(state["folder"], state["max_bytes"])

    def __call__(self, name: str) -> Image.Image:
        shard, _, member = name.partition("/")
        path = os.path.join(self.folder, shard)
        with self._lock:
            if shard not in self._index:
                self._index[shard] = {m.name: (m.offset_data, m.size) for m in _tar_members(path) if m.isfile()}
            where = self._index[shard].get(member)
        if where is None:
            raise ImageError(f"no member {member!r} in {shard}")
        offset, size = where
        if size > self.max_bytes:
            raise ImageError(f"larger than {self.max_bytes} bytes")
        with open(path, "rb") as f:
            f.seek(offset)
            return decode_image(f.read(size))


# ---------------------------------------------------------------------------------------------------------
# Built-in collections

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
