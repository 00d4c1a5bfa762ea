"""Every method on every case, every measure: one number per case, then a mean with its 95 %
interval, and the model-free baselines every method must beat.

- :func:`course_methods`: every map of lessons 03-06, occlusion and the four baselines, each
  ``fn(model, x, target) -> (N, H, W)`` non-negative (what the measures rank);
- :data:`MEASURES`: pointing game, energy, deletion, insertion and ROAD in both orders, each
  with the direction that is good;
- :func:`score_cases`: every method's map on every case (``helpers.evaluation.Cases``) and every
  measure of it, as :class:`Scores` (one number per case, saved to and loaded from JSON);
  :func:`method_maps` and :func:`measure_maps` are its two halves;
- :func:`randomised_similarity`: the sanity check (Adebayo et al. 2018) on every case: the rank
  correlation of each map with the trained model's after randomising the network from the
  output down to a layer, by shuffling each weight tensor or by the paper's re-initialisation
  (:func:`randomize_layer`);
- :func:`summarise`: means, percentile-bootstrap intervals over cases, and which baselines each
  method beats (only where the intervals do not overlap).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .attribution import deconvnet, gradient_x_input, guided_backprop, saliency, smooth_grad
from .baselines import centre_map, edge_map, random_map, salient_blob_map
from .cam import grad_cam, score_cam
from .causal import auc, deletion, insertion
from .common import check_int, unwrap
from .evaluation import Cases, bootstrap_interval, energy, pointing_game
from .maps import to_map
from .models import load_model
from .occlusion import occlusion
from .progress import progress_bar
from .sanity import randomization_layers
from .similarity import rank_correlation

__all__ = [
    "Measure",
    "MEASURES",
    "BASELINES",
    "MethodFn",
    "course_methods",
    "Scores",
    "save_scores",
    "load_scores",
    "method_maps",
    "measure_maps",
    "score_cases",
    "randomize_layer",
    "randomised_similarity",
    "summarise",
    "fingerprint",
]

MethodFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Measure:
    """A measure of a map on a case: its ``name``, which direction is good (``better``:
    ``"higher"`` or ``"lower"``) and what it is (``what``)."""

    name: str
    better: str
    what: str


MEASURES: tuple[Measure, ...] = (
    Measure("pointing game", "higher", "1 if the map's maximum lies in the true tile, else 0"),
    Measure("energy", "higher", "share of the map's mass inside the true tile"),
    Measure("deletion", "lower", "area under p(class) as the map's top pixels turn grey "
                                 "(RISE)"),
    Measure("insertion", "higher", "area under p(class) as the map's top pixels come back "
                                   "into a blurred copy (RISE)"),
    Measure("ROAD, most relevant first", "lower",
            "area under p(class) as the top pixels are removed and imputed (ROAD)"),
    Measure("ROAD, least relevant first", "higher",
            "area under p(class) as the bottom pixels are removed and imputed (ROAD)"),
)
MEASURE = {m.name: m for m in MEASURES}

# Maps that know nothing of the model (``helpers.baselines``): a method must beat each of them.
BASELINES = ("random", "Sobel edges", "centre", "salient blob")


def _image_seed(image: torch.Tensor) -> int:
    """A seed that depends only on the image's values: the same case gets the same random map,
    whatever batch it comes in."""
    data = image.detach().float().cpu().contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "little")


def _per_image(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """Apply ``fn(x_i, target_i)`` to each image alone: methods with random draws (SmoothGrad)
    then give a case the same map in any batch."""
    def run(x, target):
        return torch.cat([fn(x[i:i + 1], target[i:i + 1]) for i in range(x.shape[0])])
    return run


def course_methods(*, samples: int = 16, channels: int = 32, window: int = 48, stride: int = 24,
                   batch_size: int = 4) -> dict[str, MethodFn]:
    """Every method of lessons 03-06, occlusion, and the four baselines, as
    ``{name: fn(model, x, target) -> (N, H, W)}``, every map non-negative at the input's size:

    - gradient maps (saliency, SmoothGrad with ``samples`` noisy copies at 15 % noise,
      gradient x input, guided backprop, DeconvNet): |map|, the largest over colour channels
      (``helpers.maps.to_map``);
    - Grad-CAM and Score-CAM (its ``channels`` most active channels) at the model's last conv
      stage: [0, 1] as they come;
    - occlusion (``window`` / ``stride`` pixels, grey patches): the positive drops only (the
      evidence *for* the class);
    - the baselines: a random map (seeded by the image), the Sobel edge map, a centre blob and
      the salient blob (colour distance from the median, smoothed).

    ``batch_size``: SmoothGrad's noisy copies back-propagated at once (4: about 300 MB of
    activations at 192 x 192 on Lite0; 1 for the least memory). The maps do not depend on it
    beyond rounding: the noise is drawn in the same order whatever the batch.
    """
    check_int("batch_size", batch_size)
    def smooth(model, x, target):
        return to_map(_per_image(lambda xi, ti: smooth_grad(
            model, xi, ti, n=samples, noise=0.15, batch_size=batch_size, seed=0,
            progress=False))(x, target))

    def random(model, x, target):
        return torch.cat([random_map(x[i:i + 1], seed=_image_seed(x[i]))
                          for i in range(x.shape[0])])

    return {
        "saliency": lambda model, x, target: to_map(saliency(model, x, target)),
        "SmoothGrad": smooth,
        "gradient × input": lambda model, x, target: to_map(gradient_x_input(model, x, target)),
        "guided backprop": lambda model, x, target: to_map(guided_backprop(model, x, target)),
        "DeconvNet": lambda model, x, target: to_map(deconvnet(model, x, target)),
        "Grad-CAM": lambda model, x, target: grad_cam(model, x, target),
        "Score-CAM": lambda model, x, target: score_cam(model, x, target, top_k=channels,
                                                        batch_size=8, progress=False),
        "occlusion": lambda model, x, target: occlusion(
            model, x, target, window=window, stride=stride, progress=False).clamp(min=0),
        "random": random,
        "Sobel edges": lambda model, x, target: edge_map(x),
        "centre": lambda model, x, target: centre_map(x),
        "salient blob": lambda model, x, target: salient_blob_map(x),
    }


@dataclass
class Scores:
    """One number per case for each method and measure.

    ``values[method][measure]``: ``(n,)`` float64, for the cases ``which`` (indices into the
    :class:`~helpers.evaluation.Cases` scored); ``better[measure]``: ``"higher"`` or
    ``"lower"``; ``settings``: how they were made (model, steps, the cases' fingerprint, ...).
    :func:`save_scores` and :func:`load_scores` keep them in a JSON file.
    """

    values: dict[str, dict[str, torch.Tensor]]
    which: list[int]
    better: dict[str, str]
    settings: dict = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.values)

    @property
    def measures(self) -> list[str]:
        return list(self.better)

    def merge(self, other: Scores) -> Scores:
        """These scores and ``other``'s (same cases) in one table."""
        if other.which != self.which:
            raise ValueError("scores of different cases cannot be merged")
        values = {m: dict(v) for m, v in self.values.items()}
        for method, table in other.values.items():
            values.setdefault(method, {}).update(table)
        return Scores(values, list(self.which), {**self.better, **other.better},
                      {**self.settings, **other.settings})

    @staticmethod
    def concat(parts: Sequence[Scores]) -> Scores:
        """Scores of consecutive groups of cases (same methods and measures) as one."""
        if not parts:
            raise ValueError("no scores to join")
        first = parts[0]
        values = {m: {k: torch.cat([part.values[m][k] for part in parts]) for k in table}
                  for m, table in first.values.items()}
        return Scores(values, [i for part in parts for i in part.which], dict(first.better),
                      dict(first.settings))

    def to_dict(self) -> dict:
        """The scores as plain data (numbers rounded to 6 decimals), for JSON."""
        return {"settings": self.settings, "which": self.which, "better": self.better,
                "values": {m: {k: [round(float(v), 6) for v in t] for k, t in table.items()}
                           for m, table in self.values.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> Scores:
        """Scores from :meth:`to_dict`'s data."""
        values = {m: {k: torch.tensor(v, dtype=torch.float64) for k, v in table.items()}
                  for m, table in data["values"].items()}
        return cls(values, list(data["which"]), dict(data["better"]), dict(data["settings"]))


def save_scores(path: str | Path, **sections: Scores) -> None:
    """Write named :class:`Scores` (e.g. ``measures=..., sanity=...``) to one JSON file."""
    data = {name: scores.to_dict() for name, scores in sections.items()}
    Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def load_scores(path: str | Path) -> dict[str, Scores]:
    """The named :class:`Scores` that :func:`save_scores` wrote."""
    data = json.loads(Path(path).read_text())
    return {name: Scores.from_dict(section) for name, section in data.items()}


def fingerprint(cases: Cases) -> str:
    """A short hash of the cases (images, classes, boxes): stored scores belong to exactly
    these cases."""
    digest = hashlib.sha256()
    for t in (cases.images, cases.image, cases.target, cases.boxes):  # images: normalised
        digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _reverse(maps: torch.Tensor) -> torch.Tensor:
    """Maps ``(N, H, W)`` whose ranking is reversed (least relevant first), still
    non-negative; ties keep their order."""
    return maps.amax(dim=(1, 2), keepdim=True) - maps


def _curves(model, x, target, maps, measures, steps, road_steps) -> dict[str, float]:
    """The causal measures of one case (``x`` ``(1, 3, H, W)``): one call per curve, so that
    ROAD's noise, seeded per call, is the same for the case in any batch."""
    plain = dict(steps=steps, batch_size=steps, progress=False, seed=0)
    road = dict(steps=road_steps, batch_size=road_steps, progress=False, seed=0,
                baseline="road")
    runs = {
        "deletion": lambda: deletion(model, x, target, attribution=maps, baseline="zero",
                                     **plain),
        "insertion": lambda: insertion(model, x, target, attribution=maps, baseline="blur",
                                       **plain),
        "ROAD, most relevant first": lambda: deletion(model, x, target, attribution=maps,
                                                      **road),
        "ROAD, least relevant first": lambda: deletion(model, x, target,
                                                       attribution=_reverse(maps), **road),
    }
    return {name: float(auc(run())[0]) for name, run in runs.items() if name in measures}


def _measure_names(measures: Sequence[str] | None) -> list[str]:
    names = [m.name for m in MEASURES] if measures is None else list(measures)
    unknown = [m for m in names if m not in MEASURE]
    if unknown:
        raise ValueError(f"unknown measures {unknown}; choose from {list(MEASURE)}")
    return names


def measure_maps(model, cases: Cases, which: Sequence[int], maps: Mapping[str, torch.Tensor],
                 *, measures: Sequence[str] | None = None, steps: int = 8, road_steps: int = 4
                 ) -> Scores:
    """The measures of maps already made: ``maps[method]`` ``(n, H, W)`` non-negative, one per
    case of ``which`` (indices into ``cases``). As :func:`score_cases`, which makes the maps and
    calls this. Returns :class:`Scores`."""
    names = _measure_names(measures)
    check_int("steps", steps)
    check_int("road_steps", road_steps)
    picked = [int(i) for i in which]
    if any(not 0 <= i < len(cases) for i in picked):
        raise ValueError(f"case indices must be in [0, {len(cases)})")
    x, target = cases.x(picked), cases.target[picked].to(cases.device)
    boxes, masks = cases.boxes[picked], cases.masks[picked]
    values: dict[str, dict[str, torch.Tensor]] = {}
    for method, m in maps.items():
        m = m.detach()
        if m.shape != (len(picked), *x.shape[-2:]):
            raise ValueError(f"method {method!r} gave maps of shape {tuple(m.shape)}, "
                             f"expected {(len(picked), *x.shape[-2:])}")
        table: dict[str, list[float]] = {name: [] for name in names}
        if "pointing game" in names:
            table["pointing game"] = pointing_game(m, boxes).double().tolist()
        if "energy" in names:
            table["energy"] = energy(m, masks).tolist()
        for j in range(len(picked)):
            curves = _curves(model, x[j:j + 1], target[j:j + 1], m[j:j + 1], names, steps,
                             road_steps)
            for name, value in curves.items():
                table[name].append(value)
        values[method] = {name: torch.tensor(v, dtype=torch.float64)
                          for name, v in table.items()}
    settings = {"steps": steps, "road steps": road_steps, "cases": fingerprint(cases),
                "model": getattr(model, "name", "")}
    return Scores(values, picked, {name: MEASURE[name].better for name in names}, settings)


def method_maps(model, cases: Cases, which: Sequence[int], methods: Mapping[str, MethodFn], *,
                batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Each method's maps ``(n, H, W)`` for the cases ``which``, each for the case's class,
    ``batch_size`` cases at a time (a backward pass through a batch holds all its activations:
    small batches keep the memory low; a map does not depend on the batch)."""
    check_int("batch_size", batch_size)
    picked = [int(i) for i in which]
    if not picked:
        raise ValueError("which names no case: give at least one case index")
    out = {}
    for method, fn in methods.items():
        parts = []
        for start in range(0, len(picked), batch_size):
            chunk = picked[start:start + batch_size]
            x, target = cases.x(chunk), cases.target[chunk].to(cases.device)
            maps = fn(model, x, target).detach()
            if maps.shape != (len(chunk), *x.shape[-2:]):
                raise ValueError(f"method {method!r} gave maps of shape {tuple(maps.shape)}, "
                                 f"expected {(len(chunk), *x.shape[-2:])}")
            parts.append(maps)
        out[method] = torch.cat(parts)
    return out


def score_cases(model, cases: Cases, methods: Mapping[str, MethodFn], *,
                measures: Sequence[str] | None = None, steps: int = 8, road_steps: int = 4,
                which: Sequence[int] | None = None, batch_size: int = 8,
                progress: bool = True) -> Scores:
    """Every method's map on every case and every measure of it.

    Maps come from ``methods`` (``{name: fn(model, x, target) -> (N, H, W) >= 0}``, e.g.
    :func:`course_methods`), computed ``batch_size`` cases at a time for each case's own class
    ``cases.target``. Then, per case and map: the pointing game and the energy against the true
    tile (``helpers.evaluation``), and the areas under four curves (``helpers.causal``):
    deletion to grey and insertion from a blur in ``steps`` steps, and ROAD's deletion with
    imputation in ``road_steps`` steps, most relevant pixels first and least relevant first
    (ROAD's imputation costs a linear solve per image: few steps). Curves are probabilities of
    the case's class, as RISE and ROAD define them (not divided by the clean probability).

    ``measures``: names from :data:`MEASURES` (default: all); ``which``: the cases to score
    (default: all), e.g. a seeded subset. Returns :class:`Scores`.
    Example: ``score_cases(model, cases, course_methods(), which=range(8))``.
    """
    names = _measure_names(measures)
    check_int("batch_size", batch_size)
    picked = list(range(len(cases))) if which is None else [int(i) for i in which]
    parts = []
    starts = range(0, len(picked), batch_size)
    for start in progress_bar(starts, desc="scoring cases", enabled=progress):
        chunk = picked[start:start + batch_size]
        maps = method_maps(model, cases, chunk, methods)
        parts.append(measure_maps(model, cases, chunk, maps, measures=names, steps=steps,
                                  road_steps=road_steps))
    return Scores.concat(parts)


# ----- the sanity check on every case ----------------------------------------------------------

def _fresh(model, seed: int) -> nn.Module:
    """The same architecture freshly initialised, as before training: a course model is rebuilt
    by ``load_model(name, pretrained=False)`` (its library's own initialisation); any other
    network is a copy with every module's ``reset_parameters()``. Seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        name = getattr(model, "name", None)
        if isinstance(name, str) and not isinstance(model, nn.Module):
            try:
                return load_model(name, pretrained=False).model.to(_device(model))
            except ValueError:
                pass
        net = copy.deepcopy(unwrap(model))
        for module in net.modules():
            if hasattr(module, "reset_parameters") and any(
                    True for _ in module.parameters(recurse=False)):
                module.reset_parameters()
        return net


def _device(model) -> torch.device:
    return next(unwrap(model).parameters()).device


def randomize_layer(module: nn.Module, how: str, *, generator: torch.Generator | None = None,
                    initial: nn.Module | None = None) -> None:
    """Randomise one layer's parameters in place; buffers (BatchNorm's running mean and
    variance) are kept.

    - ``"shuffle"``: permute the entries of each weight tensor (``generator``): the same values,
      so the same scale, with every learnt structure gone;
    - ``"reinit"``: the paper's re-initialisation (Adebayo et al. 2018 re-ran each layer's
      initialiser on its trainable variables; running statistics are not trainable, so they
      stayed): the parameters are copied from ``initial``, the same layer of a freshly
      initialised network of the same architecture.
    """
    with torch.no_grad():
        if how == "shuffle":
            for p in module.parameters():
                flat = p.detach().flatten()
                order = torch.randperm(flat.numel(), generator=generator).to(p.device)
                p.copy_(flat[order].view_as(p))
        elif how == "reinit":
            if initial is None:
                raise ValueError("reinit needs `initial`, the layer freshly initialised")
            for p, q in zip(module.parameters(), initial.parameters(), strict=True):
                p.copy_(q)
        else:
            raise ValueError(f"how must be 'shuffle' or 'reinit', not {how!r}")


def randomised_similarity(model, cases: Cases, methods: Mapping[str, MethodFn], *,
                          layers: Sequence[str] = ("classifier", "blocks.6", "blocks.3",
                                                   "conv_stem"),
                          randomize: str = "shuffle", seed: int = 0,
                          which: Sequence[int] | None = None, batch_size: int = 8,
                          progress: bool = True) -> Scores:
    """The cascading randomisation test (Adebayo et al. 2018) on every case.

    A copy of the network is randomised from the output down (``sanity.randomization_layers``
    order) to each layer of ``layers`` in turn, by ``randomize`` (``"shuffle"`` or ``"reinit"``,
    see :func:`randomize_layer`; ``seed`` fixes both), and each method's map for the case's
    class is compared with the trained network's map: Spearman's rank correlation
    (``helpers.similarity``). The caller's model is never touched. A map that still correlates
    near 1 with the trained one is not explaining the weights that were randomised: **low is
    good**, and 1.00 means the check *failed*.

    Returns :class:`Scores` with one measure per layer, named ``"<randomize>: down to
    <layer>"`` (better: ``"lower"``).
    """
    if randomize not in ("shuffle", "reinit"):
        raise ValueError(f"randomize must be 'shuffle' or 'reinit', not {randomize!r}")
    check_int("batch_size", batch_size)
    trained = unwrap(model)
    order = randomization_layers(trained)
    unknown = [layer for layer in layers if layer not in order]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; randomization_layers(model) lists "
                         f"{order}")
    depth = {layer: order.index(layer) for layer in layers}
    picked = list(range(len(cases))) if which is None else [int(i) for i in which]
    initial = dict(_fresh(model, seed).named_modules()) if randomize == "reinit" else None
    names = {layer: f"{randomize}: down to {layer}" for layer in layers}
    values = {method: {name: [] for name in names.values()} for method in methods}
    starts = range(0, len(picked), batch_size)
    for start in progress_bar(starts, desc=f"randomising ({randomize})", enabled=progress):
        chunk = picked[start:start + batch_size]
        x, target = cases.x(chunk), cases.target[chunk].to(cases.device)
        reference = {m: fn(trained, x, target).detach() for m, fn in methods.items()}
        net = copy.deepcopy(trained).eval()  # the same randomisation for every chunk
        modules = dict(net.named_modules())
        generator = torch.Generator().manual_seed(seed)
        done = -1
        for layer in sorted(layers, key=depth.get):
            for name in order[done + 1:depth[layer] + 1]:
                randomize_layer(modules[name], randomize, generator=generator,
                                initial=None if initial is None else initial[name])
            done = depth[layer]
            for m, fn in methods.items():
                maps = fn(net, x, target).detach()
                rho = rank_correlation(maps, reference[m])
                values[m][names[layer]] += rho.tolist()
    return Scores({m: {k: torch.tensor(v, dtype=torch.float64) for k, v in t.items()}
                   for m, t in values.items()},
                  picked, {name: "lower" for name in names.values()},
                  {"randomize " + randomize: seed, "cases": fingerprint(cases)})


# ----- summaries with intervals -------------------------------------------------------------------

@dataclass
class Row:
    """One method on one measure: ``mean`` and its interval ``[low, high]`` over ``n`` cases;
    ``better``: the good direction; ``beats``: the baselines whose interval lies entirely on
    the bad side of this one's; ``beats_all``: every baseline (None for a baseline)."""

    method: str
    measure: str
    better: str
    mean: float
    low: float
    high: float
    n: int
    beats: list[str]
    beats_all: bool | None


def summarise(scores: Scores, *, baselines: Sequence[str] = BASELINES, level: float = 0.95,
              resamples: int = 2000, seed: int = 0, groups: torch.Tensor | None = None
              ) -> list[Row]:
    """Each method's mean on each measure with its percentile-bootstrap interval over the cases
    (``helpers.evaluation.bootstrap_interval``; every method and measure resampled with the same
    cases), and the baselines it beats: a method beats a baseline only where their intervals do
    not overlap, on the good side. ``groups`` ``(n,)``: resample whole groups (e.g. the cases'
    collages, ``cases.image[scores.which]``). Returns one :class:`Row` per method and measure."""
    present = [b for b in baselines if b in scores.values]
    rows = []
    stacked = torch.stack([scores.values[m][k] for m in scores.methods for k in scores.measures])
    mean, low, high = bootstrap_interval(stacked, level=level, resamples=resamples, seed=seed,
                                         groups=groups)
    cells = {}
    for i, (m, k) in enumerate((m, k) for m in scores.methods for k in scores.measures):
        cells[m, k] = (float(mean[i]), float(low[i]), float(high[i]))
    for m in scores.methods:
        for k in scores.measures:
            mu, lo, hi = cells[m, k]
            higher = scores.better[k] == "higher"
            beats = [b for b in present if b != m and (
                lo > cells[b, k][2] if higher else hi < cells[b, k][1])]
            rows.append(Row(m, k, scores.better[k], mu, lo, hi, len(scores.which), beats,
                            None if m in present else len(beats) == len(present)))
    return rows
