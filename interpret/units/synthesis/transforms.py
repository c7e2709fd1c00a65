"""The random transforms applied to the image before every step, so that only patterns that excite the unit
wherever and however large they are survive (no pixel-exact adversarial noise).

Lucent's ``transform.standard_transforms`` in order: pad 12 px of grey, jitter by 0–7 px, scale by one of
0.90, 0.92, …, 1.10, rotate by one of −10…10° (0° five more times), jitter by 0–3 px; then the image is resized
to the model's input size (Lucent upsamples anything smaller than 224). Jitter and rotation keep the size (integer
shifts and a rotation about the centre, zeros outside, as kornia's warp in Lucent); padding and scaling change it
and the final resize undoes that. Random choices come from the caller's seeded ``torch.Generator`` (Lucent draws
from numpy's global state). Written here rather than imported: torch-lucent pins kornia ≤ 0.4.1 and test tools as
run-time requirements, which the app cannot carry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TransformSettings:
    pad: int = 12
    jitter: int = 8
    scale: float = 0.1
    rotate: int = 10
    jitter2: int = 4
    upsample: bool = True


def _choice(n: int, gen: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=gen))


def pad(x: torch.Tensor, w: int, value: float = 0.5) -> torch.Tensor:
    return F.pad(x, [w] * 4, mode="constant", value=value) if w > 0 else x


def shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move the image by (dx, dy) ≥ 0 pixels to the right and down, zeros coming in; same size."""
    if dx == 0 and dy == 0:
        return x
    h, w = x.shape[2:]
    return F.pad(x, [dx, 0, dy, 0])[:, :, :h, :w]


def jitter(x: torch.Tensor, d: int, gen: torch.Generator) -> torch.Tensor:
    if d <= 1:
        return x
    return shift(x, _choice(d, gen), _choice(d, gen))


def scale_values(s: float) -> list[float]:
    """Eleven scales 1 − s … 1 + s (Lucent's list for s = 0.1)."""
    return [1 + s * (i - 5) / 5 for i in range(11)]


def rescale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by ``factor`` (sides rounded up); a smaller image is padded back with zeros, as Lucent does."""
    h, w = x.shape[2:]
    nh, nw = math.ceil(factor * h - 1e-9), math.ceil(factor * w - 1e-9)
    if (nh, nw) == (h, w):
        return x
    y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=True)
    ph, pw = max(0, math.ceil((h - nh) / 2)), max(0, math.ceil((w - nw) / 2))
    return F.pad(y, [pw, pw, ph, ph]) if ph or pw else y


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotation about the image centre, bilinear, zeros outside; same size."""
    if degrees == 0:
        return x
    n, _, h, w = x.shape
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    # affine_grid works in [-1, 1] coordinates per axis: correct for the aspect ratio so a rotation stays one
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, x.shape[1], h, w], align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def rotation_angles(r: int) -> list[int]:
    """−r … r degrees, with 0 five more times (Lucent's list for r = 10)."""
    return list(range(-r, r + 1)) + [0] * 5 if r > 0 else [0]


def apply(x: torch.Tensor, t: TransformSettings, gen: torch.Generator,
          out_size: tuple[int, int] | None) -> torch.Tensor:
    """The whole chain on a batch N×3×H×W in [0, 1]; ``out_size``: the model's input size when upsampling."""
    x = pad(x, t.pad)
    x = jitter(x, t.jitter, gen)
    if t.scale > 0:
        vals = scale_values(t.scale)
        x = rescale(x, vals[_choice(len(vals), gen)])
    if t.rotate > 0:
        angles = rotation_angles(int(t.rotate))
        x = rotate(x, angles[_choice(len(angles), gen)])
    x = jitter(x, t.jitter2, gen)
    if t.upsample and out_size is not None and tuple(x.shape[2:]) != tuple(out_size):
        x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=True)
    return x
