"""A synthetic task whose right answer is known: one shape on clutter, and where it is.

The course's own small models (``load_model("course_vit")``, ``load_model("course_cnn")``) were
trained on it by ``tools/train_course_models.py``. Every image holds one filled shape of a class in
``SHAPES`` (radius 7-11 px; dark on a light background, light on a dark one) at a random
position, on a smooth random background with thin lines and small dots of random colours (the
clutter). Because we drew the shape, we know its box, so we can score where an explanation
points.

``make_shapes(n, seed=...)`` is deterministic: the same seed gives the same images on any CPU.
``make_shape_pairs(n, seed=...)`` draws two shapes of *different* classes in each image, one in
each half, on the same clutter: a question "where is class c?" then has two different answers
in one picture, which is what a map that ignores the class cannot give.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .course_models import SHAPES, SIZE

__all__ = ["SHAPES", "SIZE", "ShapeBatch", "ShapePairs", "make_shapes", "make_shape_pairs"]

RADIUS = (7.0, 11.0)  # the object's half-size: 2-3 patches across, always larger than clutter
LINES, DOTS = 6, 6  # clutter per image


class ShapeBatch(NamedTuple):
    """``images`` ``(N, 3, SIZE, SIZE)`` in [0, 1]; ``labels`` ``(N,)`` indices into ``SHAPES``;
    ``boxes`` ``(N, 4)`` as ``(top, left, bottom, right)`` pixel rows/columns, inclusive, of the
    object's drawn pixels; ``masks`` ``(N, SIZE, SIZE)`` bool, the object's pixels."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor


class ShapePairs(NamedTuple):
    """Two objects per image. ``images`` ``(N, 3, SIZE, SIZE)`` in [0, 1]; ``labels`` ``(N, 2)``
    two different indices into ``SHAPES``; ``boxes`` ``(N, 2, 4)`` each object's
    ``(top, left, bottom, right)``, inclusive; ``masks`` ``(N, 2, SIZE, SIZE)`` bool, each
    object's pixels (the two never overlap)."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor


def _uniform(g: torch.Generator, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=g)


def _shape_masks(kind: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, r: torch.Tensor,
                 yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """Boolean masks ``(N, S, S)`` of the filled shapes; parameters ``(N, 1, 1)``."""
    dy, dx = yy - cy, xx - cx
    circle = dy**2 + dx**2 <= r**2
    square = (dy.abs() <= 0.8 * r) & (dx.abs() <= 0.8 * r)
    triangle = (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= 0.6 * (dy + r))  # apex up
    arm = 0.3 * r
    cross = ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    every = torch.stack([circle, square, triangle, cross], dim=1)  # (N, 4, S, S)
    return every.gather(1, kind.view(-1, 1, 1, 1).expand(-1, 1, *every.shape[-2:]))[:, 0]


def _segment_distance(y0, x0, y1, x1, yy, xx) -> torch.Tensor:
    """Distance of every pixel to the segments (y0, x0)-(y1, x1); parameters ``(N, 1, 1)``."""
    vy, vx = y1 - y0, x1 - x0
    t = (((yy - y0) * vy + (xx - x0) * vx) / (vy**2 + vx**2).clamp_min(1e-6)).clamp(0, 1)
    return ((yy - y0 - t * vy) ** 2 + (xx - x0 - t * vx) ** 2).sqrt()


def _paint(canvas: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Paint ``colour`` ``(N, 3)`` where ``mask`` ``(N, S, S)`` holds."""
    return torch.where(mask[:, None], colour[:, :, None, None], canvas)


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    s = SIZE
    return (torch.arange(s, dtype=torch.float32).view(1, s, 1),
            torch.arange(s, dtype=torch.float32).view(1, 1, s))


def _cluttered_background(g: torch.Generator, n: int, yy: torch.Tensor, xx: torch.Tensor
                          ) -> torch.Tensor:
    """``n`` backgrounds ``(n, 3, S, S)``: a smooth two-colour gradient, a little pixel noise,
    thin lines and small dots of random colours."""
    s = SIZE
    a, b = _uniform(g, n, 3, 1, 1), _uniform(g, n, 3, 1, 1)
    angle = _uniform(g, n, 1, 1, 1, high=6.2832)
    ramp = ((yy * angle.cos() + xx * angle.sin()) / s + 1) / 2  # (n, 1, s, s) in about [0, 1]
    images = (a + (b - a) * ramp) * 0.6 + 0.2 + 0.04 * torch.randn(n, 3, s, s, generator=g)
    # clutter: thin lines and small dots of random colours, under the object
    ends = _uniform(g, n, LINES, 4, low=2.0, high=s - 3.0)
    colours = _uniform(g, n, LINES, 3)
    for k in range(LINES):  # one line at a time: (n, S, S) temporaries, not (n, LINES, S, S)
        y0, x0, y1, x1 = (ends[:, k, i].view(n, 1, 1) for i in range(4))
        images = _paint(images, _segment_distance(y0, x0, y1, x1, yy, xx) <= 0.7, colours[:, k])
    centres = _uniform(g, n, DOTS, 2, low=2.0, high=s - 3.0)
    dot_r = _uniform(g, n, DOTS, low=1.5, high=3.0)
    colours = _uniform(g, n, DOTS, 3)
    for k in range(DOTS):
        cy, cx, rk = (centres[:, k, 0].view(n, 1, 1), centres[:, k, 1].view(n, 1, 1),
                      dot_r[:, k].view(n, 1, 1))
        images = _paint(images, (yy - cy) ** 2 + (xx - cx) ** 2 <= rk**2, colours[:, k])
    return images


def _standing_out(g: torch.Generator, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """A colour ``(n, 3)`` per object that stands out: dark where the background under the
    object is light on average, light where it is dark."""
    n = images.shape[0]
    near = (masks[:, None] * images).sum(dim=(2, 3)) / masks.sum(dim=(1, 2))[:, None]
    return torch.where(near.mean(1, keepdim=True) > 0.5, 0.25 * _uniform(g, n, 3),
                       1 - 0.25 * _uniform(g, n, 3))


def _boxes(masks: torch.Tensor) -> torch.Tensor:
    """``(n, 4)`` tight boxes ``(top, left, bottom, right)`` of masks ``(n, S, S)``."""
    s = masks.shape[-1]
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (n, s) each
    index = torch.arange(s)
    return torch.stack([
        torch.where(rows, index, s).amin(1), torch.where(cols, index, s).amin(1),
        torch.where(rows, index, -1).amax(1), torch.where(cols, index, -1).amax(1),
    ], dim=1)


def make_shapes(n: int, *, seed: int = 0, labels: torch.Tensor | None = None) -> ShapeBatch:
    """``n`` images of the shapes task, fixed by ``seed`` (a private ``torch.Generator``: the
    global random state is neither used nor moved). ``labels`` ``(n,)`` picks the classes;
    default: drawn at random."""
    g = torch.Generator().manual_seed(seed)
    s = SIZE
    yy, xx = _grid()
    if labels is None:
        labels = torch.randint(len(SHAPES), (n,), generator=g)
    labels = torch.as_tensor(labels, dtype=torch.long)
    images = _cluttered_background(g, n, yy, xx)
    # the object
    r = _uniform(g, n, 1, 1, low=RADIUS[0], high=RADIUS[1])
    cy = r + 1 + _uniform(g, n, 1, 1) * (s - 3 - 2 * r)
    cx = r + 1 + _uniform(g, n, 1, 1) * (s - 3 - 2 * r)
    masks = _shape_masks(labels, cy, cx, r, yy, xx)
    images = _paint(images, masks, _standing_out(g, images, masks)).clamp(0, 1)
    return ShapeBatch(images, labels, _boxes(masks), masks)


def make_shape_pairs(n: int, *, seed: int = 0) -> ShapePairs:
    """``n`` images with two shapes of different classes each, fixed by ``seed`` (a private
    generator, as :func:`make_shapes`).

    The image is cut in two halves, left | right or top | bottom (drawn per image), and each
    object (radius 7-11 px, as in :func:`make_shapes`) lies inside its own half, so the two are
    at least 4 px apart. The classes are two different ones drawn at random,
    in a random order: ``labels[:, 0]`` is not always the left or the top one. The background
    and its clutter are drawn as in :func:`make_shapes`.
    Example: ``pairs = make_shape_pairs(100, seed=1)``; ask a map for ``pairs.labels[:, 0]``
    and score it against ``pairs.boxes[:, 0]``, then for ``pairs.labels[:, 1]``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    g = torch.Generator().manual_seed(seed)
    s, half = SIZE, SIZE // 2
    yy, xx = _grid()
    first = torch.randint(len(SHAPES), (n,), generator=g)
    second = (first + torch.randint(1, len(SHAPES), (n,), generator=g)) % len(SHAPES)
    labels = torch.stack([first, second], dim=1)
    images = _cluttered_background(g, n, yy, xx)
    across = torch.rand(n, generator=g) < 0.5  # True: left | right, False: top | bottom
    side = torch.rand(n, generator=g) < 0.5    # True: object 0 in the first half
    masks = []
    for k in range(2):
        r = _uniform(g, n, 1, 1, low=RADIUS[0], high=RADIUS[1])
        along = r + 1 + _uniform(g, n, 1, 1) * (s - 3 - 2 * r)  # anywhere along the cut
        in_first = side if k == 0 else ~side
        low = torch.where(in_first.view(n, 1, 1), r + 1, half + 2 + r)
        # the centre lies in [low, low + room]: the object stays inside its half
        room = (half - 4 - 2 * r).clamp_min(0)
        across_cut = low + _uniform(g, n, 1, 1) * room
        cy = torch.where(across.view(n, 1, 1), along, across_cut)
        cx = torch.where(across.view(n, 1, 1), across_cut, along)
        masks.append(_shape_masks(labels[:, k], cy, cx, r, yy, xx))
    colours = [_standing_out(g, images, m) for m in masks]  # both from the bare background
    for m, colour in zip(masks, colours):
        images = _paint(images, m, colour)
    masks = torch.stack(masks, dim=1)
    boxes = torch.stack([_boxes(masks[:, 0]), _boxes(masks[:, 1])], dim=1)
    return ShapePairs(images.clamp(0, 1), labels, boxes, masks)
