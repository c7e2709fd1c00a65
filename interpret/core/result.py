"""One result type for every attribution method, so the compare view and the metrics treat them alike."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Attribution:
    """An attribution map for one image and one target class.

    ``map`` is H×W float32 at the model's input resolution. ``signed`` says whether negative values carry
    meaning (diverging colour scale) or not (sequential). ``params`` are exactly the settings that reproduce it.
    ``extra`` holds method-specific arrays (per-channel gradients, LIME segments and weights, …).
    """

    method: str
    target: int
    map: np.ndarray
    signed: bool
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.map = np.asarray(self.map, dtype=np.float32)
        if self.map.ndim != 2:
            raise ValueError(f"attribution map must be 2-D, got shape {self.map.shape}")

