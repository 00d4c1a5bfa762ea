"""Maps that know nothing of the model: what a method's map must beat to mean anything.

Each takes the batch ``x`` ``(N, 3, H, W)`` and returns ``(N, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from .common import minmax

__all__ = ["random_map", "edge_map", "centre_map", "salient_blob_map"]


def random_map(x: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """A map that knows nothing: uniform noise ``(N, H, W)`` from a seeded generator."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return torch.rand((x.shape[0], *x.shape[-2:]), generator=generator, device=x.device,
                      dtype=x.dtype)


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """A map that knows no model: the Sobel gradient magnitude of the channel-mean image,
    ``(N, C, H, W)`` -> ``(N, H, W)`` in [0, 1] (replicated borders)."""
    grey = F.pad(x.mean(dim=1, keepdim=True), [1, 1, 1, 1], mode="replicate")
    sobel = torch.tensor([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=x.dtype, device=x.device)
    gx = F.conv2d(grey, sobel.view(1, 1, 3, 3))
    gy = F.conv2d(grey, sobel.t().reshape(1, 1, 3, 3))
    return minmax(torch.sqrt(gx**2 + gy**2)[:, 0])


def centre_map(x: torch.Tensor) -> torch.Tensor:
    """A map that only knows photographers centre their subject: a Gaussian bump at the image's
    centre (standard deviation a quarter of each side), the same for every image ``(N, H, W)``."""
    height, width = x.shape[-2:]
    rows = (torch.arange(height, dtype=x.dtype, device=x.device) - (height - 1) / 2) / (height / 4)
    cols = (torch.arange(width, dtype=x.dtype, device=x.device) - (width - 1) / 2) / (width / 4)
    bump = torch.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / 2)
    return bump.expand(x.shape[0], height, width).clone()


def salient_blob_map(x: torch.Tensor, *, sigma: float = 0.03) -> torch.Tensor:
    """A map that knows no model but finds "the thing that stands out": each pixel's colour
    distance from the image's median colour, blurred by a Gaussian of ``sigma`` times the shorter
    side, min-max per image. ``(N, C, H, W)`` -> ``(N, H, W)`` in [0, 1]. On an object against a
    plain or smooth background it points at the object without looking at any class."""
    median = x.flatten(2).median(dim=2).values[:, :, None, None]
    distance = (x - median).norm(dim=1, keepdim=True)
    spread = max(0.5, sigma * min(x.shape[-2:]))
    kernel = 2 * round(3 * spread) + 1
    return minmax(gaussian_blur(distance, kernel_size=kernel, sigma=spread)[:, 0])
