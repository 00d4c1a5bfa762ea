"""Occlusion (Zeiler & Fergus 2014): an attribution from the model's answers alone.

Calling convention as everywhere: ``occlusion(model, x, target=None, *, knobs)`` with ``x`` a batch
``(N, 3, H, W)`` in the model's input space; the model runs in eval mode without gradients and
leaves the call exactly as it came.
"""

from __future__ import annotations

import math

import torch

from .common import (
    Target,
    check_batch,
    check_int,
    evaluating,
    fixed_targets,
    forward_in_chunks,
    unwrap,
)

__all__ = ["occlusion"]


def occlusion(model, x: torch.Tensor, target: Target = None, *, window: int = 16,
              stride: int = 8, baseline: float | torch.Tensor = 0.0, batch_size: int = 8,
              progress: bool = True) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): how much the class score drops when a patch is hidden.

    A ``window`` x ``window`` patch (all colour channels) is set to ``baseline`` at the positions
    ``0, stride, 2 stride, ...`` (``ceil((H - window) / stride) + 1`` of them per axis; the last
    one may stick out and is clipped, as in captum). Each pixel gets the mean over the patches
    that cover it of ``y_c(x) - y_c(x with the patch hidden)``, ``y_c`` the class *logit*:
    positive = hiding it hurts the class. ``baseline`` 0.0 is the mean colour for models
    normalised with the dataset mean (grey for Lite0); a tensor broadcastable to ``x`` gives a
    baseline image. Occluded copies run ``batch_size`` at a time (8: the fastest per image on 2
    CPU cores for Lite0), in channels-last memory order. Equals
    ``captum.attr.Occlusion(model).attribute(x, sliding_window_shapes=(3, w, w),
    strides=(3, s, s), baselines=baseline, target=c)[:, 0]``.

    ``(N, 3, H, W)`` -> ``(N, H, W)``, signed.
    Example: ``occlusion(model, x, "tabby", window=32, stride=16)``.
    """
    check_batch(x)
    height, width = x.shape[-2:]
    check_int("window", window, high=min(height, width))
    check_int("stride", stride)
    fill = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    rows = range(0, stride * math.ceil((height - window) / stride) + 1, stride)
    cols = range(0, stride * math.ceil((width - window) / stride) + 1, stride)
    patches = [(r, c) for r in rows for c in cols]
    covered = torch.zeros(height, width, dtype=x.dtype, device=x.device)
    for r, c in patches:
        covered[r:r + window, c:c + window] += 1
    classes = fixed_targets(model, x, target)
    net = unwrap(model)
    drops = torch.zeros(x.shape[0], height, width, dtype=x.dtype, device=x.device)
    with evaluating(net), torch.no_grad():
        clean = net(x).gather(1, classes[:, None])[:, 0]
    jobs = [(i, r, c) for i in range(x.shape[0]) for r, c in patches]

    def hidden(chunk):  # the images of a chunk, each with its patch set to the baseline
        batch = x[[i for i, _, _ in chunk]].clone()
        for j, (i, r, c) in enumerate(chunk):
            batch[j, :, r:r + window, c:c + window] = fill[i, :, r:r + window, c:c + window]
        return batch

    for chunk, logits in forward_in_chunks(net, jobs, hidden, batch_size=batch_size,
                                           desc="occlusion", progress=progress):
        for j, (i, r, c) in enumerate(chunk):
            drops[i, r:r + window, c:c + window] += clean[i] - logits[j, classes[i]]
    return drops / covered
