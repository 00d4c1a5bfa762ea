"""One optimisation loop (``render``) and the recipes built on it: class and channel
visualisation, deep dream.

Each step: the parameterisation makes an RGB image, the random transforms (redrawn from a seeded
generator) make the view the model sees, the forward pass runs only as far as the objective needs,
and the gradient of the objective reaches the parameters through all of it. The model's weights,
train/eval flags and ``requires_grad`` are never touched; gradients go to the image's parameters
only (``torch.autograd.grad``), never into parameter ``.grad``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..common import EPS, check_int, check_number, evaluating
from ..hooks import channel_count, get_layer
from ..models import LessonModel
from ..progress import progress_bar
from .objectives import ForwardRecord, Objective, channel_mean, class_logit, layer_norm
from .param import FFTImage, ImageParameterization, PixelImage, from_rgb, to_rgb
from .transforms import ROBUST, Transform, compose, roll

__all__ = [
    "render",
    "image_parameterization",
    "class_visualization",
    "channel_visualization",
    "deep_dream",
    "octave_sizes",
    "RECIPES",
    "transformed_views",
]


class _ForwardStopped(Exception):
    """Raised by a forward hook once every layer an objective reads has run."""


def _require_lesson_model(model) -> LessonModel:
    if not isinstance(model, LessonModel):
        raise TypeError("synthesis needs a LessonModel (from load_model): it knows the model's "
                        "normalisation, which a bare nn.Module does not")
    return model


def _forward(net: torch.nn.Module, x: torch.Tensor, objective: Objective):
    """``(logits or None, {layer: activation})``: the forward pass stops at the deepest layer the
    objective reads unless it needs the logits (no head computed for nothing)."""
    acts: dict[str, torch.Tensor] = {}
    wanted = set(objective.layers)

    def make_hook(name: str):
        def hook(module, inputs, output):
            acts[name] = output.clone()  # later in-place activations must not change it
            if not objective.needs_logits and wanted <= acts.keys():
                raise _ForwardStopped
        return hook

    handles = [get_layer(net, name)[1].register_forward_hook(make_hook(name))
               for name in objective.layers]
    try:
        logits = net(x)
    except _ForwardStopped:
        logits = None
    finally:
        for handle in handles:
            handle.remove()
    missing = wanted - acts.keys()
    if missing:
        raise RuntimeError(f"layers {sorted(missing)} did not run during the forward pass")
    return logits, acts


class _Interrupted(Exception):
    """A ``KeyboardInterrupt`` caught inside ``render``, carrying the picture so far, so that a
    recipe made of several renders (batches, octaves) stops at once and still returns it."""

    def __init__(self, result: torch.Tensor, frames: list[torch.Tensor]):
        super().__init__("interrupted")
        self.result, self.frames = result, frames


def render(model: LessonModel, objective: Objective, image: ImageParameterization, *,
           transforms: Sequence[Transform] = (), steps: int = 128, lr: float = 0.05,
           optimizer: str = "adam", seed: int = 0, views: int = 1, frames_every: int = 0,
           progress: bool = True, desc: str = "render") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Maximise ``objective`` over the parameters of ``image`` for ``steps`` steps.

    - ``transforms``: applied in order to the RGB image before every forward pass, with fresh
      random draws from ``torch.Generator().manual_seed(seed)`` each step;
    - ``optimizer="adam"``: Adam with learning rate ``lr`` (Olah et al.); ``"normalised"``: the
      plain step ``p += lr * g / std(g)`` per image (deep dream; ``lr`` is then a step in
      parameter units whatever the objective's scale);
    - ``views=k``: each step the model sees ``k`` independent draws of the transforms, in one
      batch, and the objective is their mean (an expectation over transformations: Athalye et
      al. 2018; MaCo, Fel et al. 2023, averages several crops per step). The views are cut to a
      common size (the smallest, about its centre). ``views=1`` is one draw per step;
    - ``frames_every=k``: also return the image every ``k`` steps (for an animation).

    Returns the final image ``(N, 3, H, W)`` in the model's input space (``model.deprocess``
    turns it into pictures) and the list of frames (same space). Interrupted (the kernel's stop
    button), it warns and returns the picture reached so far, as lucent does.
    """
    try:
        return _render(model, objective, image, transforms=transforms, steps=steps, lr=lr,
                       optimizer=optimizer, seed=seed, views=views, frames_every=frames_every,
                       progress=progress, desc=desc)
    except _Interrupted as stop:
        return stop.result, stop.frames


def _render(model, objective, image, *, transforms=(), steps=128, lr=0.05, optimizer="adam",
            seed=0, views=1, frames_every=0, progress=True, desc="render"
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``render``, raising ``_Interrupted`` (with the picture so far) on a keyboard interrupt."""
    model = _require_lesson_model(model)
    if optimizer not in ("adam", "normalised"):
        raise ValueError("optimizer must be 'adam' or 'normalised'")
    check_int("steps", steps)
    check_number("lr", lr, low=0.0, low_open=True)
    check_int("views", views)
    check_int("frames_every", frames_every, low=0)
    generator = torch.Generator().manual_seed(seed)
    transform = compose(transforms)
    adam = torch.optim.Adam(image.params, lr=lr) if optimizer == "adam" else None

    def current() -> torch.Tensor:
        with torch.no_grad():
            return from_rgb(model, image.rgb())

    frames = [current()] if frames_every else []
    step = 0
    with evaluating(model) as net, torch.enable_grad():
        try:
            for step in progress_bar(range(steps), desc=desc, enabled=progress):
                _step(net, model, objective, image, transform, generator, adam, lr, views)
                if frames_every and (step + 1) % frames_every == 0:
                    frames.append(current())
        except KeyboardInterrupt:  # as lucent: a student who stops a long cell keeps the picture
            warnings.warn(f"{desc}: interrupted after {step} of {steps} steps; returning the "
                          "picture so far", stacklevel=3)
            raise _Interrupted(current(), frames) from None
    return current(), frames


def transformed_views(transform: Transform, rgb: torch.Tensor, generator: torch.Generator,
                      count: int) -> torch.Tensor:
    """``count`` independent draws of ``transform`` on ``rgb`` ``(N, 3, H, W)``, each cut about
    its centre to the smallest height and width among them, stacked view after view:
    ``(count * N, 3, h, w)`` (rows ``k * N`` to ``(k + 1) * N - 1`` are view ``k``)."""
    drawn = [transform(rgb, generator) for _ in range(count)]
    height, width = min(v.shape[-2] for v in drawn), min(v.shape[-1] for v in drawn)
    cut = []
    for view in drawn:
        top, left = (view.shape[-2] - height) // 2, (view.shape[-1] - width) // 2
        cut.append(view[..., top: top + height, left: left + width])
    return torch.cat(cut)


def _step(net, model, objective, image, transform, generator, adam, lr, views=1) -> None:
    """One step of ``render``: forward the transformed views, then move the image's parameters
    along the gradient of the objective's mean over the views."""
    rgb = image.rgb()
    logits, acts = _forward(net, from_rgb(model, transformed_views(transform, rgb, generator,
                                                                   views)), objective)
    n, image_in = rgb.shape[0], from_rgb(model, rgb)
    value = sum(objective(ForwardRecord(
        image_in, None if logits is None else logits[k * n: (k + 1) * n],
        {layer: a[k * n: (k + 1) * n] for layer, a in acts.items()})) for k in range(views))
    value = value / views
    grads = torch.autograd.grad(value.sum(), image.params)
    if adam is not None:
        for param, grad in zip(image.params, grads):
            param.grad = -grad  # Adam minimises: the negative objective
        adam.step()
        for param in image.params:
            param.grad = None
    else:
        with torch.no_grad():
            for param, grad in zip(image.params, grads):
                spread = grad.flatten(1).std(dim=1).view(-1, *[1] * (grad.ndim - 1))
                param.add_(lr * grad / (spread + EPS))
    image.after_step()


def image_parameterization(shape: tuple[int, int, int, int], *, parameterization: str = "fft",
                           decorrelate: bool = True, seed: int = 0,
                           device: torch.device | str = "cpu") -> ImageParameterization:
    """A fresh image of ``shape`` ``(N, 3, H, W)``: ``"fft"`` (``FFTImage``, decorrelated colours
    unless ``decorrelate=False``) or ``"pixel"`` (``PixelImage``: grey plus noise of sd 0.01).
    Its random start comes from ``torch.Generator().manual_seed(seed)``."""
    generator = torch.Generator().manual_seed(seed)
    if parameterization == "fft":
        return FFTImage(shape, decorrelate=decorrelate, generator=generator, device=device)
    if parameterization == "pixel":
        return PixelImage(shape=shape, generator=generator, device=device)
    raise ValueError("parameterization must be 'fft' or 'pixel'")


# Two recipes, one argument apart. "robust" (Olah et al. 2017): FFT + decorrelated colours, their
# transforms with larger jitters and a wider range of scales (``ROBUST``), Adam 0.05; what people
# recognise. "naive" (the first papers): pixels, no transforms; reaches p = 1 with pictures the
# model alone recognises (add a penalty for L1 / L2).
RECIPES = {
    "robust": {"parameterization": "fft", "decorrelate": True, "transforms": ROBUST},
    "naive": {"parameterization": "pixel", "decorrelate": False, "transforms": ()},
}


def _recipe(recipe: str, parameterization, decorrelate, transforms) -> tuple[str, bool, list]:
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, not {recipe!r}")
    chosen = RECIPES[recipe]
    parameterization = parameterization or chosen["parameterization"]
    if decorrelate is None:
        decorrelate = chosen["decorrelate"] and parameterization == "fft"
    if decorrelate and parameterization != "fft":
        raise ValueError("decorrelate=True needs parameterization='fft'")
    transforms = chosen["transforms"] if transforms is None else transforms
    return parameterization, decorrelate, list(transforms)


def _visualize(model: LessonModel, objective_for, targets: list, *, recipe: str,
               parameterization: str | None, decorrelate: bool | None,
               transforms: Sequence[Transform] | None, penalty: Objective | None, size: int,
               seed: int, batch_size: int, frames_every: int, desc: str, **knobs):
    """The body both visualisations share: one image per target, ``batch_size`` at a time, each
    batch maximising ``objective_for(its targets) - penalty``. The start is drawn once for all
    images and every batch draws the same random transforms, so the result does not depend on
    ``batch_size`` up to float rounding (which Adam's first steps can amplify to about 1e-3): it
    only bounds the memory (about 65 MB per 160 px image and view)."""
    check_int("batch_size", batch_size)
    check_int("size", size, low=16)
    parameterization, decorrelate, transforms = _recipe(recipe, parameterization, decorrelate,
                                                        transforms)
    image = image_parameterization((len(targets), 3, size, size),
                                   parameterization=parameterization, decorrelate=decorrelate,
                                   seed=seed, device=model.device)
    results, frames, interrupted = [], [], False
    for start, part in zip(range(0, len(targets), batch_size), image.split(batch_size)):
        if interrupted:  # one stop ends the cell: the batches not yet run keep their start
            with torch.no_grad():
                results.append(from_rgb(model, part.rgb()))
            frames.append(results[-1:])
            continue
        objective = objective_for(targets[start: start + batch_size])
        objective = objective if penalty is None else objective - penalty
        try:
            result, part_frames = _render(model, objective, part, transforms=transforms,
                                          seed=seed, frames_every=frames_every, desc=desc,
                                          **knobs)
        except _Interrupted as stop:
            (result, part_frames), interrupted = (stop.result, stop.frames), True
        results.append(result)
        frames.append(part_frames)
    result = torch.cat(results)
    return (result, [torch.cat(frame) for frame in zip(*frames)]) if frames_every else result


def class_visualization(model: LessonModel, target: int | str | Sequence[int | str], *,
                        recipe: str = "robust", parameterization: str | None = None,
                        decorrelate: bool | None = None,
                        transforms: Sequence[Transform] | None = None,
                        penalty: Objective | None = None, steps: int = 128, lr: float = 0.05,
                        size: int = 224, seed: int = 0, views: int = 1, batch_size: int = 4,
                        frames_every: int = 0, progress: bool = True):
    """An image the model scores as ``target``: ``argmax_I S_c(I) - penalty(I)``.

    ``target``: a class (index or name) or a list, one image per class, optimised
    ``batch_size`` at a time. ``recipe="robust"`` (default): FFT + decorrelated colours +
    ``ROBUST`` transforms; ``recipe="naive"``: pixels and no transforms. ``parameterization``,
    ``decorrelate`` and ``transforms`` override the recipe's; ``penalty`` is an objective to
    subtract, e.g. ``0.01 * l2()``. Defaults with reasons: 224 px is the size the model was
    trained on; Adam 0.05 and 128 steps reach p = 1, and views the optimiser never drew keep a
    mean class probability of about 0.4 to 0.95 (naive ascent: under 0.2; see
    ``held_out_probability`` and benchmarks/RESULTS.md). ``views=2`` averages each step over
    two draws of the transforms (``render``): 1.5 to 2 times the time, twice the memory, and
    pictures to which other networks give the class a higher probability
    (``other_networks_probability``; benchmarks/transfer.py).
    Returns ``(N, 3, size, size)`` in the model's input space; with ``frames_every``, also the
    list of intermediate images.
    """
    model = _require_lesson_model(model)
    targets = [target] if isinstance(target, (int, str)) else list(target)
    return _visualize(model, class_logit, [model.class_index(t) for t in targets],
                      recipe=recipe, parameterization=parameterization, decorrelate=decorrelate,
                      transforms=transforms, penalty=penalty, steps=steps, lr=lr, size=size,
                      seed=seed, views=views, batch_size=batch_size, frames_every=frames_every,
                      progress=progress, desc="class visualisation")


def channel_visualization(model: LessonModel, layer: str, channel: int | Sequence[int], *,
                          recipe: str = "robust", parameterization: str | None = None,
                          decorrelate: bool | None = None,
                          transforms: Sequence[Transform] | None = None,
                          penalty: Objective | None = None, steps: int = 96, lr: float = 0.05,
                          size: int = 128, seed: int = 0, views: int = 1, batch_size: int = 8,
                          frames_every: int = 0, progress: bool = True):
    """An image that maximises the mean activation of ``channel`` at ``layer`` (one image per
    channel for a list, ``batch_size`` at a time). Same recipes as ``class_visualization``; the
    forward pass stops at ``layer``. 128 px: a channel of a middle layer sees a patch smaller
    than that, and the pattern repeats over the image anyway. Returns ``(N, 3, size, size)`` in
    input space."""
    model = _require_lesson_model(model)
    channels = [channel] if isinstance(channel, int) else list(channel)
    _check_channels(model, layer, channels)
    return _visualize(model, lambda batch: channel_mean(layer, batch), channels,
                      recipe=recipe, parameterization=parameterization, decorrelate=decorrelate,
                      transforms=transforms, penalty=penalty, steps=steps, lr=lr, size=size,
                      seed=seed, views=views, batch_size=batch_size, frames_every=frames_every,
                      progress=progress, desc=f"{layer}{channels}")


def _check_channels(model, layer: str, channels: Sequence[int]) -> None:
    """A ``ValueError`` with the valid range when a channel index is past the layer's channels."""
    count = channel_count(model, layer)
    for c in channels:
        check_int(f"channel of {layer} (which has {count} channels)", c, low=0, high=count - 1)


def octave_sizes(height: int, width: int, *, octaves: int, scale: float) -> list[tuple[int, int]]:
    """The pyramid's sizes, smallest first: the photo shrunk ``octaves - 1`` times by ``scale``
    (never below 32 px)."""
    return [(max(32, round(height / scale ** i)), max(32, round(width / scale ** i)))
            for i in reversed(range(octaves))]


def deep_dream(model: LessonModel, image: torch.Tensor, layer: str, *,
               channel: int | None = None, octaves: int = 4, scale: float = 1.4,
               steps: int = 10, lr: float = 0.015, jitter: int = 16, seed: int = 0,
               progress: bool = True) -> torch.Tensor:
    """Deep dream: amplify what ``layer`` (or one ``channel`` of it) sees in a photo.

    Objective: the layer's mean squared activation (all channels) or the channel's mean; the
    forward pass stops at ``layer``. Each step rolls the photo by up to ``jitter`` pixels and
    takes a normalised step ``lr * g / std(g)`` on its RGB pixels (clamped to [0, 1]).
    ``octaves=1`` dreams at the photo's size only (plain). With more octaves (Mordvintsev et al.):
    shrink the photo ``octaves - 1`` times by ``scale``; dream at the smallest size, upscale the
    *detail* the dream added, add it to the next larger photo, dream again, up to full size.
    ``image`` ``(1, 3, H, W)`` in input space -> ``(1, 3, H, W)``.
    """
    model = _require_lesson_model(model)
    check_int("octaves", octaves)
    check_number("scale", scale, low=1.0, low_open=True)
    check_int("steps", steps)
    check_int("jitter", jitter, low=0)
    if channel is not None:
        _check_channels(model, layer, [channel])
    objective = layer_norm(layer) if channel is None else channel_mean(layer, channel)
    photo = to_rgb(model, image)
    sizes = octave_sizes(*photo.shape[-2:], octaves=octaves, scale=scale)
    detail = torch.zeros(photo.shape[0], 3, *sizes[0], device=photo.device)
    dreamt = image
    for level, size in enumerate(sizes):
        base = F.interpolate(photo, size=size, mode="bilinear", align_corners=False,
                             antialias=True)
        detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
        pixels = PixelImage(base + detail)
        try:
            dreamt, _ = _render(model, objective, pixels,
                                transforms=[roll(jitter)] if jitter else [], steps=steps, lr=lr,
                                optimizer="normalised", seed=seed + level, frames_every=0,
                                progress=progress, desc=f"deep dream octave {level + 1}/{octaves}")
        except _Interrupted:  # one stop ends the cell: the detail so far, on the full-size photo
            detail = F.interpolate(pixels.rgb().detach() - base, size=sizes[-1],
                                   mode="bilinear", align_corners=False)
            return from_rgb(model, (photo + detail).clamp(0, 1))
        detail = pixels.rgb().detach() - base
    return dreamt
