"""Plumbing every method shares: batch checks, argument checks, class targets, eval mode, min-max
scaling, and one engine that runs many changed copies of an image through the model in chunks.

The methods and the evaluation modules import from here and never from each other's private
names (captum keeps the same things in ``_utils/common.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Union

import torch
from torch import nn

from .progress import progress_bar

__all__ = [
    "EPS",
    "Target",
    "channels_last",
    "check_batch",
    "check_finite",
    "check_int",
    "check_number",
    "forward_in_chunks",
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


def check_int(name: str, value, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (``high=None``: no upper bound), or a ``ValueError``
    that names the argument and its valid range."""
    valid = f"[{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        raise ValueError(f"{name} must be an integer {valid}, got {value!r}")
    return value


def check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """``value`` as a finite float within the bounds (``low_open``: ``value > low``), or a
    ``ValueError`` that names the argument and its valid range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    bad = not math.isfinite(number) or isinstance(value, bool)
    if low is not None:
        bad = bad or (number <= low if low_open else number < low)
    if high is not None:
        bad = bad or number > high
    if bad:
        lower = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        upper = "" if high is None else f"<= {high}"
        valid = " and ".join(s for s in (lower, upper) if s) or "finite"
        raise ValueError(f"{name} must be a number {valid}, got {value!r}")
    return number


def check_finite(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` unchanged, or a ``ValueError`` when it holds NaN or infinite values (a map that
    holds them ranks nothing)."""
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite values; a map must be finite "
                         "everywhere (check the method that made it)")
    return t


def channels_last(batch: torch.Tensor) -> torch.Tensor:
    """The batch in channels-last memory order (same values): CPU convolutions run about 15 %
    faster on it (measured on Lite0, 1 thread), without touching the model's weights."""
    return batch.contiguous(memory_format=torch.channels_last)


def in_chunks(items: Sequence, batch_size: int, *, desc: str, progress: bool = True
              ) -> Iterator[Sequence]:
    """``items`` cut into consecutive chunks of at most ``batch_size``, with a progress bar when
    there is more than one chunk: the one loop of every chunked method (SmoothGrad's noisy copies,
    the perturbations below)."""
    check_int("batch_size", batch_size)
    starts = range(0, len(items), batch_size)
    for start in progress_bar(starts, desc=desc, enabled=progress and len(starts) > 1):
        yield items[start:start + batch_size]


def forward_in_chunks(net: nn.Module, jobs: Sequence,
                      make_batch: Callable[[Sequence], torch.Tensor],
                      *, batch_size: int, desc: str, progress: bool = True
                      ) -> Iterator[tuple[Sequence, torch.Tensor]]:
    """The perturbation engine of occlusion, the causal curves and Score-CAM: cut ``jobs`` into
    chunks of ``batch_size`` (``in_chunks``), build each chunk's images
    ``(len(chunk), C, H, W)`` with ``make_batch(chunk)``, and yield ``(chunk, net(images))``,
    without gradients, in eval mode, channels-last."""
    with evaluating(net), torch.no_grad():
        for chunk in in_chunks(jobs, batch_size, desc=desc, progress=progress):
            yield chunk, net(channels_last(make_batch(chunk)))
