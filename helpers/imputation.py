"""How removed pixels are filled in by the causal metrics: RISE's blur and ROAD's imputation.

- :func:`rise_blur`: the Gaussian blur (kernel 11, sigma 5) that RISE's insertion starts from
  (Petsiuk et al. 2018);
- :func:`noisy_linear_imputation`: ROAD's fill (Rong et al. 2022): each missing pixel the mean of
  its neighbours, so that a curve measures the removed *information*, not the shock of
  out-of-distribution holes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import EPS

__all__ = ["rise_blur", "noisy_linear_imputation", "BLUR_KERNEL", "BLUR_SIGMA", "ROAD_NOISE"]

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion start: a strong blur that keeps colours
ROAD_NOISE = 0.01  # ROAD's noise on imputed pixels (absolute, in the model's input space)


def rise_blur(x: torch.Tensor, *, kernel: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA
              ) -> torch.Tensor:
    """Gaussian blur of each channel, ``(N, C, H, W)`` -> same; reflected borders (RISE pads
    with zeros, which darkens the border; reflecting keeps the colours)."""
    axis = torch.arange(kernel, dtype=x.dtype, device=x.device) - (kernel - 1) / 2
    g = torch.exp(-axis**2 / (2 * sigma**2))
    g = g / g.sum()
    channels = x.shape[1]
    padded = F.pad(x, [kernel // 2] * 4, mode="reflect")
    rows = F.conv2d(padded, g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def _neighbour_sum(t: torch.Tensor) -> torch.Tensor:
    """ROAD's weighted sum of the 8 neighbours (direct 1/6, diagonal 1/12; outside = 0), by
    shifted slices (several times faster than a depthwise convolution on a CPU)."""
    p = F.pad(t, (1, 1, 1, 1))
    h, w = t.shape[-2:]
    diagonal = p[..., :h, :w] + p[..., :h, 2:] + p[..., 2:, :w] + p[..., 2:, 2:]
    direct = p[..., 1:h + 1, :w] + p[..., 1:h + 1, 2:] + p[..., :h, 1:w + 1] + p[..., 2:, 1:w + 1]
    return (diagonal + 2 * direct) / 12


def noisy_linear_imputation(x: torch.Tensor, known: torch.Tensor, *, noise: float = ROAD_NOISE,
                            generator: torch.Generator | None = None, tol: float = 1e-4,
                            max_iter: int = 500) -> torch.Tensor:
    """ROAD's imputation (Rong et al. 2022): each missing pixel becomes the weighted mean of its
    8 neighbours (direct 1/6, diagonal 1/12; neighbours outside the image left out), known
    pixels stay, plus Gaussian noise of std ``noise`` on the imputed ones.

    The means form a sparse symmetric positive-definite system (a discrete Laplace equation on
    the holes), solved by conjugate gradients with 3 x 3 convolutions, all images and channels
    at once, started from the solution at half the resolution (so that large holes need tens of
    iterations, not thousands). An image with no known pixel gets its own mean colour.
    ``x`` ``(N, C, H, W)``, ``known`` ``(N, H, W)`` bool -> ``(N, C, H, W)``.
    """
    known = known.to(torch.bool).expand(x.shape[0], *x.shape[-2:])[:, None]
    filled = _solve_holes(x, known, tol, max_iter)
    if noise:
        filled = filled + noise * torch.randn(x.shape, generator=generator, device=x.device,
                                              dtype=x.dtype)
    return torch.where(known, x, filled)


def _solve_holes(x: torch.Tensor, known: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """The noise-free imputation; ``known`` ``(N, 1, H, W)`` bool."""
    missing = (~known).to(x.dtype)
    guess = torch.zeros_like(x)
    if min(x.shape[-2:]) >= 16:  # start from the half-resolution solution
        share = F.avg_pool2d(known.to(x.dtype), 2, ceil_mode=True)
        coarse_x = F.avg_pool2d(x * known, 2, ceil_mode=True) / share.clamp_min(EPS)
        coarse = _solve_holes(coarse_x, share > 0, tol, max_iter)
        guess = missing * F.interpolate(coarse, size=x.shape[-2:], mode="bilinear",
                                        align_corners=False)
    neighbour_sum = _neighbour_sum
    weight = neighbour_sum(torch.ones_like(x))  # sum of in-image neighbour weights

    def apply(v):  # A v on the missing pixels (v is 0 on known pixels)
        return missing * (weight * v - neighbour_sum(v))

    b = missing * neighbour_sum(x * known)
    v = guess
    r = b - apply(v)
    p = r.clone()
    rr = (r * r).sum(dim=(1, 2, 3), keepdim=True)
    limit = tol**2 * (b * b).sum(dim=(1, 2, 3), keepdim=True).clamp_min(EPS)
    for _ in range(max_iter):
        if bool((rr <= limit).all()):
            break
        ap = apply(p)
        alpha = rr / (p * ap).sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
        v = v + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum(dim=(1, 2, 3), keepdim=True)
        p = r + rr_new / rr.clamp_min(1e-30) * p
        rr = rr_new
    none_known = ~known.flatten(1).any(dim=1)
    if none_known.any():  # no neighbour information at all: the image's mean colour
        v[none_known] = x[none_known].mean(dim=(2, 3), keepdim=True).expand_as(x[none_known])
    return torch.where(known, x, v)
