"""The one rule for colour scales, shared by every figure (attributions, activations, kernels, sanity grids).

Signed data → the diverging scale, centred at 0 with a symmetric range, so zero is always the white middle and
equal magnitudes get equal intensity on both sides. Non-negative data → the sequential scale from 0, so black
always means zero. Data is signed when its producer declares it so (an attribution's ``signed`` flag, kernel
weights) or when any value is below 0 — a figure never picks a scale on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DIVERGING = "RdBu_r"  # blue < 0, white = 0, red > 0
SEQUENTIAL = "Inferno"  # black = 0 … yellow = the largest value
GAP_COLOUR = "#a6a6a6"  # behind mosaic gaps (NaN) of a diverging mosaic: white there would read as 0


def _finite(values: Any) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return a[np.isfinite(a)]


def is_signed(values: Any, declared: bool = False) -> bool:
    """True when the data is declared signed or holds any (finite) value below 0."""
    a = _finite(values)
    return bool(declared) or bool(a.size and a.min() < 0)


def abs_limit(values: Any) -> float:
    """The largest finite |value|, or 1 when there is none (an all-zero map still gets a valid range)."""
    a = _finite(values)
    m = float(np.abs(a).max()) if a.size else 0.0
    return m if m > 0 else 1.0


@dataclass(frozen=True)
class ColourScale:
    """A colour scale with its range: (-limit, limit) when signed, (0, limit) otherwise."""

    signed: bool
    limit: float

    @property
    def name(self) -> str:
        return DIVERGING if self.signed else SEQUENTIAL

    @property
    def low(self) -> float:
        return -self.limit if self.signed else 0.0

    def heatmap(self) -> dict[str, Any]:
        """Keyword arguments for ``go.Heatmap`` (zmin/zmax/zmid)."""
        kw: dict[str, Any] = dict(colorscale=self.name, zmin=self.low, zmax=self.limit)
        if self.signed:
            kw["zmid"] = 0.0
        return kw

    def axis(self) -> dict[str, Any]:
        """Keyword arguments for a layout ``coloraxis`` or a marker (cmin/cmax/cmid)."""
        kw: dict[str, Any] = dict(colorscale=self.name, cmin=self.low, cmax=self.limit)
        if self.signed:
            kw["cmid"] = 0.0
        return kw

    @property
    def gap_colour(self) -> str:
        """Background for NaN cells: white on the sequential scale (black is 0), grey on the diverging one."""
        return GAP_COLOUR if self.signed else "white"


def colour_scale(values: Any, declared: bool = False, limit: float | None = None) -> ColourScale:
    """The scale for ``values``: signedness from ``is_signed``; the range end ``limit`` (default the largest
    |value|, see ``abs_limit``) is where the colour saturates."""
    lim = float(limit) if limit is not None and limit > 0 else abs_limit(values)
    return ColourScale(is_signed(values, declared), lim)
