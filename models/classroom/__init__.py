"""Classroom models with ground truth: a small CNN trained on synthetic shapes whose object masks are known, in a
clean and a "Clever Hans" variant (one class nearly always carries a corner tag in training).

Registry contract: ``VARIANTS``, ``status(key)``, ``load(key)``, ``sample_images()``, ``collection(...)``,
``generate(...)``. The weights are trained by ``python -m models.classroom.train`` and shipped in ``weights/``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..handle import ModelHandle, Preprocess
from .dataset import CLASSES, CUE_CLASS, Dataset, generate, render, sample_scene, with_cue
from .net import ClassroomNet

__all__ = ["VARIANTS", "CLASSES", "CUE_CLASS", "Dataset", "generate", "status", "load", "sample_images",
           "samples", "collection", "clever_hans_pair", "weights_path", "metadata", "learning_curves", "Sample",
           "CleverHansPair", "accuracies", "accuracy_note", "format_accuracy"]

VARIANTS: dict[str, str] = {
    "classroom_clean": "Classroom CNN (shapes, clean)",
    "classroom_spurious": "Classroom CNN (shapes, Clever Hans)",
}
WEIGHTS_DIR = Path(__file__).parent / "weights"
SAMPLE_SEED = 3        # bundled samples and collection: test splits not used in training or its evaluation
COLLECTION_SEED = 2


def weights_path(key: str) -> Path:
    """Path of the shipped .safetensors file of a variant."""
    if key not in VARIANTS:
        raise KeyError(f"unknown classroom model {key!r}")
    return WEIGHTS_DIR / f"{key}.safetensors"


def metadata(key: str, path: Path | None = None) -> dict[str, str]:
    """The metadata written by the training script (classes, mean, std, widths, test accuracies, config)."""
    from safetensors import safe_open

    with safe_open(str(path or weights_path(key)), framework="pt") as f:
        return dict(f.metadata() or {})


def learning_curves(key: str) -> dict | None:
    """The training log of a variant: {"config", "epochs": [{epoch, train_loss, train_acc, val_loss, val_acc,
    seconds}], "test": {"test", "test_cue_flipped"}, …}, or None when absent."""
    p = WEIGHTS_DIR / f"{key}_curves.json"
    return json.loads(p.read_text()) if p.is_file() else None


def status(key: str) -> tuple[bool, str]:
    """(available, one-line note): weights present and their test accuracies, or why not."""
    p = weights_path(key)
    if not p.is_file():
        return False, f"weights {p.name} missing; train them with `python -m models.classroom.train`"
    try:
        m = metadata(key)
    except Exception as e:  # noqa: BLE001 — a broken file must not break the model list
        return False, f"weights {p.name} unreadable: {e}"
    return True, f"synthetic shapes, trained here ({p.name}); {accuracy_note(key, m)}"


def format_accuracy(acc: float, n: int) -> str:
    """One way to print an accuracy everywhere (app, localization table, README): percent and count of n."""
    return f"{100 * acc:.1f} % ({round(acc * n)}/{n})"


def accuracies(key: str, meta: dict[str, str] | None = None) -> dict[str, tuple[float, int]]:
    """{"test" | "cue_flipped": (accuracy, number of images)} on the held-out splits the training script
    evaluated once and stored in the weights' metadata (the single source of these numbers)."""
    m = meta or metadata(key)
    n = int(json.loads(m.get("config", "{}")).get("n_test", 0))
    return {"test": (float(m["test_acc"]), n), "cue_flipped": (float(m["test_cue_flipped_acc"]), n)}


def accuracy_note(key: str, meta: dict[str, str] | None = None) -> str:
    """The accuracies as one sentence that names the split sizes."""
    acc = accuracies(key, meta)
    (t, n), (f, nf) = acc["test"], acc["cue_flipped"]
    return (f"accuracy on {n} generated test images {format_accuracy(t, n)}, on {nf} cue-flipped ones "
            f"{format_accuracy(f, nf)}")


def load(key: str, path: Path | None = None) -> ModelHandle:
    """The eval-mode classroom CNN with its 64×64 preprocessing (normalisation from its training data).
    ``path`` overrides the shipped weights file (e.g. a freshly trained one)."""
    from safetensors.torch import load_file

    path = Path(path or weights_path(key))
    m = metadata(key, path)
    net = ClassroomNet(len(json.loads(m["classes"])), tuple(json.loads(m["widths"])))
    net.load_state_dict(load_file(str(path)), strict=True)
    mean, std = tuple(json.loads(m["mean"])), tuple(json.loads(m["std"]))
    notes = f"Trained on synthetic 64×64 shapes; {accuracy_note(key, m)}."
    if m.get("variant") == "spurious":
        notes += f" In its training data the class '{CUE_CLASS}' nearly always carries a corner tag."
    return ModelHandle(key=key, name=VARIANTS[key], net=net.eval(),
                       preprocess=Preprocess(resize=64, crop=64, mean=mean, std=std),
                       labels=json.loads(m["classes"]), source=str(path), family="classroom",
                       notes=notes)


@dataclass(frozen=True)
class Sample:
    """A bundled classroom image with its ground truth (object mask, cue mask)."""

    name: str
    image: Image.Image
    label: int
    mask: np.ndarray
    cue_mask: np.ndarray


@dataclass(frozen=True)
class CleverHansPair:
    """One scene rendered with and without the cue tag; ``mask`` is the object, ``cue_mask`` the tag."""

    with_cue: Image.Image
    without_cue: Image.Image
    label: int
    mask: np.ndarray
    cue_mask: np.ndarray


def clever_hans_pair(label: str | int = CUE_CLASS, corner: int = 1, seed: int = 0) -> CleverHansPair:
    """The same image with and without the tag (tag in ``corner``: 0 TL, 1 TR, 2 BL, 3 BR)."""
    idx = CLASSES.index(label) if isinstance(label, str) else int(label)
    scene = sample_scene(np.random.default_rng([SAMPLE_SEED, 7, idx, seed]), idx, corner)
    img_c, mask, cue_m = render(scene)
    img_n, _, _ = render(with_cue(scene, None))
    return CleverHansPair(Image.fromarray(img_c), Image.fromarray(img_n), idx, mask, cue_m)


def samples() -> list[Sample]:
    """One test image per class plus the Clever Hans demo images (cue class with/without the tag, another
    class with the tag)."""
    ds = generate("test", 60, SAMPLE_SEED)
    out = []
    for c, name in enumerate(CLASSES):
        i = int(np.flatnonzero((ds.labels == c) & ~ds.cue)[0])
        out.append(Sample(f"classroom: {name} #{i}", ds.pil(i), c, ds.masks[i], ds.cue_masks[i]))
    pair = clever_hans_pair(CUE_CLASS)
    out.append(Sample(f"classroom: {CUE_CLASS} with cue", pair.with_cue, pair.label, pair.mask, pair.cue_mask))
    out.append(Sample(f"classroom: {CUE_CLASS} without cue", pair.without_cue, pair.label, pair.mask,
                      np.zeros_like(pair.cue_mask)))
    other = clever_hans_pair("square")
    out.append(Sample("classroom: square with cue", other.with_cue, other.label, other.mask, other.cue_mask))
    return out


def sample_images() -> dict[str, Image.Image]:
    """Named classroom images for the sidebar's bundled samples (includes the Clever Hans cue/no-cue pair)."""
    return {s.name: s.image for s in samples()}


def collection(split: str = "test", n: int = 200, seed: int = COLLECTION_SEED) -> list[tuple[str, Image.Image]]:
    """``n`` generated images as (name, image) for the top-patch scan."""
    ds = generate(split, n, seed)
    return [(f"classroom: {ds.name(i)}", ds.pil(i)) for i in range(n)]
