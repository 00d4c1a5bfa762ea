"""Maps that know nothing of the model: what a method's map must beat to mean anything.

Each takes the batch ``x`` ``(N, 3, H, W)`` and returns ``(N, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import minmax

__all__ = ["random_map", "edge_map"]


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
