"""How the optimised image is parameterised (Olah et al., *Feature Visualization*, 2017).

A parameterisation owns the tensors the optimiser changes (``.params``) and turns them into an
RGB batch ``(N, 3, H, W)`` with values in [0, 1] (``.rgb()``). The same objective, optimised in
a different parameterisation, gives a very different picture:

- ``PixelImage``: the pixels themselves, clamped to [0, 1] after every step (the naive recipe of
  the first papers, and deep dream's photo);
- ``FFTImage``: the image's 2-D Fourier spectrum, each frequency scaled by ``1 / frequency``,
  colours decorrelated through the square root of ImageNet's colour covariance, and a sigmoid
  that keeps every value in (0, 1).

Why the spectrum: a gradient step on pixels is dominated by high frequencies (a pixel's gradient
hardly depends on its neighbours'), so pixel ascent paints fine, noisy texture. Scaling frequency
``f`` by ``1/f`` gives every frequency about the same effect per step: natural images have about
that spectrum. Why decorrelated colour: in photos the red, green and blue values of a pixel move
together; a step in decorrelated space changes brightness and hue the way photos do, instead of
painting saturated single-channel speckle.
"""

from __future__ import annotations

import copy

import torch

__all__ = [
    "COLOR_CORRELATION_SQRT",
    "ImageParameterization",
    "PixelImage",
    "FFTImage",
    "fft_frequencies",
    "decorrelate_colors",
    "to_rgb",
    "from_rgb",
]

# Square root of ImageNet's 3 x 3 RGB covariance (from its eigen-decomposition), columns scaled so
# the largest has norm 1. The numbers are lucid's (Olah et al. 2017), measured on ImageNet photos.
_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                      [0.27, 0.00, -0.05],
                      [0.27, -0.09, 0.03]])
COLOR_CORRELATION_SQRT = _SQRT / _SQRT.norm(dim=0).max()

# The inverse Fourier transform of a spectrum of N(0, sd) values has a spread of about 4 x sd x
# (mean scale); lucid divides by 4 so that the starting image is a faint, nearly grey one.
FFT_DIVISOR = 4.0


def _mean_std(model, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(model.mean, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    return mean, std


def from_rgb(model, rgb: torch.Tensor) -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` in [0, 1] -> the model's input space ``(rgb - mean) / std``."""
    mean, std = _mean_std(model, rgb)
    return (rgb - mean) / std


def to_rgb(model, x: torch.Tensor) -> torch.Tensor:
    """The model's input space -> RGB in [0, 1] (clamped), the inverse of ``from_rgb``."""
    mean, std = _mean_std(model, x)
    return (x * std + mean).clamp(0, 1)


def decorrelate_colors(t: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` in decorrelated colour space -> RGB (before the sigmoid):
    ``rgb[n, :, y, x] = COLOR_CORRELATION_SQRT @ t[n, :, y, x]``."""
    return torch.einsum("dc,nchw->ndhw", COLOR_CORRELATION_SQRT.to(t), t)


def fft_frequencies(height: int, width: int) -> torch.Tensor:
    """``(height, width // 2 + 1)``: the spatial frequency (cycles per pixel) of each entry of
    ``torch.fft.rfft2`` of a ``height x width`` image."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return (fx ** 2 + fy ** 2).sqrt()


class ImageParameterization:
    """Base: ``params`` (tensors to optimise) and ``rgb()`` -> ``(N, 3, H, W)`` in [0, 1]."""

    params: list[torch.Tensor]

    def rgb(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self) -> None:
        """Called after every optimiser step (a pixel image clamps itself here)."""

    def split(self, size: int) -> list[ImageParameterization]:
        """Independent parameterisations of at most ``size`` images each, with copies of these
        parameters (the same start, optimised in smaller batches to save memory)."""
        parts = []
        for chunk in zip(*(p.detach().split(size) for p in self.params)):
            part = copy.copy(self)
            part._set_params([c.clone().requires_grad_(True) for c in chunk])
            parts.append(part)
        return parts

    def _set_params(self, params: list[torch.Tensor]) -> None:
        raise NotImplementedError


class PixelImage(ImageParameterization):
    """Pixels in [0, 1] optimised directly; clamped after every step.

    ``start``: an RGB batch ``(N, 3, H, W)`` in [0, 1] (a photo for deep dream), or ``None`` for
    grey plus small noise of standard deviation ``sd`` drawn from ``generator`` (needs ``shape``).
    """

    def __init__(self, start: torch.Tensor | None = None, *, shape: tuple[int, ...] | None = None,
                 sd: float = 0.01, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> None:
        if start is None:
            if shape is None:
                raise ValueError("PixelImage needs a start image or a shape")
            noise = torch.randn(shape, generator=generator) * sd
            start = (0.5 + noise).to(device)
        self.pixels = start.detach().clone().clamp(0, 1).requires_grad_(True)
        self.params = [self.pixels]

    def rgb(self) -> torch.Tensor:
        return self.pixels

    def _set_params(self, params: list[torch.Tensor]) -> None:
        (self.pixels,) = self.params = params

    @torch.no_grad()
    def after_step(self) -> None:
        self.pixels.clamp_(0, 1)


class FFTImage(ImageParameterization):
    """An image parameterised by its scaled Fourier spectrum (and decorrelated colours).

    ``rgb() = sigmoid(C @ irfft2(spectrum * scale) / 4)`` with ``scale = 1 / max(f, 1 / max(H,
    W)) ** decay_power`` per frequency ``f`` and ``C`` = ``COLOR_CORRELATION_SQRT`` (identity with
    ``decorrelate=False``). The spectrum ``(N, 3, H, W // 2 + 1)`` (complex, stored as real and
    imaginary parts in ``self.spectrum`` ``(N, 3, H, W // 2 + 1, 2)``) starts as N(0, ``sd``)
    noise from ``generator``.
    """

    def __init__(self, shape: tuple[int, int, int, int], *, sd: float = 0.01,
                 decorrelate: bool = True, decay_power: float = 1.0,
                 generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> None:
        n, channels, height, width = shape
        self.size, self.decorrelate = (height, width), decorrelate
        freqs = fft_frequencies(height, width)
        self.scale = (1.0 / freqs.clamp_min(1.0 / max(height, width)) ** decay_power).to(device)
        spectrum = torch.randn(n, channels, *freqs.shape, 2, generator=generator) * sd
        self.spectrum = spectrum.to(device).requires_grad_(True)
        self.params = [self.spectrum]

    def _set_params(self, params: list[torch.Tensor]) -> None:
        (self.spectrum,) = self.params = params

    def rgb(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / FFT_DIVISOR
        if self.decorrelate:
            image = decorrelate_colors(image)
        return torch.sigmoid(image)
