"""Scoring where a map points, against a known answer.

``pointing_game(maps, boxes, *, tolerance=0)``: is each map's maximum inside its object's box?
"""

from __future__ import annotations

import torch

__all__ = ["pointing_game"]


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor, *, tolerance: int = 0) -> torch.Tensor:
    """Hits ``(N,)`` bool: is each map's maximum inside its box (grown by ``tolerance`` pixels)?

    ``maps`` ``(N, H, W)``, ``boxes`` ``(N, 4)`` as ``(top, left, bottom, right)`` inclusive
    (Zhang et al. 2016 score the same way with a 15-pixel tolerance on 224-pixel images). Ties:
    the first maximum in row-major order counts.
    """
    n, _, w = maps.shape
    flat = maps.reshape(n, -1).argmax(dim=1).cpu()
    row, col = flat // w, flat % w
    top, left, bottom, right = (boxes[:, i].cpu() for i in range(4))
    return ((row >= top - tolerance) & (row <= bottom + tolerance)
            & (col >= left - tolerance) & (col <= right + tolerance))
