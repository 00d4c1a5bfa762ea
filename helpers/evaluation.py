"""Cases with known answers, and how to score a map against them.

A map answers "where is class c?". To measure how well, we need images where the answer is known.
Real photos of ImageNet objects are few offline, so we build **collages**: a 2 x 2 or 1 x 2 grid
of photos of *different* classes, each photo cropped, zoomed or mirrored, at a place we chose.
Every tile of a collage is one **case**: the collage, the class of that tile, and the tile's box.
A map that knows nothing about the class (an edge map, a centre blob) cannot tell the tiles
apart, so on these cases it scores at chance.

- :data:`PHOTOS`: the course's photos, each with the ImageNet classes a person would accept for
  it; :func:`folder_photos`: a teacher's own folder (one sub-folder per ImageNet class);
- :func:`check_photos`: what the model says of each photo, and how many of its crops it gets right;
- :func:`make_cases`: the collages and their cases (:class:`Cases`), only tiles the model
  classifies right alone, with a clear margin, and still ranks high inside the collage;
- :func:`pointing_game`, :func:`energy`: where a map's maximum falls, and how much of it falls on
  the true region;
- :func:`bootstrap_interval`: a percentile-bootstrap 95 % interval of a mean over cases.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.transforms import functional as TF

from .common import channels_last, check_int, check_number, evaluating, unwrap
from .images import DATA_DIR, ImageSource, load_image

__all__ = [
    "Photo",
    "PHOTOS",
    "CROPS",
    "LAYOUTS",
    "IMAGE_SUFFIXES",
    "Cases",
    "folder_photos",
    "check_photos",
    "make_cases",
    "pointing_game",
    "energy",
    "bootstrap_interval",
]


@dataclass(frozen=True)
class Photo:
    """A photo and the ImageNet classes a person would accept for it (``labels``, as in
    ``model.labels``); ``note`` says why, where it is not obvious."""

    name: str
    source: ImageSource
    labels: tuple[str, ...]
    note: str = ""


# The course's photos (helpers/data/SOURCES.md). A photo with no labels has no ImageNet class a
# person would accept; it is listed so that check_photos can show what the model makes of it.
PHOTOS: tuple[Photo, ...] = (
    Photo("camera", DATA_DIR / "evaluation" / "camera.png", ("tripod",),
          "a cameraman at a camera on a tripod"),
    Photo("cat", "cat", ("tabby", "tiger cat", "Egyptian cat"),
          "Chelsea, a striped domestic cat: ImageNet's three striped-cat classes overlap"),
    Photo("coffee", "coffee", ("espresso",), "a cup of espresso"),
    Photo("flower", DATA_DIR / "evaluation" / "flower.jpg", ("daisy",),
          "a dahlia: ImageNet has no dahlia, daisy is its nearest flower"),
    Photo("china", DATA_DIR / "evaluation" / "china.jpg", ("palace",),
          "a tower of the Summer Palace, Beijing"),
    Photo("rocket", "rocket", ("missile", "projectile"),
          "a rocket at launch: ImageNet's nearest classes are missile and projectile"),
    Photo("grace_hopper", "grace_hopper", ("military uniform",),
          "Grace Hopper in a U.S. Navy uniform"),
    Photo("astronaut", "astronaut", (), "a person in a spacesuit: no ImageNet class"),
)

# Crops of a photo, as fractions (left, top, right, bottom) of its width and height; each is
# also used mirrored. A crop is then fitted to the tile (centre part, no distortion): the
# smaller crops show the object larger (the "scales").
CROPS: dict[str, tuple[float, float, float, float]] = {
    "whole": (0.0, 0.0, 1.0, 1.0),
    "centre 80 %": (0.1, 0.1, 0.9, 0.9),
    "centre 60 %": (0.2, 0.2, 0.8, 0.8),
    "left 80 %": (0.0, 0.1, 0.8, 0.9),
    "right 80 %": (0.2, 0.1, 1.0, 0.9),
}

# Layout -> (rows, columns) of tiles.
LAYOUTS: dict[str, tuple[int, int]] = {"2x2": (2, 2), "1x2": (1, 2)}

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Cases:
    """Cases with known answers. Case ``i`` asks for class ``target[i]`` in collage
    ``image[i]``; the true answer is the tile ``boxes[i]``.

    ``pixels`` ``(M, 3, S, S)`` uint8: the collages (:meth:`x` and :attr:`images` give them
    normalised for the model, with its ``mean`` and ``std``, on ``device``); ``image`` ``(N,)``:
    which collage each case is in (its tiles are other cases); ``target`` ``(N,)`` class
    indices; ``boxes`` ``(N, 4)``: ``(top, left, bottom, right)`` pixel rows / columns of the
    tile, inclusive; ``probability`` ``(N,)``: the model's probability of the class on the whole
    collage, ``rank`` ``(N,)`` its rank there (0: the model's top class); ``photo``, ``crop``,
    ``layout``: each case's photo name, crop (e.g. ``"centre 80 %, mirrored"``) and layout
    (``"2x2"`` or ``"1x2"``); ``report``: what :func:`check_photos` says of the photos the
    cases were made from.
    """

    pixels: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image: torch.Tensor
    target: torch.Tensor
    boxes: torch.Tensor
    probability: torch.Tensor
    rank: torch.Tensor
    photo: list[str]
    crop: list[str]
    layout: list[str]
    report: list[dict] = field(default_factory=list)
    device: torch.device = torch.device("cpu")

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def collages(self, which: Sequence[int] | torch.Tensor | slice | None = None
                 ) -> torch.Tensor:
        """Collages ``which`` (default: all) normalised for the model, ``(m, 3, S, S)`` float on
        ``device``: exactly what ``model.preprocess`` makes of the pixels (``/ 255``, then
        ``(v - mean) / std``)."""
        pixels = self.pixels if which is None else self.pixels[which]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return pixels.float().div(255).sub_(mean).div_(std).to(self.device)

    @property
    def images(self) -> torch.Tensor:
        """Every collage normalised for the model ``(M, 3, S, S)`` (made on each call: the cases
        keep only the 8-bit pixels)."""
        return self.collages()

    def x(self, which: Sequence[int] | torch.Tensor | slice | None = None) -> torch.Tensor:
        """The images of the cases ``which`` (default: all), ``(n, 3, S, S)``, normalised for
        the model: a case's image is its collage."""
        picked = self.image if which is None else self.image[which]
        return self.collages(picked.reshape(-1))

    @property
    def size(self) -> tuple[int, int]:
        """``(S, S)``: the collages' height and width."""
        return tuple(self.pixels.shape[-2:])

    @property
    def masks(self) -> torch.Tensor:
        """The true regions as masks ``(N, S, S)`` bool (each case's tile)."""
        size = self.size
        rows = torch.arange(size[0])[None, :, None]
        cols = torch.arange(size[1])[None, None, :]
        top, left, bottom, right = (self.boxes[:, i, None, None] for i in range(4))
        return (rows >= top) & (rows <= bottom) & (cols >= left) & (cols <= right)

    @property
    def area(self) -> torch.Tensor:
        """Each case's tile as a share of the image ``(N,)``: the chance level of the pointing
        game and of the energy for a map that knows nothing of the class."""
        top, left, bottom, right = self.boxes.T
        return ((bottom - top + 1) * (right - left + 1)).double() / (self.size[0] * self.size[1])

    def subset(self, which: Sequence[int] | torch.Tensor) -> Cases:
        """The cases ``which``, in that order (the collages are shared, not copied)."""
        which = torch.as_tensor(which, dtype=torch.long).reshape(-1)
        keep = which.tolist()
        return Cases(self.pixels, self.mean, self.std, self.image[which], self.target[which],
                     self.boxes[which], self.probability[which], self.rank[which],
                     [self.photo[i] for i in keep], [self.crop[i] for i in keep],
                     [self.layout[i] for i in keep], self.report, self.device)


def folder_photos(folder: str | Path) -> tuple[Photo, ...]:
    """A teacher's own labelled photos: ``folder`` holds one sub-folder per ImageNet class, named
    as in ``model.labels`` (``_`` may stand for a space: ``tiger_cat``), with the photos of that
    class inside (jpg, png, ...). Example: ``data/images/tabby/1.jpg``,
    ``data/images/espresso/cup.png``. Returns one :class:`Photo` per file."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder (working directory: {Path.cwd()}); it must "
                         "hold one sub-folder per ImageNet class, named like model.labels")
    photos = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        label = sub.name.replace("_", " ")
        for file in sorted(sub.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                photos.append(Photo(f"{sub.name}/{file.name}", file, (label,)))
    if not photos:
        raise ValueError(f"no photos in {root}: expected sub-folders named by ImageNet class "
                         f"(e.g. {root / 'tabby'}) holding {', '.join(IMAGE_SUFFIXES[:3])} files")
    return tuple(photos)


def _crop(image: Image.Image, crop: str, mirror: bool, width: int, height: int) -> Image.Image:
    """``image`` cut to the crop, mirrored if asked, fitted to ``width`` x ``height``."""
    w, h = image.size
    a, b, c, d = CROPS[crop]
    part = image.crop((round(a * w), round(b * h), round(c * w), round(d * h)))
    if mirror:
        part = ImageOps.mirror(part)
    return ImageOps.fit(part, (width, height), Image.BICUBIC)


def _tensor(model, image: Image.Image) -> torch.Tensor:
    """A PIL image as the model's normalised input ``(3, H, W)`` (no resize, no crop)."""
    return TF.normalize(TF.to_tensor(image), list(model.mean), list(model.std))


@torch.no_grad()
def _probabilities(model, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    net = unwrap(model)
    device = next(net.parameters()).device
    with evaluating(net):
        return torch.cat([net(channels_last(part.to(device))).softmax(dim=1).cpu()
                          for part in batch.split(batch_size)])


def _label_index(model, label: str) -> int:
    try:
        return model.class_index(label)
    except ValueError as error:
        raise ValueError(f"photo label {label!r}: {error}") from None


def _pictures(photos: Sequence[Photo]) -> list[Image.Image | None]:
    """Each photo decoded once (``None`` for a photo without labels, never used in a case)."""
    return [load_image(photo.source) if photo.labels else None for photo in photos]


def _tile_size(layout: str, size: int) -> tuple[int, int]:
    """(height, width) of one tile of ``layout`` on a ``size`` x ``size`` canvas."""
    rows, cols = LAYOUTS[layout]
    return size // rows, size // cols


class _Tiles(dict):
    """Each photo's crops fitted to a tile, made once: ``tiles(p, crop, mirror, width, height)``
    (a collage reuses the tiles that were classified alone)."""

    def __init__(self, pictures: Sequence[Image.Image | None]):
        super().__init__()
        self.pictures = pictures

    def __call__(self, p: int, crop: str, mirror: bool, width: int, height: int) -> Image.Image:
        key = (p, crop, mirror, width, height)
        if key not in self:
            self[key] = _crop(self.pictures[p], crop, mirror, width, height)
        return self[key]


def _variants(model, photos: Sequence[Photo], tile: _Tiles, layout: str, size: int,
              margin: float, batch_size: int) -> dict[int, list[tuple[str, bool, int, float]]]:
    """For each photo (by position): the ``(crop, mirror, class, probability)`` the model
    classifies right on its own at the tile's size, with ``margin`` over the runner-up."""
    height, width = _tile_size(layout, size)
    jobs, tiles = [], []
    for p, photo in enumerate(photos):
        if not photo.labels:
            continue
        for crop in CROPS:
            for mirror in (False, True):
                jobs.append((p, crop, mirror))
                tiles.append(_tensor(model, tile(p, crop, mirror, width, height)))
    accepted: dict[int, list[tuple[str, bool, int, float]]] = {}
    if not jobs:
        return accepted
    probs = _probabilities(model, torch.stack(tiles), batch_size)
    top = probs.topk(2, dim=1)
    for (p, crop, mirror), values, indices in zip(jobs, top.values, top.indices):
        allowed = {_label_index(model, label) for label in photos[p].labels}
        if int(indices[0]) in allowed and float(values[0] - values[1]) >= margin:
            accepted.setdefault(p, []).append((crop, mirror, int(indices[0]), float(values[0])))
    return accepted


def _check(model, photos: Sequence[Photo], tile: _Tiles, layouts: Sequence[str], size: int,
           margin: float, batch_size: int) -> tuple[list[dict], dict]:
    """The rows of :func:`check_photos` and, per layout, the crops kept (``_variants``)."""
    batch = torch.cat([model.preprocess(picture if picture is not None else photo.source).cpu()
                       for photo, picture in zip(photos, tile.pictures)])
    probs = _probabilities(model, batch, batch_size)
    kept = {layout: _variants(model, photos, tile, layout, size, margin, batch_size)
            for layout in layouts}
    rows = []
    for p, photo in enumerate(photos):
        best = int(probs[p].argmax())
        allowed = [_label_index(model, label) for label in photo.labels]
        rows.append({
            "photo": photo.name, "accepted": ", ".join(photo.labels) or "-",
            "top": model.labels[best], "p top": float(probs[p, best]),
            "p accepted": float(probs[p, allowed].sum()) if allowed else 0.0,
            **{f"crops right, {layout}": len(kept[layout].get(p, [])) for layout in layouts},
        })
    return rows, kept


def check_photos(model, photos: Sequence[Photo] | None = None, *, size: int = 192,
                 margin: float = 0.25, batch_size: int = 16) -> list[dict]:
    """What the model says of each photo: one row per photo with ``"photo"``, ``"accepted"``
    (its labels), ``"top"`` (the model's top class on the whole photo, preprocessed as usual),
    ``"p top"``, ``"p accepted"`` (the summed probability of its accepted labels) and, per layout,
    how many of its ``2 len(CROPS)`` crops the model classifies right on their own at the tile's
    size with ``margin`` over the runner-up (``"crops right, 2x2"``, ``"crops right, 1x2"``):
    only those make cases. :func:`make_cases` keeps the same rows in ``Cases.report``."""
    photos = PHOTOS if photos is None else tuple(photos)
    return _check(model, photos, _Tiles(_pictures(photos)), list(LAYOUTS), size, margin,
                  batch_size)[0]


def make_cases(model, photos: Sequence[Photo] | None = None, *, collages: int = 180,
               size: int = 192, layouts: Sequence[str] = ("2x2", "1x2", "1x2"), seed: int = 0,
               margin: float = 0.25, top: int = 5, batch_size: int = 8) -> Cases:
    """Collages with known answers, and their cases.

    1. Every photo's crops (:data:`CROPS`, each also mirrored) are fitted to a tile of each
       layout (a 2 x 2 tile is ``size / 2`` square, a 1 x 2 tile ``size / 2`` wide and ``size``
       high) and kept only if the model, shown the tile alone, puts one of the photo's
       ``labels`` first with at least ``margin`` more probability than the runner-up: that
       class becomes the tile's class.
    2. ``collages`` collages, the ``layouts`` taken in turn (by default one 2 x 2 for two
       1 x 2: fewer photos survive at the 2 x 2 tile's size). Each draws photos of *different*
       classes (as many as tiles), one kept crop of each, in a random order (a ``seed``-ed
       generator of its own: the same arguments give the same cases on any machine).
    3. Each tile is a case if the model, shown the whole collage, still ranks the tile's class
       among its ``top`` classes (the evidence is there to be found); the others are dropped.

    ``photos``: :data:`PHOTOS` (default) or :func:`folder_photos`. Returns :class:`Cases`.
    Example: ``cases = make_cases(model)``; ``cases.x()`` is the batch ``(N, 3, 192, 192)``.
    The collages are kept as 8-bit pixels (``Cases.pixels``, 110 kB each at 192 x 192) and
    normalised when a method needs them.
    """
    photos = PHOTOS if photos is None else tuple(photos)
    check_int("collages", collages)
    check_int("size", size, low=32)
    check_int("top", top)
    check_int("batch_size", batch_size)
    check_number("margin", margin, low=0.0, high=1.0)
    unknown = [layout for layout in layouts if layout not in LAYOUTS]
    if unknown or not layouts:
        raise ValueError(f"layouts must be some of {list(LAYOUTS)}, got {list(layouts)}")
    tile = _Tiles(_pictures(photos))
    report, kept = _check(model, photos, tile, layouts, size, margin, batch_size)
    rng = random.Random(seed)
    pixels = torch.empty(collages, 3, size, size, dtype=torch.uint8)
    records, seen = [], set()
    made = attempts = 0
    while made < collages:
        attempts += 1
        if attempts > 50 * collages:
            raise ValueError(f"could only make {made} different collages from these photos: "
                             "add photos or ask for fewer collages")
        layout = layouts[made % len(layouts)]
        rows, cols = LAYOUTS[layout]
        by_class: dict[tuple[str, ...], list[int]] = {}
        for p in kept[layout]:
            by_class.setdefault(photos[p].labels, []).append(p)
        if len(by_class) < rows * cols:
            raise ValueError(
                f"a {layout} collage needs photos of {rows * cols} different classes that the "
                f"model gets right at this size; only {len(by_class)} "
                f"({', '.join(' / '.join(k) for k in by_class) or 'none'}): add photos or use "
                "other layouts (check_photos shows what the model says of each photo)")
        groups = rng.sample(sorted(by_class), rows * cols)  # different classes, random places
        tiles = []
        for group in groups:
            p = rng.choice(by_class[group])
            crop, mirror, target, _ = rng.choice(kept[layout][p])
            tiles.append((p, crop, mirror, target))
        key = (layout, tuple((p, crop, mirror) for p, crop, mirror, _ in tiles))
        if key in seen:
            continue
        seen.add(key)
        height, width = _tile_size(layout, size)
        canvas = Image.new("RGB", (size, size), "white")
        for k, (p, crop, mirror, target) in enumerate(tiles):
            row, col = divmod(k, cols)
            canvas.paste(tile(p, crop, mirror, width, height), (col * width, row * height))
            box = (row * height, col * width, (row + 1) * height - 1, (col + 1) * width - 1)
            crop_name = f"{crop}, mirrored" if mirror else crop
            records.append((made, target, box, photos[p].name, crop_name, layout))
        pixels[made] = TF.pil_to_tensor(canvas)
        made += 1
    device = next(unwrap(model).parameters()).device
    cases = Cases(pixels, tuple(model.mean), tuple(model.std), torch.zeros(0, dtype=torch.long),
                  torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long),
                  torch.zeros(0), torch.zeros(0, dtype=torch.long), [], [], [], report, device)
    net = unwrap(model)
    with evaluating(net), torch.no_grad():
        probs = torch.cat([net(channels_last(cases.collages(part))).softmax(dim=1).cpu()
                           for part in torch.arange(collages).split(batch_size)])
    rank = {(r[0], r[1]): int((probs[r[0]] > probs[r[0], r[1]]).sum()) for r in records}
    keep = [r for r in records if rank[r[0], r[1]] < top]
    if not keep:
        raise ValueError("no tile's class is among the model's top classes on its collage")
    index = torch.tensor([r[0] for r in keep])
    target = torch.tensor([r[1] for r in keep])
    return Cases(pixels, tuple(model.mean), tuple(model.std), image=index, target=target,
                 boxes=torch.tensor([r[2] for r in keep]), probability=probs[index, target],
                 rank=torch.tensor([rank[r[0], r[1]] for r in keep]),
                 photo=[r[3] for r in keep], crop=[r[4] for r in keep],
                 layout=[r[5] for r in keep], report=report, device=device)


# ----- scoring a map against the known answer ------------------------------------------------

def pointing_game(maps: torch.Tensor, boxes: torch.Tensor, *, tolerance: int = 0) -> torch.Tensor:
    """Hits ``(N,)`` bool: is each map's maximum inside its box (grown by ``tolerance`` pixels)?

    ``maps`` ``(N, H, W)``, ``boxes`` ``(N, 4)`` as ``(top, left, bottom, right)`` inclusive
    (Zhang et al. 2016 score the same way with a 15-pixel tolerance on 224-pixel images). Ties:
    the first maximum in row-major order counts.
    """
    n, _, w = maps.shape
    flat = maps.reshape(n, -1).argmax(dim=1).cpu()
    row, col = flat // w, flat % w
    top, left, bottom, right = (boxes[:, i].cpu() for i in range(4))
    return ((row >= top - tolerance) & (row <= bottom + tolerance)
            & (col >= left - tolerance) & (col <= right + tolerance))


def energy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The share of each map's mass inside its true region ``(N,)`` float64 in [0, 1] (Wang et
    al. 2020's "energy-based pointing game"): ``sum(map * mask) / sum(map)``.

    ``maps`` ``(N, H, W)``, non-negative (a magnitude: ``helpers.maps.to_map``), finite;
    ``masks`` ``(N, H, W)`` bool. A map that is 0 everywhere has no mass to place: its share is
    defined as the region's area (what a flat map would get), never NaN.
    """
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ")
    values = maps.detach().double().cpu()
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError("energy needs finite, non-negative maps (helpers.maps.to_map of a "
                         "signed attribution)")
    inside = masks.cpu().to(values.dtype)
    total = values.sum(dim=(1, 2))
    share = (values * inside).sum(dim=(1, 2)) / total.clamp_min(1e-300)
    area = inside.mean(dim=(1, 2))
    return torch.where(total > 0, share, area)


def bootstrap_interval(values: torch.Tensor, *, level: float = 0.95, resamples: int = 2000,
                       seed: int = 0, groups: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mean over cases and its percentile-bootstrap interval (Efron 1979).

    ``values`` ``(N,)`` one number per case, or ``(..., N)``: several measures of the *same*
    cases, resampled together (the same resampled cases for every row, so rows stay
    comparable). Each of ``resamples`` draws picks N cases with replacement (a ``seed``-ed
    generator of its own); the interval holds the middle ``level`` of the draws' means.
    ``groups`` ``(N,)``: resample whole groups instead of cases (a cluster bootstrap: cases that
    share an image are not independent). Returns ``(mean, low, high)``, each ``(...)`` float64.
    Example: ``mean, low, high = bootstrap_interval(hits.float())``.
    """
    check_number("level", level, low=0.0, high=1.0, low_open=True)
    check_int("resamples", resamples)
    data = torch.as_tensor(values).detach().double().cpu()
    if data.ndim == 0 or data.shape[-1] < 1:
        raise ValueError("bootstrap_interval needs at least one case (values of shape (..., N))")
    if not torch.isfinite(data).all():
        raise ValueError("values hold NaN or infinite numbers")
    n = data.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    if groups is None:
        draws = torch.randint(n, (resamples, n), generator=generator)
        weights = torch.zeros(resamples, n, dtype=torch.float64)
        weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    else:
        labels = torch.as_tensor(groups).reshape(-1).cpu()
        if labels.shape[0] != n:
            raise ValueError(f"groups has {labels.shape[0]} entries for {n} cases")
        _, member = labels.unique(return_inverse=True)
        count = int(member.max()) + 1
        draws = torch.randint(count, (resamples, count), generator=generator)
        picked = torch.zeros(resamples, count, dtype=torch.float64)
        picked.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
        weights = picked[:, member]  # a case counts as often as its group was drawn
    means = (data @ weights.T) / weights.sum(dim=1)  # (..., resamples)
    alpha = (1 - level) / 2
    low = torch.quantile(means, alpha, dim=-1)
    high = torch.quantile(means, 1 - alpha, dim=-1)
    return data.mean(dim=-1), low, high
