"""How a synthesized image is parameterised: the tensor the optimiser changes, and the map from it to a batch of
images in [0, 1].

Two parameterisations, as in Lucid/Lucent (``param.image``): plain pixels, or a Fourier spectrum whose amplitudes
are scaled by 1/f^decay so that smooth images are easy to reach and pixel noise is hard (Olah et al. 2017,
"Feature Visualization"). Either may be taken in ImageNet's decorrelated colour space (the square root of its
colour correlation matrix), and a sigmoid squashes the result into [0, 1]. The starting values are drawn on the CPU
by the caller's seeded generator and moved to the device, so one seed means one start image on every device.
"""
from __future__ import annotations

import math

import torch
import torchvision.transforms.functional as TF

from interpret.core.errors import InputError

# Square root of ImageNet's RGB colour correlation (columns: decorrelated components), the constant Lucid/Lucent
# use for "decorrelated" images; scaled so the largest column has unit norm.
_COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
FOURIER_DIVISOR = 4.0  # Lucent's "magic" divisor of the inverse FFT (keeps the start image near grey)


def color_matrix(device: torch.device | str = "cpu") -> torch.Tensor:
    m = torch.tensor(_COLOR_SQRT, dtype=torch.float32, device=device)
    return m / m.norm(dim=0).max()


class ImageParam:
    """Parameters → a batch of images N×3×H×W in [0, 1]. ``p`` is the leaf tensor to optimise."""

    def __init__(self, kind: str, batch: int, size: int, gen: torch.Generator, device: torch.device | str = "cpu",
                 sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True) -> None:
        if batch < 1 or size < 2:
            raise InputError(f"a batch needs at least one image of at least 2×2 pixels (got {batch}, {size})")
        self.kind, self.h, self.w, self.decorrelate = kind, int(size), int(size), bool(decorrelate)
        self.color = color_matrix(device)
        if kind == "pixel":
            self.p = (torch.randn(batch, 3, size, size, generator=gen) * sd).to(device).requires_grad_(True)
        elif kind == "fourier":
            fy = torch.fft.fftfreq(size)[:, None]
            fx = torch.fft.rfftfreq(size)[None, :]
            self.freq = torch.sqrt(fx ** 2 + fy ** 2).to(device)
            scale = 1.0 / torch.clamp(self.freq, min=1.0 / size) ** decay_power
            self.scale = scale[None, None, :, :, None]
            self.p = (torch.randn(batch, 3, size, size // 2 + 1, 2, generator=gen) * sd).to(device)
            self.p.requires_grad_(True)
        else:
            raise InputError(f"unknown parameterisation {kind!r}; use 'fourier' or 'pixel'")

    def raw(self) -> torch.Tensor:
        """The image before colour mixing and sigmoid."""
        if self.kind == "pixel":
            return self.p
        spec = torch.view_as_complex((self.p * self.scale).contiguous())
        return torch.fft.irfft2(spec, s=(self.h, self.w), norm="ortho") / FOURIER_DIVISOR

    def __call__(self) -> torch.Tensor:
        x = self.raw()
        if self.decorrelate:
            x = torch.einsum("nchw,dc->ndhw", x, self.color)
        return torch.sigmoid(x)

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        """Gaussian blur of the pre-sigmoid image: a spatial convolution for pixels, the matching frequency
        response exp(−2π²σ²f²) on the spectrum (the same operation: the map to the image is linear)."""
        if self.kind == "pixel":
            k = 2 * math.ceil(3 * sigma) + 1
            self.p.copy_(TF.gaussian_blur(self.p, [k, k], [sigma, sigma]))
        else:
            self.p.mul_(torch.exp(-2 * math.pi ** 2 * sigma ** 2 * self.freq ** 2)[None, None, :, :, None])
