"""Optimise the input image: class and channel visualisation (gradient ascent) and deep dream.

Objectives compose (lucent's idea): an objective maps a forward pass to one number per image
``(N,)`` to *maximise*, and objectives add, subtract and scale:

    objective = class_logit(130) - 0.05 * l2() - 0.5 * total_variation()

is ``argmax_I S_c(I) - lambda ||I||^2 - mu TV(I)`` (seed 002's formula plus a smoothness term).
Images live in the model's input space (the tensor the model scores); ``model.deprocess`` turns
them into pictures. Every step keeps pixel values valid (between the normalised black and white).
Randomness (initial noise, jitter) comes from a seeded generator: the same call gives the same
picture, and torch's global generator is not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from .hooks import evaluating, record
from .models import LessonModel

__all__ = [
    "Objective",
    "class_logit",
    "channel_mean",
    "layer_norm",
    "l1",
    "l2",
    "total_variation",
    "ascend",
    "class_visualization",
    "channel_visualization",
    "deep_dream",
]


@dataclass
class Pass:
    """What an objective sees: ``image`` ``(N, 3, H, W)`` (before jitter), ``logits``
    ``(N, classes)`` and ``acts`` ``{layer: (N, C, h, w)}`` of the layers it asked for."""

    image: torch.Tensor
    logits: torch.Tensor
    acts: dict[str, torch.Tensor]


class Objective:
    """A function of a forward pass -> ``(N,)`` to maximise, plus the layers it needs."""

    def __init__(self, fn: Callable[[Pass], torch.Tensor], name: str,
                 layers: Sequence[str] = ()) -> None:
        self.fn, self.name, self.layers = fn, name, tuple(dict.fromkeys(layers))

    def __call__(self, p: Pass) -> torch.Tensor:
        return self.fn(p)

    def __add__(self, other: Objective) -> Objective:
        return Objective(lambda p: self(p) + other(p), f"{self.name} + {other.name}",
                         self.layers + other.layers)

    def __sub__(self, other: Objective) -> Objective:
        return Objective(lambda p: self(p) - other(p), f"{self.name} - {other.name}",
                         self.layers + other.layers)

    def __rmul__(self, weight: float) -> Objective:
        return Objective(lambda p: weight * self(p), f"{weight:g}*{self.name}", self.layers)

    __mul__ = __rmul__

    def __neg__(self) -> Objective:
        return (-1.0) * self

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def class_logit(target: int | Sequence[int]) -> Objective:
    """The class score S_c (logit); a sequence gives one class per image of the batch."""
    def fn(p: Pass) -> torch.Tensor:
        index = torch.as_tensor(target, device=p.logits.device).reshape(-1, 1)
        return p.logits.gather(1, index.expand(p.logits.shape[0], 1))[:, 0]
    return Objective(fn, f"logit[{target}]")


def channel_mean(layer: str, channel: int) -> Objective:
    """The mean activation of one channel of a layer (seed 002's M_ij)."""
    return Objective(lambda p: p.acts[layer][:, channel].mean(dim=(1, 2)),
                     f"{layer}[{channel}].mean", [layer])


def layer_norm(layer: str) -> Objective:
    """The mean squared activation of all channels of a layer (deep dream's "all channels")."""
    return Objective(lambda p: p.acts[layer].pow(2).mean(dim=(1, 2, 3)), f"|{layer}|^2", [layer])


# The penalties are sums over pixels (the seed's ||I||^2), rescaled as if the image were 224 x 224:
# a class score's gradient per pixel shrinks as the image grows, a sum's does not, so without the
# rescaling a weight tuned at one size would be too strong at a larger one.
def _as_224(image: torch.Tensor) -> float:
    return 224 * 224 / (image.shape[-2] * image.shape[-1])


def l1() -> Objective:
    """``sum |I|`` (224 x 224 scale): pulls pixels to 0, the mean colour. Subtract it."""
    return Objective(lambda p: p.image.abs().sum(dim=(1, 2, 3)) * _as_224(p.image), "L1")


def l2() -> Objective:
    """``||I||^2 = sum I^2`` (224 x 224 scale; the seed's penalty): pulls strong colours back."""
    return Objective(lambda p: p.image.pow(2).sum(dim=(1, 2, 3)) * _as_224(p.image), "L2")


def total_variation() -> Objective:
    """``sum |difference|`` between neighbouring pixels (224 x 224 scale): penalises high
    frequencies."""
    def fn(p: Pass) -> torch.Tensor:
        dx = (p.image[..., :, 1:] - p.image[..., :, :-1]).abs().sum(dim=(1, 2, 3))
        dy = (p.image[..., 1:, :] - p.image[..., :-1, :]).abs().sum(dim=(1, 2, 3))
        return (dx + dy) * _as_224(p.image)
    return Objective(fn, "TV")


def _require_lesson_model(model) -> LessonModel:
    if not isinstance(model, LessonModel):
        raise TypeError("synthesis needs a LessonModel (from load_model): it keeps pixels in the "
                        "model's valid input range, which a bare nn.Module does not know")
    return model


def ascend(model: LessonModel, image: torch.Tensor, objective: Objective, steps: int,
           lr: float = 0.05, jitter: int = 0, blur_every: int = 0, blur_sigma: float = 0.5,
           seed: int = 0, frames_every: int = 0, progress: bool = True,
           desc: str = "gradient ascent") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Gradient ascent on the input: ``steps`` times, ``I += lr * g / std(g)``.

    - the gradient ``g`` of ``objective`` is normalised to unit standard deviation per image, so
      ``lr`` is a step in input units whatever the objective's scale (gordicaleksa's deep dream);
    - ``jitter``: the image is rolled by a random offset of up to that many pixels before each
      forward pass, so no single pixel grid gets optimised (robustness, fewer artefacts);
    - ``blur_every`` steps the image is blurred with a Gaussian of ``blur_sigma`` pixels (keeps
      low frequencies, a cheap natural-image prior);
    - after every step the pixels are clamped to the model's valid range.

    ``image`` ``(N, 3, H, W)`` is not modified. Returns the result ``(N, 3, H, W)`` and, with
    ``frames_every > 0``, a copy every that many steps (for an animation).
    """
    model = _require_lesson_model(model)
    low, high = model.input_range
    generator = torch.Generator().manual_seed(seed)
    current = image.detach().clone().clamp(low, high)
    frames = [current.clone()] if frames_every else []
    with evaluating(model.model), torch.enable_grad():
        for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
            leaf = current.detach().requires_grad_(True)
            shifted = leaf
            if jitter:
                dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator)).tolist()
                shifted = torch.roll(leaf, shifts=(dy, dx), dims=(2, 3))
            with record(model, objective.layers, detach=False) as rec:
                logits = model.model(shifted)
            value = objective(Pass(leaf, logits, {name: rec[name] for name in objective.layers}))
            (grad,) = torch.autograd.grad(value.sum(), leaf)
            grad = grad / (grad.std(dim=(1, 2, 3), keepdim=True) + 1e-8)
            current = (leaf.detach() + lr * grad).clamp(low, high)
            if blur_every and (step + 1) % blur_every == 0:
                current = gaussian_blur(current, kernel_size=_odd(4 * blur_sigma),
                                        sigma=blur_sigma).clamp(low, high)
            if frames_every and (step + 1) % frames_every == 0:
                frames.append(current.clone())
    return current, frames


def _odd(size: float) -> int:
    size = max(3, int(round(size)))
    return size if size % 2 else size + 1


def _start(model: LessonModel, n: int, size: int, init: str, seed: int) -> torch.Tensor:
    if init == "zeros":  # the mean image of the normalisation: mid-grey for Lite0
        return torch.zeros(n, 3, size, size, device=model.device)
    if init == "noise":
        generator = torch.Generator().manual_seed(seed)
        return (0.1 * torch.randn(n, 3, size, size, generator=generator)).to(model.device)
    raise ValueError("init must be 'zeros' or 'noise'")


# Defaults with reasons: 224 px is the size the model was trained on; L2 0.005 and TV 0.002 keep
# colours unsaturated and the picture smooth while the class still reaches p > 0.95 on Lite0;
# jitter 8 px and a blur every 4 steps remove the high-frequency patterns of a plain ascent;
# 120 steps take about 4 s per image on 2 CPU cores.
DEFAULT_REGULARISER = {"l2": 0.005, "tv": 0.002}


def class_visualization(model: LessonModel, target: int | str | Sequence[int | str],
                        steps: int = 120, lr: float = 0.05, size: int = 224,
                        l2_weight: float = DEFAULT_REGULARISER["l2"], l1_weight: float = 0.0,
                        tv_weight: float = DEFAULT_REGULARISER["tv"], jitter: int = 8,
                        blur_every: int = 4, blur_sigma: float = 0.5, init: str = "zeros",
                        seed: int = 0, frames_every: int = 0, progress: bool = True):
    """An image the model scores as ``target``: ``argmax_I S_c(I) - l2 ||I||^2 - l1 |I| - tv TV``.

    ``target``: a class (index or name) or one per image. Returns ``(N, 3, size, size)`` in the
    model's input space; with ``frames_every``, also the list of intermediate images.
    """
    model = _require_lesson_model(model)
    targets = [target] if isinstance(target, (int, str)) else list(target)
    indices = [model.class_index(t) for t in targets]
    objective = class_logit(indices) - l2_weight * l2() - l1_weight * l1() \
        - tv_weight * total_variation()
    start = _start(model, len(indices), size, init, seed)
    result, frames = ascend(model, start, objective, steps, lr, jitter, blur_every, blur_sigma,
                            seed, frames_every, progress, desc="class visualisation")
    return (result, frames) if frames_every else result


def channel_visualization(model: LessonModel, layer: str, channel: int, steps: int = 60,
                          lr: float = 0.05, size: int = 160, l2_weight: float = 0.001,
                          tv_weight: float = 0.00025, jitter: int = 4, blur_every: int = 4,
                          blur_sigma: float = 0.5, init: str = "noise", seed: int = 0,
                          frames_every: int = 0, progress: bool = True):
    """An image that maximises the mean activation of ``channel`` at ``layer`` (seed 002's
    layer/filter visualisation). Starts from small noise (a grey image gives every channel of
    a symmetric net the same start). A channel's mean is a few units where a class logit is
    tens, hence penalties 10x lighter than ``class_visualization``'s.
    Returns ``(1, 3, size, size)`` in input space."""
    model = _require_lesson_model(model)
    objective = channel_mean(layer, channel) - l2_weight * l2() - tv_weight * total_variation()
    start = _start(model, 1, size, init, seed)
    result, frames = ascend(model, start, objective, steps, lr, jitter, blur_every, blur_sigma,
                            seed, frames_every, progress, desc=f"{layer}[{channel}]")
    return (result, frames) if frames_every else result


def deep_dream(model: LessonModel, image: torch.Tensor, layer: str, channel: int | None = None,
               octaves: int = 4, scale: float = 1.4, steps: int = 10, lr: float = 0.03,
               jitter: int = 16, seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Deep dream: amplify what ``layer`` (or one ``channel`` of it) sees in a photo.

    Objective: the layer's mean squared activation (all channels) or the channel's mean.
    ``octaves=1`` dreams at the photo's size only (plain). With more octaves (Mordvintsev et al.):
    shrink the photo ``octaves - 1`` times by ``scale``; dream at the smallest size, upscale the
    *detail* the dream added, put it on the next larger photo, dream again, up to full size.
    Structures dreamt at small sizes become large after upscaling: larger, smoother patterns.
    ``image`` ``(1, 3, H, W)`` in input space -> ``(1, 3, H, W)``.
    """
    model = _require_lesson_model(model)
    objective = layer_norm(layer) if channel is None else channel_mean(layer, channel)
    height, width = image.shape[-2:]
    sizes = [(max(32, round(height / scale ** i)), max(32, round(width / scale ** i)))
             for i in reversed(range(octaves))]  # smallest first
    detail = torch.zeros(1, 3, *sizes[0], device=image.device)
    dreamt = image
    for level, size in enumerate(sizes):
        base = F.interpolate(image, size=size, mode="bilinear", align_corners=False,
                             antialias=True)
        detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
        dreamt, _ = ascend(model, base + detail, objective, steps, lr, jitter=jitter,
                           seed=seed + level, progress=progress,
                           desc=f"deep dream octave {level + 1}/{octaves}")
        detail = dreamt - base
    return dreamt
