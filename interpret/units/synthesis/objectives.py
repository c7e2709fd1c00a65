"""What a synthesized image maximises: channels, single units (neurons), class logits, directions in a layer's
channel space and the diversity of a batch, combined with weights — ``channel(L, 3) + 0.5 * channel(L, 7)``,
``logit("espresso") - logit("cup")``.

Modelled on Lucent's ``optvis.objectives`` (small composable terms), with two differences: values are to be
*maximised* (Lucent's are losses), and an objective is a flat weighted sum of plain, hashable terms rather than
nested closures, so a page can show each term's curve and a cache can key on it. ``parse`` reads the same algebra
from text (the UI's text field and the CLI).

Each term reads activations that the render loop captured for it (``layers``) or the network's output (logits);
``Term.value`` gets them as ``acts[(layer, call_index)]`` — N×C×H×W (a 2-D output is treated as N×C×1×1) — and
returns a scalar tensor.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from interpret.core.errors import InputError

__all__ = ["Term", "Objective", "channel", "neuron", "logit", "direction", "diversity", "parse", "KINDS",
           "diversity_value"]

KINDS = ("channel", "neuron", "logit", "direction", "diversity")


@dataclass(frozen=True)
class Term:
    """One weighted term. ``batch``: the image of the batch it applies to (None: the mean over all images).
    ``unit``: (y, x) of a neuron (None: the centre of the map). ``vector``: a direction's channel weights."""

    kind: str
    layer: str | None = None
    channel: int = 0
    unit: tuple[int, int] | None = None
    target: int | str = 0
    vector: tuple[float, ...] | None = None
    batch: int | None = None
    call_index: int = -1
    weight: float = 1.0

    def describe(self, labels: Sequence[str] | None = None) -> str:
        """The term without its weight, in words (class names when ``labels`` are given)."""
        if self.kind == "logit":
            name = self.target
            if labels is not None and isinstance(self.target, (int, np.integer)) and 0 <= int(self.target) < len(labels):
                name = labels[int(self.target)]
            what = f"class {name}"
        elif self.kind == "channel":
            what = f"{self.layer} channel {self.channel}"
        elif self.kind == "neuron":
            where = f"unit {tuple(self.unit)}" if self.unit is not None else "centre unit"
            what = f"{self.layer} channel {self.channel} {where}"
        elif self.kind == "direction":
            what = f"direction in {self.layer}"
        else:
            what = f"diversity at {self.layer}"
        return what if self.batch is None else f"{what} [image {self.batch}]"

    # ---- evaluation ----------------------------------------------------------------------------------------

    def value(self, acts: Mapping[tuple[str, int], torch.Tensor], logits: torch.Tensor | None,
              class_index: int | None = None) -> torch.Tensor:
        """This term's (unweighted) value on the captured activations; ``class_index`` is the resolved target of
        a logit term."""
        if self.kind == "logit":
            if logits is None:
                raise InputError("a class objective needs the network's output")
            out = logits.reshape(logits.shape[0], -1)
            return self._over_batch(out[:, class_index])
        a = _as_maps(acts[(self.layer, self.call_index)])
        if self.kind == "diversity":
            return diversity_value(a)
        if self.kind == "direction":
            v = torch.tensor(self.vector, dtype=a.dtype, device=a.device)
            if v.numel() != a.shape[1]:
                raise InputError(f"the direction has {v.numel()} entries but {self.layer} has {a.shape[1]} channels")
            cos = F.cosine_similarity(a, v.reshape(1, -1, 1, 1), dim=1, eps=1e-8)  # N×H×W
            return self._over_batch(cos.flatten(1).mean(1))
        if not 0 <= self.channel < a.shape[1]:
            raise InputError(f"channel {self.channel} out of range 0..{a.shape[1] - 1} for {self.layer}")
        m = a[:, self.channel]  # N×H×W
        if self.kind == "channel":
            return self._over_batch(m.flatten(1).mean(1))
        y, x = self.unit if self.unit is not None else (m.shape[1] // 2, m.shape[2] // 2)
        if not (0 <= y < m.shape[1] and 0 <= x < m.shape[2]):
            raise InputError(f"unit ({y}, {x}) is outside the {m.shape[1]}×{m.shape[2]} map of {self.layer}")
        return self._over_batch(m[:, y, x])

    def _over_batch(self, per_image: torch.Tensor) -> torch.Tensor:
        if self.batch is None:
            return per_image.mean()
        if not -per_image.shape[0] <= self.batch < per_image.shape[0]:
            raise InputError(f"image {self.batch} of a term does not exist in a batch of {per_image.shape[0]}")
        return per_image[self.batch]


def _as_maps(a: torch.Tensor) -> torch.Tensor:
    return a if a.dim() == 4 else a.reshape(a.shape[0], a.shape[1] if a.dim() > 1 else 1, 1, 1)


def diversity_value(a: torch.Tensor) -> torch.Tensor:
    """Mean over ordered pairs i ≠ j of 1 − cos(G_i, G_j), G_i = the Gram matrix of image i's channels (C×C of
    the flattened maps). 0 when every image has the same Gram matrix (up to scale), larger when the images use
    different channel combinations. Lucent's ``objectives.diversity`` is −Σ_{i≠j} cos / N: the same gradient
    direction; a Lucent weight λ is ours λ·(N − 1)."""
    a = _as_maps(a)
    n = a.shape[0]
    if n < 2:
        raise InputError("diversity compares the images of a batch: it needs a batch of at least 2")
    flat = a.flatten(2)  # N×C×HW
    gram = flat @ flat.transpose(1, 2)  # N×C×C
    g = F.normalize(gram.flatten(1), dim=1)  # each Gram matrix as a unit vector
    cos = g @ g.T  # N×N
    off = cos.sum() - cos.diagonal().sum()
    return 1.0 - off / (n * (n - 1))


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms (to maximise). Build with the constructors below and + − ×."""

    terms: tuple[Term, ...]

    def __add__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __radd__(self, other):  # sum([...]) starts from 0
        if other == 0:
            return self
        return NotImplemented

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __sub__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __mul__(self, w: float) -> "Objective":
        if isinstance(w, Objective) or not isinstance(w, (int, float, np.number)):
            return NotImplemented
        return Objective(tuple(replace(t, weight=t.weight * float(w)) for t in self.terms))

    __rmul__ = __mul__

    @property
    def layers(self) -> set[tuple[str, int]]:
        """(layer, call index) pairs whose outputs the terms read."""
        return {(t.layer, t.call_index) for t in self.terms if t.kind != "logit"}

    @property
    def needs_logits(self) -> bool:
        return any(t.kind == "logit" for t in self.terms)

    def describe(self, labels: Sequence[str] | None = None) -> str:
        out = ""
        for i, t in enumerate(self.terms):
            w = t.weight
            sign = "−" if w < 0 else "+"
            mag = abs(w)
            body = t.describe(labels) if mag == 1 else f"{_num(mag)} × {t.describe(labels)}"
            out += (("−" if w < 0 else "") + body) if i == 0 else f" {sign} {body}"
        return out or "(nothing)"


def _num(w: float) -> str:
    return f"{w:g}"


def _one(term: Term) -> Objective:
    return Objective((term,))


def channel(layer: str, n: int, batch: int | None = None, call_index: int = -1) -> Objective:
    """The mean of channel ``n``'s map at ``layer`` (Lucent's ``channel``)."""
    return _one(Term("channel", layer, int(n), batch=batch, call_index=call_index))


def neuron(layer: str, n: int, y: int | None = None, x: int | None = None, batch: int | None = None,
           call_index: int = -1) -> Objective:
    """One unit of channel ``n`` at (y, x); the centre of the map by default (Lucent's ``neuron``)."""
    unit = None if y is None and x is None else (int(y or 0), int(x or 0))
    return _one(Term("neuron", layer, int(n), unit=unit, batch=batch, call_index=call_index))


def logit(target: int | str, batch: int | None = None) -> Objective:
    """A class's pre-softmax score (index or label), as Simonyan et al. advise for class images."""
    t = int(target) if isinstance(target, (int, np.integer)) else target
    return _one(Term("logit", target=t, batch=batch))


def direction(layer: str, vector: Iterable[float], batch: int | None = None, call_index: int = -1) -> Objective:
    """The mean over positions of the cosine similarity between the layer's channel vector and ``vector`` (C,)
    (Lucent's ``direction``)."""
    v = tuple(float(x) for x in np.asarray(list(vector) if not isinstance(vector, np.ndarray) else vector).ravel())
    if not v or not all(math.isfinite(x) for x in v):
        raise InputError("a direction needs a finite, non-empty vector")
    if not any(v):
        raise InputError("a direction cannot be the zero vector")
    return _one(Term("direction", layer, vector=v, batch=batch, call_index=call_index))


def diversity(layer: str, call_index: int = -1) -> Objective:
    """How different the images of the batch are at ``layer`` (``diversity_value``)."""
    return _one(Term("diversity", layer, call_index=call_index))


# ---- text form -----------------------------------------------------------------------------------------------

_TERM = re.compile(r"^\s*(?:(?P<w>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)\s*[*×]\s*)?"
                   r"(?P<name>[A-Za-z_]+)\s*\((?P<args>.*)\)\s*$", re.S)


def _split_top(text: str, seps: str) -> list[tuple[str, str]]:
    """Split at characters of ``seps`` outside parentheses and quotes; returns (separator before, piece)."""
    out, depth, quote, start, sep = [], 0, None, 0, "+"
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'" and (i == 0 or not text[i - 1].isalnum()):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InputError("unbalanced parentheses in the objective")
        elif ch in seps and depth == 0 and not (ch in "+-" and _in_exponent(text, i)):
            out.append((sep, text[start:i]))
            sep, start = ch, i + 1
    if depth or quote:
        raise InputError("unbalanced parentheses or quotes in the objective")
    out.append((sep, text[start:]))
    return out


def _in_exponent(text: str, i: int) -> bool:
    """Whether the sign at ``i`` belongs to a number's exponent (``1e-3``)."""
    return i >= 2 and text[i - 1] in "eE" and text[i - 2].isdigit()


def _int(s: str, what: str) -> int:
    try:
        return int(s.strip())
    except ValueError:
        raise InputError(f"{what} must be a whole number, not {s.strip()!r}") from None


def _unquote(s: str) -> str:
    s = s.strip()
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'" else s


def parse(text: str, vectors: Mapping[str, np.ndarray] | None = None) -> Objective:
    """An objective from text, e.g. ``"channel(features.6, 3) + 0.5*channel(features.6, 7) - logit(espresso)"``.

    Terms: ``channel(layer, n)``, ``neuron(layer, n[, y, x])``, ``logit(class label or index)``,
    ``direction(layer, name)`` (``name`` a key of ``vectors``), ``diversity(layer)``; each may take a trailing
    ``image=i`` argument (one image of the batch) and a leading ``w *`` weight; terms joined by + and −.
    Names are checked against a network only when it runs (``synthesize``)."""
    vectors = dict(vectors or {})
    text = (text or "").strip()
    if not text:
        raise InputError("the objective is empty: write e.g. channel(layer, 3) or logit(class)")
    pieces = _split_top(text, "+-")
    total: Objective | None = None
    pending = 1.0
    for sep, piece in pieces:
        sign = -1.0 if sep == "-" else 1.0
        if not piece.strip():
            # "a - -b", or a leading sign: fold the sign into the next term
            pending *= sign
            continue
        m = _TERM.match(piece)
        if not m:
            raise InputError(f"cannot read {piece.strip()!r}: write e.g. 0.5*channel(layer, 3)")
        w = pending * sign * float(m.group("w") or 1.0)
        pending = 1.0
        term = _term(m.group("name").lower(), m.group("args"), vectors)
        total = term * w if total is None else total + term * w
    if total is None:
        raise InputError("the objective has no term")
    return total


def _term(name: str, args_text: str, vectors: Mapping[str, np.ndarray]) -> Objective:
    args = [a.strip() for _, a in _split_top(args_text, ",")]
    batch = None
    if args and args[-1].replace(" ", "").startswith("image="):
        batch = _int(args.pop().split("=", 1)[1], "image")
    if name not in KINDS:
        raise InputError(f"unknown term {name!r}; use one of {', '.join(KINDS)}")
    if name == "logit":
        if len(args) != 1 or not args[0]:
            raise InputError("logit takes one class: logit(espresso) or logit(967)")
        target = _unquote(args[0])
        return logit(int(target) if target.isdigit() else target, batch=batch)
    if not args or not args[0]:
        raise InputError(f"{name} needs a layer name first")
    layer = _unquote(args[0])
    if name == "channel":
        if len(args) != 2:
            raise InputError("channel takes a layer and a channel: channel(features.6, 3)")
        return channel(layer, _int(args[1], "the channel"), batch=batch)
    if name == "neuron":
        if len(args) not in (2, 4):
            raise InputError("neuron takes a layer, a channel and optionally y, x: neuron(features.6, 3, 4, 4)")
        y, x = (_int(args[2], "y"), _int(args[3], "x")) if len(args) == 4 else (None, None)
        return neuron(layer, _int(args[1], "the channel"), y, x, batch=batch)
    if name == "direction":
        if len(args) != 2:
            raise InputError("direction takes a layer and a named vector: direction(features.6, image)")
        key = _unquote(args[1])
        if key not in vectors:
            known = ", ".join(sorted(vectors)) or "none"
            raise InputError(f"no vector named {key!r} for direction (known: {known})")
        return direction(layer, vectors[key], batch=batch)
    if len(args) != 1:
        raise InputError("diversity takes one layer: diversity(features.6)")
    if batch is not None:
        raise InputError("diversity compares all images of the batch; it takes no image=")
    return diversity(layer)
