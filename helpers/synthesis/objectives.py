"""What is maximised. Objectives compose (lucent's idea): an objective maps one forward pass to
one number per image ``(N,)`` to *maximise*, and objectives add, subtract and scale:

    objective = class_logit(130) - 0.05 * l2() - 0.5 * total_variation()

is ``argmax_I S_c(I) - 0.05 ||I||^2 - 0.5 TV(I)``. An objective knows the layers it reads
(``.layers``) and whether it needs the logits (``.needs_logits``): the render loop stops the
forward pass at the deepest layer it needs when it needs no logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = [
    "ForwardRecord",
    "Objective",
    "class_logit",
    "channel_mean",
    "layer_norm",
    "l1",
    "l2",
    "total_variation",
]


@dataclass
class ForwardRecord:
    """What an objective sees of one forward pass: ``image`` ``(N, 3, H, W)`` in the model's input
    space, before the random transforms; ``logits`` ``(N, classes)`` (``None`` when the forward
    pass stopped early); ``acts`` ``{layer: (N, C, h, w)}`` for the layers the objective reads."""

    image: torch.Tensor
    logits: torch.Tensor | None
    acts: dict[str, torch.Tensor]


class Objective:
    """A function of a ``ForwardRecord`` -> ``(N,)`` to maximise, plus what it needs."""

    def __init__(self, fn: Callable[[ForwardRecord], torch.Tensor], name: str,
                 layers: Sequence[str] = (), *, needs_logits: bool = False) -> None:
        self.fn, self.name = fn, name
        self.layers, self.needs_logits = tuple(dict.fromkeys(layers)), needs_logits

    def __call__(self, record: ForwardRecord) -> torch.Tensor:
        return self.fn(record)

    def _join(self, other: Objective, fn, name: str) -> Objective:
        return Objective(fn, name, self.layers + other.layers,
                         needs_logits=self.needs_logits or other.needs_logits)

    def __add__(self, other: Objective) -> Objective:
        return self._join(other, lambda r: self(r) + other(r), f"{self.name} + {other.name}")

    def __sub__(self, other: Objective) -> Objective:
        return self._join(other, lambda r: self(r) - other(r), f"{self.name} - {other.name}")

    def __rmul__(self, weight: float) -> Objective:
        return Objective(lambda r: weight * self(r), f"{weight:g}*{self.name}", self.layers,
                         needs_logits=self.needs_logits)

    __mul__ = __rmul__

    def __neg__(self) -> Objective:
        return (-1.0) * self

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def class_logit(target: int | Sequence[int]) -> Objective:
    """The class score S_c (logit); a sequence gives one class per image of the batch."""
    def fn(r: ForwardRecord) -> torch.Tensor:
        index = torch.as_tensor(target, device=r.logits.device).reshape(-1, 1)
        return r.logits.gather(1, index.expand(r.logits.shape[0], 1))[:, 0]
    return Objective(fn, f"logit[{target}]", needs_logits=True)


def channel_mean(layer: str, channel: int | Sequence[int]) -> Objective:
    """The mean activation of one channel of a layer; a sequence gives one channel per image."""
    def fn(r: ForwardRecord) -> torch.Tensor:
        acts = r.acts[layer]
        index = torch.as_tensor(channel, device=acts.device).reshape(-1)
        index = index.expand(acts.shape[0]) if index.numel() == 1 else index
        return acts[torch.arange(acts.shape[0], device=acts.device), index].mean(dim=(1, 2))
    return Objective(fn, f"{layer}[{channel}].mean", [layer])


def layer_norm(layer: str) -> Objective:
    """The mean squared activation of all channels of a layer (deep dream's "all channels")."""
    return Objective(lambda r: r.acts[layer].pow(2).mean(dim=(1, 2, 3)), f"|{layer}|^2", [layer])


# The penalties are sums over pixels, rescaled as if the image were 224 x 224: a class score's
# gradient per pixel shrinks as the image grows, a sum's does not, so without the rescaling a
# weight tuned at one size would be too strong at a larger one.
def _per_224_squared(image: torch.Tensor) -> float:
    return 224 * 224 / (image.shape[-2] * image.shape[-1])


def l1() -> Objective:
    """``sum |I|`` (224 x 224 scale): pulls pixels to 0, the mean colour. Subtract it."""
    return Objective(lambda r: r.image.abs().sum(dim=(1, 2, 3)) * _per_224_squared(r.image),
                     "L1")


def l2() -> Objective:
    """``||I||^2 = sum I^2`` (224 x 224 scale): pulls strong colours back. Subtract it."""
    return Objective(lambda r: r.image.pow(2).sum(dim=(1, 2, 3)) * _per_224_squared(r.image),
                     "L2")


def total_variation() -> Objective:
    """``sum |difference|`` between neighbouring pixels (224 x 224 scale): penalises high
    frequencies. Subtract it."""
    def fn(r: ForwardRecord) -> torch.Tensor:
        dx = (r.image[..., :, 1:] - r.image[..., :, :-1]).abs().sum(dim=(1, 2, 3))
        dy = (r.image[..., 1:, :] - r.image[..., :-1, :]).abs().sum(dim=(1, 2, 3))
        return (dx + dy) * _per_224_squared(r.image)
    return Objective(fn, "TV")
