"""The causal metrics: deletion and insertion (Petsiuk et al. 2018, RISE), with RISE's fills or
ROAD's imputation (Rong et al. 2022).

``deletion(model, x, target=None, *, attribution, knobs)``: remove the pixels an attribution ranks
highest first and track the class probability; :func:`insertion` puts them back into a blurred
copy; :func:`auc` summarises a curve. The model runs in eval mode without gradients and leaves
every call exactly as it came.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F

from .common import (
    Target,
    check_batch,
    check_finite,
    check_int,
    evaluating,
    fixed_targets,
    forward_in_chunks,
    unwrap,
)
from .imputation import noisy_linear_imputation, rise_blur
from .maps import to_map

__all__ = ["deletion", "insertion", "auc", "Baseline"]

# A baseline: a value in the model's input space (0.0 = the mean colour after normalisation),
# a tensor broadcastable to x, or one of "zero", "blur", "road".
Baseline = Union[float, torch.Tensor, str]


def deletion(model, x: torch.Tensor, target: Target = None, *, attribution: torch.Tensor,
             steps: int = 28, baseline: Baseline = "zero", batch_size: int = 8, seed: int = 0,
             progress: bool = True) -> torch.Tensor:
    """Deletion (Petsiuk et al. 2018): remove the pixels the map ranks highest first.

    At step ``k`` the ``round(k H W / steps)`` pixels that ``attribution`` (any method's map)
    ranks highest (all colour channels) are replaced by the ``baseline``: ``"zero"`` (default,
    RISE: zeros in the model's input space, the mean colour), ``"blur"`` (the image blurred by
    ``rise_blur``), ``"road"`` (noisy linear imputation from the pixels still there,
    ``noisy_linear_imputation``), a float or a tensor broadcastable to ``x``. Tracks the softmax
    probability of the target class, fixed on ``x``. A faithful map makes the curve fall fast:
    **low** :func:`auc` is good.

    ``attribution``: ``(N, H, W)``, ``(N, 1, H, W)``, ``(N, C, H, W)`` (ranked by |.| max over
    channels) or a smaller ``(N, h, w)`` (upsampled bilinearly); finite everywhere. Returns
    ``(N, steps + 1)``; column 0 is exactly ``softmax(model(x))[target]``.

    Example: ``deletion(model, x, "tabby", attribution=grad_cam(model, x, "tabby"))``.
    """
    return _causal_curve(model, x, attribution, target, steps=steps, baseline=baseline,
                         batch_size=batch_size, seed=seed, progress=progress, insert=False)


def insertion(model, x: torch.Tensor, target: Target = None, *, attribution: torch.Tensor,
              steps: int = 28, baseline: Baseline = "blur", batch_size: int = 8, seed: int = 0,
              progress: bool = True) -> torch.Tensor:
    """Insertion (Petsiuk et al. 2018): start from a blurred copy and put the pixels back,
    highest-ranked first (``baseline`` as in :func:`deletion`; default ``"blur"``: RISE's
    Gaussian blur, kernel 11, sigma 5; ``"road"``: the pixels not yet back are imputed from
    those that are). A faithful map makes the curve rise fast: **high** :func:`auc` is good.

    Returns ``(N, steps + 1)``; the last column is exactly ``softmax(model(x))[target]``.
    Example: ``auc(insertion(model, x, "tabby", attribution=grad_cam(model, x, "tabby")))``.
    """
    return _causal_curve(model, x, attribution, target, steps=steps, baseline=baseline,
                         batch_size=batch_size, seed=seed, progress=progress, insert=True)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under curves ``(..., steps + 1)`` sampled at evenly spaced fractions 0, 1/steps, ...,
    1 of the pixels: the trapezoidal rule on [0, 1], so a curve of probabilities gives a number
    in [0, 1]. Returns ``(...)``."""
    if curve.shape[-1] < 2:
        raise ValueError("a curve needs at least 2 points")
    steps = curve.shape[-1] - 1
    return (curve[..., 1:] + curve[..., :-1]).sum(dim=-1) / (2 * steps)


def _causal_curve(model, x, attribution, target, *, steps, baseline, batch_size, seed, progress,
                  insert):
    check_batch(x)
    check_int("steps", steps)
    order = _pixel_order(attribution, x)
    classes = fixed_targets(model, x, target)
    n, pixels = order.shape
    generator = torch.Generator(device=x.device).manual_seed(seed)
    # Each image moves from `start` to `end`; the first `counts[k]` pixels of `order` take their
    # value from `end`. Deletion: x -> baseline; insertion: baseline -> x.
    counts = [round(k * pixels / steps) for k in range(steps + 1)]
    net = unwrap(model)
    curve = torch.empty(n, steps + 1, dtype=x.dtype, device=x.device)
    clean_step = steps if insert else 0
    jobs = [(i, k) for i in range(n) for k in range(steps + 1) if k != clean_step]
    road = isinstance(baseline, str) and baseline == "road"
    fixed = None if road else _baseline_image(x, baseline)
    with evaluating(net), torch.no_grad():
        curve[:, clean_step] = net(x).softmax(dim=1).gather(1, classes[:, None])[:, 0]

    def images(chunk):
        return _step_images(x, order, [(i, counts[k]) for i, k in chunk], insert, fixed,
                            generator)

    for chunk, logits in forward_in_chunks(net, jobs, images, batch_size=batch_size,
                                           desc="insertion" if insert else "deletion",
                                           progress=progress):
        probs = logits.softmax(dim=1)
        for j, (i, k) in enumerate(chunk):
            curve[i, k] = probs[j, classes[i]]
    return curve


def _step_images(x, order, jobs, insert, fixed, generator):
    """Images ``(len(jobs), 3, H, W)`` of a curve: for each ``(i, count)``, image ``i`` with the
    first ``count`` pixels of its order changed (deleted, or for insertion: put back)."""
    index = torch.tensor([i for i, _ in jobs], device=x.device)
    changed = torch.zeros(len(jobs), order.shape[1], dtype=torch.bool, device=x.device)
    for j, (i, count) in enumerate(jobs):
        changed[j, order[i, :count]] = True
    changed = changed.view(len(jobs), 1, *x.shape[-2:])
    missing = ~changed if insert else changed  # pixels that do not show the image
    if fixed is None:  # ROAD: impute what is missing from what is there
        return noisy_linear_imputation(x[index], ~missing[:, 0], generator=generator)
    return torch.where(missing, fixed[index], x[index])


def _pixel_order(attribution: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pixel indices ``(N, H W)`` from the highest to the lowest map value (stable order)."""
    if not isinstance(attribution, torch.Tensor):
        raise TypeError("attribution must be a tensor map (N, H, W)")
    maps = check_finite("attribution", to_map(attribution.detach().to(x.device, x.dtype)))
    if maps.shape[0] != x.shape[0]:
        raise ValueError(f"got {maps.shape[0]} maps for {x.shape[0]} images")
    if maps.shape[-2:] != x.shape[-2:]:
        maps = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
    return maps.flatten(1).argsort(dim=1, descending=True, stable=True)


def _baseline_image(x: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(x)
        if baseline == "blur":
            return rise_blur(x)
        raise ValueError(f"baseline must be 'zero', 'blur', 'road', a float or a tensor, "
                         f"not {baseline!r}")
    return torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
