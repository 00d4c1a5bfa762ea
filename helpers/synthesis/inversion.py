"""Feature inversion: an image whose activations at a layer match a photo's (Mahendran & Vedaldi,
*Understanding Deep Image Representations by Inverting Them*, CVPR 2015).

Given a photo ``x0`` and its activations ``A0 = Phi(x0)`` at a layer, find

    x* = argmin_x  ||Phi(x) - A0||^2 / ||A0||^2

on the course's render loop, starting from noise. The normalised squared distance is
Mahendran & Vedaldi's loss: 0 is a perfect match, 1 is as far as a black image of zero
activations, whatever the layer's scale. What the optimum keeps of the photo is what the layer
keeps; what the image prior adds is what the layer leaves open.

Two recipes, as for class pictures (``render.RECIPES``):

- ``"fft"`` (with a prior): the spectrum with decorrelated colours, and small random
  transforms (``INVERSION``) applied every step to the picture *and to the photo alike*, so the
  two stay aligned and the match must hold when both are shifted, scaled and turned a little;
- ``"pixel"`` (no prior): pixels and no transforms, the plain minimisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..common import check_batch, check_finite, check_int, check_number
from ..hooks import get_layer
from .objectives import ForwardRecord, Objective
from .param import ImageParameterization, to_rgb
from .render import _require_lesson_model, image_parameterization, render
from .transforms import STANDARD, Transform, pad

__all__ = ["INVERSION", "inversion_loss", "activation_match", "feature_inversion"]

# Small transforms: a reconstruction must stay aligned with the photo, so these only blur the
# pixel grid (a shift of up to 8 px, 0.9 .. 1.1, at most 10 degrees), applied to both images:
# lucid's standard transforms with 8 px of padding instead of 12.
INVERSION: list[Transform] = [pad(8), *STANDARD[1:]]


def inversion_loss(acts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mahendran & Vedaldi's normalised squared distance, one number per image:
    ``||acts - target||^2 / ||target||^2`` summed over every axis but the first.

    ``acts`` and ``target``: ``(N, ...)`` of the same shape. Returns ``(N,)``; 0 is a perfect
    match, 1 what an image of zero activations would score.
    Example: ``inversion_loss(rec["blocks.2"], photo_acts)``.
    """
    if acts.shape != target.shape:
        raise ValueError(f"activations {tuple(acts.shape)} and target {tuple(target.shape)} "
                         "differ in shape: were they recorded at the same layer and image size?")
    dims = tuple(range(1, acts.ndim))
    return (acts - target).pow(2).sum(dim=dims) / target.pow(2).sum(dim=dims).clamp_min(1e-12)


def activation_match(layer: str, count: int) -> Objective:
    """The objective of a batch of ``2 * count`` images, the ``count`` pictures followed by their
    ``count`` photos seen through the same transforms: minus ``inversion_loss`` of each picture's
    activations at ``layer`` against its photo's, ``(count,)``, to maximise."""
    def fn(r: ForwardRecord) -> torch.Tensor:
        acts = r.acts[layer]
        return -inversion_loss(acts[:count], acts[count:].detach())
    return Objective(fn, f"-|{layer} - photo|^2", [layer])


class _WithPhotos(ImageParameterization):
    """The picture's parameterisation with the photos appended to its batch (not optimised): the
    render loop's random transforms are drawn once per batch, so picture and photo move alike."""

    def __init__(self, image: ImageParameterization, photos: torch.Tensor) -> None:
        self.image, self.photos = image, photos
        self.params = image.params

    def rgb(self) -> torch.Tensor:
        return torch.cat([self.image.rgb(), self.photos])

    def after_step(self) -> None:
        self.image.after_step()


def _check_layer(model, layer) -> str:
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (a str, e.g. 'blocks.2'), not "
                        f"{type(layer).__name__}")
    return get_layer(model.model, layer)[0]  # a ValueError naming close layer names


def feature_inversion(model, image: torch.Tensor, layer: str, *, steps: int = 128,
                      parameterization: str = "fft",
                      transforms: Sequence[Transform] | None = None, lr: float = 0.05,
                      seed: int = 0, progress: bool = True) -> torch.Tensor:
    """An image whose activations at ``layer`` match those of ``image``, found from noise.

    Minimises ``inversion_loss(Phi(x), Phi(image))`` (``||Phi(x) - Phi(x0)||^2 / ||Phi(x0)||^2``,
    Mahendran & Vedaldi 2015) with Adam on the render loop (``render``): the forward pass stops
    at ``layer``. The photos ride in the same batch as the pictures, so that both see the same
    random transforms: each step costs a forward and backward pass of ``2 N`` images (measured
    against torch-lucent, which matches a fixed target: ``benchmarks/inversion.py``).

    Args:
        model: a ``LessonModel`` (``load_model``): it knows the normalisation.
        image: the photos, ``(N, 3, H, W)`` in the model's input space (``model.preprocess``);
            each gets its own reconstruction, of the same size.
        layer: the layer to match, by name (``layer_roles(model).stages`` lists useful ones).
        steps: Adam steps; 128 reach a loss under 0.1 at early layers of Lite0.
        parameterization: ``"fft"`` (default, with a prior: spectrum with decorrelated colours,
            and ``INVERSION``'s transforms applied to picture and photo alike) or ``"pixel"``
            (no prior: pixels from grey and, by default, no transforms).
        transforms: override the transforms (``()``: none); they are applied to the picture and
            to the photo with the same random draw every step.
        lr: Adam's learning rate (0.05, as for class pictures).
        seed: the random start and the transforms' draws (``torch.Generator``).
        progress: show a bar over the steps.

    Returns ``(N, 3, H, W)`` in the model's input space (``model.deprocess`` makes pictures).
    Example: ``feature_inversion(model, model.preprocess("cat"), "blocks.2", steps=64)``.
    """
    model = _require_lesson_model(model)
    check_batch(image)
    check_finite("image", image)
    if image.shape[1] != 3:
        raise ValueError(f"image must have 3 colour channels, got shape {tuple(image.shape)}")
    layer = _check_layer(model, layer)
    check_int("steps", steps)
    check_number("lr", lr, low=0.0, low_open=True)
    if parameterization not in ("fft", "pixel"):
        raise ValueError(f"parameterization must be 'fft' (with a prior) or 'pixel' (none), not "
                         f"{parameterization!r}")
    if transforms is None:
        transforms = INVERSION if parameterization == "fft" else ()
    photos = to_rgb(model, image.detach().to(model.device))
    low, high = model.input_range
    if ((image < low - 1e-4) | (image > high + 1e-4)).any():
        raise ValueError("image holds values outside the valid pixel range (black to white in "
                         "the model's input space): make it with model.preprocess(image)")
    picture = image_parameterization(tuple(photos.shape), parameterization=parameterization,
                                     seed=seed, device=model.device)
    result, _ = render(model, activation_match(layer, len(photos)), _WithPhotos(picture, photos),
                       transforms=list(transforms), steps=steps, lr=lr, seed=seed,
                       progress=progress, desc=f"inverting {layer}")
    return result[:len(photos)]
