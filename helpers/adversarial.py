"""Fooling images: the smallest change to a photo that makes the network see a chosen class.

Targeted iterated signed-gradient steps (I-FGSM, Kurakin, Goodfellow & Bengio 2017; projected
gradient descent in Madry et al. 2018) under an L-infinity budget: no pixel of any channel moves
by more than ``epsilon`` of the 0-255 range, and every pixel stays a valid colour. Each step::

    x <- clip( x + step_size * sign( d log p_target / d x ) )

where the clip projects back onto the budget around the photo and onto [0, 255]. The budget is
in *pixel* units whatever the model's normalisation (mean, std): ``epsilon=2/255`` moves no
pixel by more than 2 grey levels, which is ``2/255 / std`` in the model's input space. So it
needs a ``LessonModel`` (``load_model``), which knows its mean and std.

The model leaves each call exactly as it came (eval mode during the call, gradients to the
input only, never into parameter ``.grad``), also when the call raises; it works with frozen
parameters and under ``torch.no_grad``, and refuses ``torch.inference_mode``.
"""

from __future__ import annotations

import torch

from .common import (
    Target,
    check_batch,
    check_finite,
    check_int,
    check_number,
    evaluating,
    resolve_targets,
    unwrap,
)
from .progress import progress_bar

__all__ = ["fooling_image", "pixel_change"]

RANGE_SLACK = 1e-5  # input values this far outside [black, white] are float rounding, not data


def _pixel_range(model) -> tuple[torch.Tensor, torch.Tensor]:
    if not hasattr(model, "input_range"):
        raise ValueError("epsilon is in pixel units (a fraction of 0-255), which needs the "
                         "model's normalisation (mean, std): pass the LessonModel from "
                         "load_model(...) rather than its nn.Module")
    return model.input_range


def fooling_image(model, x: torch.Tensor, target: Target, *, epsilon: float, steps: int,
                  step_size: float | None = None, progress: bool = True) -> torch.Tensor:
    """A targeted fooling image for each image of the batch: ``steps`` signed-gradient steps
    uphill on the log-probability of ``target``, each followed by the projection onto the
    L-infinity ball of radius ``epsilon`` around ``x`` and onto the valid pixel range.

    The log-probability (minus the cross-entropy), not the logit: raising the target's logit
    alone can raise every logit with it, while the log-probability also pushes the other
    classes down. No random start and no early stop: the same call gives the same image, and
    steps after the class is reached raise its probability further.

    Args:
        model: a ``LessonModel`` (its mean and std turn pixel units into input units).
        x: ``(N, 3, H, W)`` in the model's input space (``model.preprocess``), valid pixels.
        target: the class to reach: an index or name, or one per image (``None`` is refused:
            there is no "top class" to reach).
        epsilon: the budget, a fraction of the 0-255 range in (0, 1]: ``2/255`` moves no pixel
            of any channel by more than 2 grey levels.
        steps: signed-gradient steps (one forward and backward pass each).
        step_size: pixel units per step, in (0, 1]; ``None``: ``2.5 * epsilon / steps``
            (Madry et al. 2018), enough to cross the ball and then move along its edge.
        progress: show a bar over the steps.

    Returns ``(N, 3, H, W)`` in the model's input space: within ``epsilon`` (pixel units) of
    ``x`` and within the valid range. Its values are not rounded to whole grey levels.

    The batch stays in PyTorch's default memory order, like a lesson's own loop: channels-last
    is faster on a CPU but rounds differently with 2 threads, and a gradient value near 0 can
    then change its sign, so that the two loops would part by a whole step at some pixels.
    Example: ``fooling_image(model, model.preprocess("cat"), "goldfish", epsilon=2/255,
    steps=10)``.
    """
    check_batch(x)
    check_finite("x", x)
    if target is None:
        raise ValueError("fooling_image needs the class to reach as target (an index in "
                         "[0, classes) or a name such as 'goldfish'), not None")
    budget = check_number("epsilon", epsilon, low=0.0, low_open=True, high=1.0)
    steps = check_int("steps", steps)
    step = 2.5 * budget / steps if step_size is None else check_number(
        "step_size", step_size, low=0.0, low_open=True, high=1.0)
    low, high = (t.to(x.device, x.dtype) for t in _pixel_range(model))
    if (x < low - RANGE_SLACK).any() or (x > high + RANGE_SLACK).any():
        raise ValueError("x holds values outside the valid pixel range (black to white in the "
                         "model's input space): make it with model.preprocess(image)")
    unit = high - low  # one unit of the pixel range [0, 1] in input units, per channel (1/std)
    lower = torch.maximum(x.detach() - budget * unit, low)
    upper = torch.minimum(x.detach() + budget * unit, high)
    adversarial, classes = x.detach().clone(), None
    net = unwrap(model)
    with evaluating(net), torch.enable_grad():
        for _ in progress_bar(range(steps), desc="Fooling image", enabled=progress):
            leaf = adversarial.requires_grad_(True)  # in the default memory order: see above
            log_p = net(leaf.clone()).log_softmax(dim=1)  # a model may change its input in place
            if classes is None:  # names resolved and ranges checked on the first pass, on x
                classes = resolve_targets(model, log_p.detach(), target)
            score = log_p.gather(1, classes[:, None]).sum()  # images are independent in eval
            (grad,) = torch.autograd.grad(score, leaf)
            adversarial = adversarial.detach() + step * unit * grad.sign()
            adversarial = torch.minimum(torch.maximum(adversarial, lower), upper)
    return adversarial


def pixel_change(model, x: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """How far each value of ``changed`` lies from ``x``, in grey levels of 0-255 (whatever the
    model's normalisation): ``(N, 3, H, W)``, signed. ``fooling_image(..., epsilon=e)`` keeps
    every value within ``e * 255``.
    Example: ``pixel_change(model, x, fooled).abs().amax()``."""
    low, high = (t.to(x.device, x.dtype) for t in _pixel_range(model))
    return (changed - x) / (high - low) * 255
