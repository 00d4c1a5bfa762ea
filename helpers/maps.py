"""Any method's output as one number per pixel, and as a picture.

Gradient methods give ``(N, 3, H, W)``, CAMs and occlusion ``(N, H, W)``. :func:`to_map` turns
either into a magnitude per pixel; :func:`as_grey` into the picture in [0, 1] that the lessons
show and that the sanity checks compare; :func:`as_color` and :func:`split_signs` keep the sign.
"""

from __future__ import annotations

import torch

from .common import EPS, minmax

__all__ = ["to_map", "as_grey", "as_color", "split_signs"]


def to_map(attribution: torch.Tensor, *, reduce: str = "max") -> torch.Tensor:
    """One magnitude per pixel: ``(N, C, H, W)`` -> |.| reduced over channels by ``"max"`` or
    ``"sum"`` ``(N, H, W)``; ``(N, H, W)`` -> |.|."""
    if attribution.ndim == 4:
        magnitude = attribution.abs()
        return magnitude.amax(dim=1) if reduce == "max" else magnitude.sum(dim=1)
    if attribution.ndim == 3:
        return attribution.abs()
    raise ValueError(f"expected maps (N, H, W) or (N, C, H, W), got shape "
                     f"{tuple(attribution.shape)}")


def as_color(grad: torch.Tensor, *, clip: float | None = 0.99) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, H, W, 3)`` in [0, 1]: a signed gradient as colour, zero at
    mid-grey 0.5. Each image is divided by its ``clip`` quantile of ``|grad|`` (Smilkov et al.
    cap at the 99th percentile: without the cap a few extreme pixels set the scale and the rest
    comes out uniform grey; ``None``: by the maximum) and clamped to [-1, 1]."""
    magnitude = grad.abs().flatten(1).float()
    cap = magnitude.amax(dim=1) if clip is None else torch.quantile(magnitude, clip, dim=1)
    scaled = grad / cap.to(grad.dtype).clamp_min(EPS).view(-1, 1, 1, 1)
    return (0.5 + 0.5 * scaled.clamp(-1, 1)).permute(0, 2, 3, 1)


def as_grey(grad: torch.Tensor, *, reduce: str = "max", clip: float | None = 0.99
            ) -> torch.Tensor:
    """``(N, 3, H, W)`` (or a map ``(N, H, W)``) -> ``(N, H, W)`` in [0, 1], what every
    comparison of maps in the course uses: |grad| reduced over colour channels by
    ``"max"`` (Simonyan et al.) or ``"sum"`` (a common variant), capped at its ``clip``
    quantile per image (Smilkov et al. cap at the 99th percentile, so that a few extreme pixels
    do not set the scale; ``clip=None``: no cap), then min-max per image."""
    if reduce not in ("max", "sum"):
        raise ValueError("reduce must be 'max' or 'sum'")
    magnitude = to_map(grad, reduce=reduce)
    if clip is not None:
        cap = torch.quantile(magnitude.flatten(1).float(), clip, dim=1).view(-1, 1, 1)
        magnitude = torch.minimum(magnitude, cap.to(magnitude.dtype))
    return minmax(magnitude)


def split_signs(grad: torch.Tensor, *, clip: float | None = 0.99
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 3, H, W)`` -> ``(positive, negative)``, each ``(N, H, W, 3)`` in [0, 1]: the parts
    of the gradient that raise / lower the score, each capped at its ``clip`` quantile per image
    (``None``: at its maximum) and divided by that cap."""
    def scale(t):
        flat = t.flatten(1).float()
        cap = flat.amax(dim=1) if clip is None else torch.quantile(flat, clip, dim=1)
        cap = cap.to(t.dtype).clamp_min(EPS).view(-1, 1, 1, 1)
        return torch.minimum(t / cap, torch.ones_like(t)).permute(0, 2, 3, 1)

    return scale(grad.clamp(min=0)), scale((-grad).clamp(min=0))
