"""Plumbing every method shares: batch checks, class targets, eval mode, min-max scaling.

``attribution``, ``cam``, ``faithfulness`` and the widgets import from here and never from each
other's private names (captum keeps the same things in ``_utils/common.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Union

import torch
from torch import nn

__all__ = [
    "EPS",
    "Target",
    "check_batch",
    "evaluating",
    "fixed_targets",
    "minmax",
    "resolve_targets",
    "unwrap",
]

EPS = 1e-8  # the one epsilon of the package: guards divisions by a range or a norm that can be 0

# A class target: None (each image's top class), an index, a name ("tabby"), or one per image.
Target = Union[None, int, str, Sequence[Union[int, str]], torch.Tensor]


def unwrap(model) -> nn.Module:
    """The ``nn.Module`` inside a ``LessonModel``; an ``nn.Module`` is returned as it is."""
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) and not isinstance(model, nn.Module) else model


@contextmanager
def evaluating(model) -> Iterator[nn.Module]:
    """Put every module in eval mode for the block, then restore each module's own flag
    (also when the block raises)."""
    model = unwrap(model)
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def check_batch(x) -> None:
    """Methods take a float batch ``(N, C, H, W)`` and need autograd; say so plainly when given
    anything else, before anything runs."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor batch (N, 3, H, W), got a {type(x).__name__}; "
                        "use model.preprocess(image)")
    if x.ndim != 4 or not x.is_floating_point():
        hint = " (a single image: add the batch axis with x[None])" if x.ndim == 3 else ""
        raise ValueError(f"expected a float batch (N, 3, H, W), got {x.dtype} of shape "
                         f"{tuple(x.shape)}{hint}; model.preprocess(image) makes one")
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "this method back-propagates, and torch.inference_mode() switches autograd off for "
            "good: call it outside the inference_mode block (inside torch.no_grad() is fine)")
    if x.is_inference():
        raise RuntimeError(
            "x was made inside torch.inference_mode(), so autograd cannot use it: make it "
            "outside that block, or pass x.clone() from outside it")


def resolve_targets(model, logits: torch.Tensor, target: Target) -> torch.Tensor:
    """Targets -> class indices ``(N,)`` (long, on the logits' device). ``None``: each image's
    top class; a name such as ``"tabby"`` needs a ``LessonModel``."""
    n = logits.shape[0]
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, torch.Tensor):
        indices = target.reshape(-1).tolist()
    elif isinstance(target, (int, str)):
        indices = [target] * n
    else:
        indices = list(target)
    if len(indices) != n:
        raise ValueError(f"got {len(indices)} targets for a batch of {n} images")
    if any(isinstance(t, str) for t in indices):
        if not hasattr(model, "class_index"):
            raise ValueError("class names need a LessonModel (from load_model); "
                             "give class indices with a plain nn.Module")
        indices = [model.class_index(t) for t in indices]
    for t in indices:
        if not 0 <= int(t) < logits.shape[1]:
            raise ValueError(f"class index {t} is outside [0, {logits.shape[1]})")
    return torch.as_tensor([int(t) for t in indices], device=logits.device)


@torch.no_grad()
def fixed_targets(model, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Class indices ``(N,)`` resolved once on the clean batch ``x``, for methods that then run
    the model on changed copies (noisy, masked, blurred) and must keep explaining the same class."""
    net = unwrap(model)
    with evaluating(net):
        return resolve_targets(model, net(x), target)


def minmax(t: torch.Tensor, dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    """Scale ``t`` to [0, 1] over ``dims`` (per image for the default ``(-2, -1)`` of ``(N, H,
    W)`` maps); a flat slice becomes 0, never NaN."""
    low = t.amin(dim=dims, keepdim=True)
    high = t.amax(dim=dims, keepdim=True)
    return (t - low) / (high - low).clamp_min(EPS)
