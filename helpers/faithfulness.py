"""Can we trust a map? Occlusion, the causal metrics deletion / insertion, and sanity checks.

Calling convention as in ``helpers.attribution``: ``method(model, x, target=None, *, knobs)``
with ``x`` a batch ``(N, 3, H, W)`` in the model's input space and ``target`` as there (None:
each image's top class, fixed once on the clean images). The model runs in eval mode without
gradients and leaves every call exactly as it came, also when the call raises; the sanity check
randomises a deep copy, never the caller's model.

- :func:`occlusion` (Zeiler & Fergus 2014): slide a grey patch, record how much the class
  score drops. Equal to captum's ``Occlusion`` with a window ``(3, w, w)``.
- :func:`deletion` / :func:`insertion` (Petsiuk et al. 2018, RISE): remove / put back pixels in
  the order of the map and track the class probability; :func:`auc` summarises a curve.
  ``baseline="road"`` fills removed pixels by noisy linear imputation from their neighbours
  (Rong et al. 2022, ROAD), so that the curve measures the removed *information*, not the shock
  of out-of-distribution holes.
- :func:`cascading_randomization` (Adebayo et al. 2018): randomise the layers from the output
  down and measure how much each method's map still looks like the trained one
  (:func:`rank_correlation`, :func:`ssim`).
- Baselines a map must beat: :func:`random_map`, :func:`edge_map` (Sobel).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .common import EPS, Target, check_batch, evaluating, fixed_targets, minmax, unwrap

__all__ = [
    "occlusion",
    "deletion",
    "insertion",
    "auc",
    "blur",
    "noisy_linear_imputation",
    "random_map",
    "edge_map",
    "to_map",
    "normalized_map",
    "rank_correlation",
    "ssim",
    "randomization_layers",
    "Cascade",
    "cascading_randomization",
]

# A baseline: a value in the model's input space (0.0 = the mean colour after normalisation),
# a tensor broadcastable to x, or one of "zero", "blur", "road".
Baseline = Union[float, torch.Tensor, str]

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion start: a strong blur that keeps colours
ROAD_NOISE = 0.01  # ROAD's noise on imputed pixels (absolute, in the model's input space)


# ----- occlusion -------------------------------------------------------------------------------

def occlusion(model, x: torch.Tensor, target: Target = None, *, window: int = 16,
              stride: int = 8, baseline: float | torch.Tensor = 0.0, batch_size: int = 8,
              progress: bool = True) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): how much the class score drops when a patch is hidden.

    A ``window`` x ``window`` patch (all colour channels) is set to ``baseline`` at the positions
    ``0, stride, 2 stride, ...`` (``ceil((H - window) / stride) + 1`` of them per axis; the last
    one may stick out and is clipped, as in captum). Each pixel gets the mean over the patches
    that cover it of ``y_c(x) - y_c(x with the patch hidden)``, ``y_c`` the class *logit*:
    positive = hiding it hurts the class. ``baseline`` 0.0 is the mean colour for models
    normalised with the dataset mean (grey for Lite0); a tensor broadcastable to ``x`` gives a
    baseline image. Occluded copies run ``batch_size`` at a time (8: the fastest per image on 2
    CPU cores for Lite0), in channels-last memory order. Equals
    ``captum.attr.Occlusion(model).attribute(x, sliding_window_shapes=(3, w, w),
    strides=(3, s, s), baselines=baseline, target=c)[:, 0]``.

    ``(N, 3, H, W)`` -> ``(N, H, W)``, signed.
    """
    check_batch(x)
    height, width = x.shape[-2:]
    if not (isinstance(window, int) and isinstance(stride, int)) or window < 1 or stride < 1:
        raise ValueError("window and stride must be positive integers (pixels)")
    if window > min(height, width):
        raise ValueError(f"window {window} is larger than the image ({height} x {width})")
    fill = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    rows = range(0, stride * math.ceil((height - window) / stride) + 1, stride)
    cols = range(0, stride * math.ceil((width - window) / stride) + 1, stride)
    patches = [(r, c) for r in rows for c in cols]
    covered = torch.zeros(height, width, dtype=x.dtype, device=x.device)
    for r, c in patches:
        covered[r:r + window, c:c + window] += 1
    classes = fixed_targets(model, x, target)
    net = unwrap(model)
    drops = torch.zeros(x.shape[0], height, width, dtype=x.dtype, device=x.device)
    jobs = [(i, s) for i in range(x.shape[0]) for s in range(0, len(patches), batch_size)]
    with evaluating(net), torch.no_grad():
        clean = net(x).gather(1, classes[:, None])[:, 0]
        for i, start in tqdm(jobs, desc="occlusion", disable=not progress, leave=False):
            chunk = patches[start:start + batch_size]
            batch = x[i:i + 1].repeat(len(chunk), 1, 1, 1)
            for j, (r, c) in enumerate(chunk):
                batch[j, :, r:r + window, c:c + window] = fill[i, :, r:r + window, c:c + window]
            drop = clean[i] - net(_channels_last(batch))[:, classes[i]]
            for j, (r, c) in enumerate(chunk):
                drops[i, r:r + window, c:c + window] += drop[j]
    return drops / covered


def _channels_last(batch: torch.Tensor) -> torch.Tensor:
    """The batch in channels-last memory order (same values): CPU convolutions run about 15 %
    faster on it (measured on Lite0, 1 thread), without touching the model's weights."""
    return batch.contiguous(memory_format=torch.channels_last)


# ----- deletion and insertion ------------------------------------------------------------------

def deletion(model, x: torch.Tensor, saliency: torch.Tensor, target: Target = None, *,
             steps: int = 28, baseline: Baseline = "zero", batch_size: int = 8, seed: int = 0,
             progress: bool = True) -> torch.Tensor:
    """Deletion (Petsiuk et al. 2018): remove the pixels the map ranks highest first.

    At step ``k`` the ``round(k H W / steps)`` top pixels of ``saliency`` (all colour channels)
    are replaced by the ``baseline``: ``"zero"`` (default, RISE: zeros in the model's input
    space, the mean colour), ``"blur"`` (the image blurred by :func:`blur`), ``"road"`` (noisy
    linear imputation from the pixels still there, :func:`noisy_linear_imputation`), a float or a
    tensor broadcastable to ``x``. Tracks the softmax probability of the target class, fixed on
    ``x``. A faithful map makes the curve fall fast: **low** :func:`auc` is good.

    ``saliency``: ``(N, H, W)``, ``(N, 1, H, W)``, ``(N, C, H, W)`` (ranked by |.| max over
    channels) or a smaller ``(N, h, w)`` (upsampled bilinearly). Returns ``(N, steps + 1)``;
    column 0 is exactly ``softmax(model(x))[target]``.
    """
    return _causal_curve(model, x, saliency, target, steps=steps, baseline=baseline,
                         batch_size=batch_size, seed=seed, progress=progress, insert=False)


def insertion(model, x: torch.Tensor, saliency: torch.Tensor, target: Target = None, *,
              steps: int = 28, baseline: Baseline = "blur", batch_size: int = 8, seed: int = 0,
              progress: bool = True) -> torch.Tensor:
    """Insertion (Petsiuk et al. 2018): start from a blurred copy and put the pixels back,
    highest-ranked first (``baseline`` as in :func:`deletion`; default ``"blur"``: RISE's
    Gaussian blur, kernel 11, sigma 5; ``"road"``: the pixels not yet back are imputed from
    those that are). A faithful map makes the curve rise fast: **high** :func:`auc` is good.

    Returns ``(N, steps + 1)``; the last column is exactly ``softmax(model(x))[target]``.
    """
    return _causal_curve(model, x, saliency, target, steps=steps, baseline=baseline,
                         batch_size=batch_size, seed=seed, progress=progress, insert=True)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under curves ``(..., steps + 1)`` sampled at evenly spaced fractions 0, 1/steps, ...,
    1 of the pixels: the trapezoidal rule on [0, 1], so a curve of probabilities gives a number
    in [0, 1]. Returns ``(...)``."""
    if curve.shape[-1] < 2:
        raise ValueError("a curve needs at least 2 points")
    steps = curve.shape[-1] - 1
    return (curve[..., 1:] + curve[..., :-1]).sum(dim=-1) / (2 * steps)


def _causal_curve(model, x, saliency, target, *, steps, baseline, batch_size, seed, progress,
                  insert):
    check_batch(x)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError("steps must be a positive integer")
    order = _pixel_order(saliency, x)
    classes = fixed_targets(model, x, target)
    n, pixels = order.shape
    generator = torch.Generator(device=x.device).manual_seed(seed)
    # Each image moves from `start` to `end`; the first `counts[k]` pixels of `order` take their
    # value from `end`. Deletion: x -> baseline; insertion: baseline -> x.
    counts = [round(k * pixels / steps) for k in range(steps + 1)]
    net = unwrap(model)
    curve = torch.empty(n, steps + 1, dtype=x.dtype, device=x.device)
    clean_step = steps if insert else 0
    jobs = [(i, k) for i in range(n) for k in range(steps + 1) if k != clean_step]
    with evaluating(net), torch.no_grad():
        curve[:, clean_step] = net(x).softmax(dim=1).gather(1, classes[:, None])[:, 0]
        road = isinstance(baseline, str) and baseline == "road"
        fixed = None if road else _baseline_image(x, baseline)
        chunks = range(0, len(jobs), batch_size)
        for start in tqdm(chunks, desc="insertion" if insert else "deletion",
                          disable=not progress, leave=False):
            chunk = jobs[start:start + batch_size]
            images = _step_images(x, order, [(i, counts[k]) for i, k in chunk], insert, fixed,
                                  generator)
            probs = net(_channels_last(images)).softmax(dim=1)
            for j, (i, k) in enumerate(chunk):
                curve[i, k] = probs[j, classes[i]]
    return curve


def _step_images(x, order, jobs, insert, fixed, generator):
    """Images ``(len(jobs), 3, H, W)`` of a curve: for each ``(i, count)``, image ``i`` with the
    first ``count`` pixels of its order changed (deleted, or for insertion: put back)."""
    index = torch.tensor([i for i, _ in jobs], device=x.device)
    changed = torch.zeros(len(jobs), order.shape[1], dtype=torch.bool, device=x.device)
    for j, (i, count) in enumerate(jobs):
        changed[j, order[i, :count]] = True
    changed = changed.view(len(jobs), 1, *x.shape[-2:])
    missing = ~changed if insert else changed  # pixels that do not show the image
    if fixed is None:  # ROAD: impute what is missing from what is there
        return noisy_linear_imputation(x[index], ~missing[:, 0], generator=generator)
    return torch.where(missing, fixed[index], x[index])


def _pixel_order(saliency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pixel indices ``(N, H W)`` from the highest to the lowest map value (stable order)."""
    if not isinstance(saliency, torch.Tensor):
        raise TypeError("saliency must be a tensor map (N, H, W)")
    maps = to_map(saliency.detach().to(x.device, x.dtype))
    if maps.shape[0] != x.shape[0]:
        raise ValueError(f"got {maps.shape[0]} maps for {x.shape[0]} images")
    if maps.shape[-2:] != x.shape[-2:]:
        maps = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
    return maps.flatten(1).argsort(dim=1, descending=True, stable=True)


def _baseline_image(x: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(x)
        if baseline == "blur":
            return blur(x)
        raise ValueError(f"baseline must be 'zero', 'blur', 'road', a float or a tensor, "
                         f"not {baseline!r}")
    return torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)


def blur(x: torch.Tensor, kernel: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Gaussian blur of each channel, ``(N, C, H, W)`` -> same; reflected borders (RISE pads
    with zeros, which darkens the border; reflecting keeps the colours)."""
    axis = torch.arange(kernel, dtype=x.dtype, device=x.device) - (kernel - 1) / 2
    g = torch.exp(-axis**2 / (2 * sigma**2))
    g = g / g.sum()
    channels = x.shape[1]
    padded = F.pad(x, [kernel // 2] * 4, mode="reflect")
    rows = F.conv2d(padded, g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def _neighbour_sum(t: torch.Tensor) -> torch.Tensor:
    """ROAD's weighted sum of the 8 neighbours (direct 1/6, diagonal 1/12; outside = 0), by
    shifted slices (several times faster than a depthwise convolution on a CPU)."""
    p = F.pad(t, (1, 1, 1, 1))
    h, w = t.shape[-2:]
    diagonal = p[..., :h, :w] + p[..., :h, 2:] + p[..., 2:, :w] + p[..., 2:, 2:]
    direct = p[..., 1:h + 1, :w] + p[..., 1:h + 1, 2:] + p[..., :h, 1:w + 1] + p[..., 2:, 1:w + 1]
    return (diagonal + 2 * direct) / 12


def noisy_linear_imputation(x: torch.Tensor, known: torch.Tensor, *, noise: float = ROAD_NOISE,
                            generator: torch.Generator | None = None, tol: float = 1e-4,
                            max_iter: int = 500) -> torch.Tensor:
    """ROAD's imputation (Rong et al. 2022): each missing pixel becomes the weighted mean of its
    8 neighbours (direct 1/6, diagonal 1/12; neighbours outside the image left out), known
    pixels stay, plus Gaussian noise of std ``noise`` on the imputed ones.

    The means form a sparse symmetric positive-definite system (a discrete Laplace equation on
    the holes), solved by conjugate gradients with 3 x 3 convolutions, all images and channels
    at once, started from the solution at half the resolution (so that large holes need tens of
    iterations, not thousands). An image with no known pixel gets its own mean colour.
    ``x`` ``(N, C, H, W)``, ``known`` ``(N, H, W)`` bool -> ``(N, C, H, W)``.
    """
    known = known.to(torch.bool).expand(x.shape[0], *x.shape[-2:])[:, None]
    filled = _solve_holes(x, known, tol, max_iter)
    if noise:
        filled = filled + noise * torch.randn(x.shape, generator=generator, device=x.device,
                                              dtype=x.dtype)
    return torch.where(known, x, filled)


def _solve_holes(x: torch.Tensor, known: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """The noise-free imputation; ``known`` ``(N, 1, H, W)`` bool."""
    missing = (~known).to(x.dtype)
    guess = torch.zeros_like(x)
    if min(x.shape[-2:]) >= 16:  # start from the half-resolution solution
        share = F.avg_pool2d(known.to(x.dtype), 2, ceil_mode=True)
        coarse_x = F.avg_pool2d(x * known, 2, ceil_mode=True) / share.clamp_min(EPS)
        coarse = _solve_holes(coarse_x, share > 0, tol, max_iter)
        guess = missing * F.interpolate(coarse, size=x.shape[-2:], mode="bilinear",
                                        align_corners=False)
    neighbour_sum = _neighbour_sum
    weight = neighbour_sum(torch.ones_like(x))  # sum of in-image neighbour weights

    def apply(v):  # A v on the missing pixels (v is 0 on known pixels)
        return missing * (weight * v - neighbour_sum(v))

    b = missing * neighbour_sum(x * known)
    v = guess
    r = b - apply(v)
    p = r.clone()
    rr = (r * r).sum(dim=(1, 2, 3), keepdim=True)
    limit = tol**2 * (b * b).sum(dim=(1, 2, 3), keepdim=True).clamp_min(EPS)
    for _ in range(max_iter):
        if bool((rr <= limit).all()):
            break
        ap = apply(p)
        alpha = rr / (p * ap).sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
        v = v + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum(dim=(1, 2, 3), keepdim=True)
        p = r + rr_new / rr.clamp_min(1e-30) * p
        rr = rr_new
    none_known = ~known.flatten(1).any(dim=1)
    if none_known.any():  # no neighbour information at all: the image's mean colour
        v[none_known] = x[none_known].mean(dim=(2, 3), keepdim=True).expand_as(x[none_known])
    return torch.where(known, x, v)


# ----- baselines and map comparisons ------------------------------------------------------------

def random_map(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A map that knows nothing: uniform noise ``(N, H, W)`` from a seeded generator."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return torch.rand((x.shape[0], *x.shape[-2:]), generator=generator, device=x.device,
                      dtype=x.dtype)


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """A map that knows no model: the Sobel gradient magnitude of the channel-mean image,
    ``(N, C, H, W)`` -> ``(N, H, W)`` in [0, 1] (replicated borders)."""
    grey = F.pad(x.mean(dim=1, keepdim=True), [1, 1, 1, 1], mode="replicate")
    sobel = torch.tensor([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=x.dtype, device=x.device)
    gx = F.conv2d(grey, sobel.view(1, 1, 3, 3))
    gy = F.conv2d(grey, sobel.t().reshape(1, 1, 3, 3))
    return minmax(torch.sqrt(gx**2 + gy**2)[:, 0])


def to_map(attribution: torch.Tensor) -> torch.Tensor:
    """Any method's output as one magnitude per pixel: ``(N, C, H, W)`` -> |.| max over channels
    ``(N, H, W)``; ``(N, H, W)`` -> |.|."""
    if attribution.ndim == 4:
        return attribution.abs().amax(dim=1)
    if attribution.ndim == 3:
        return attribution.abs()
    raise ValueError(f"expected maps (N, H, W) or (N, C, H, W), got shape "
                     f"{tuple(attribution.shape)}")


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor, ties getting their average rank (as scipy's rankdata)."""
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    return (ends - (counts - 1) / 2)[inverse]


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of two batches of maps ``(N, ...)``, per image ``(N,)``:
    the Pearson correlation of their ranks (ties averaged). A flat map carries no ranking: its
    correlation with anything is defined as 0 (scipy would give NaN)."""
    out = torch.zeros(a.shape[0], dtype=torch.float64)
    for i, (u, v) in enumerate(zip(a.flatten(1), b.flatten(1))):
        ru, rv = _ranks(u.detach().cpu()), _ranks(v.detach().cpu())
        ru, rv = ru - ru.mean(), rv - rv.mean()
        norm = ru.norm() * rv.norm()
        out[i] = (ru @ rv) / norm if norm > 0 else 0.0
    return out


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of maps ``(N, H, W)`` in [0, ``data_range``],
    per image ``(N,)``: Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03, averaged over
    the positions where the window fits (scikit-image's ``gaussian_weights=True`` recipe)."""
    a, b = a[:, None].double(), b[:, None].double()
    axis = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-axis**2 / (2 * sigma**2))
    g = (g / g.sum()).to(a.device)
    kernel = (g[:, None] * g[None, :]).view(1, 1, window, window)

    def mean(t):
        return F.conv2d(t, kernel)

    mu_a, mu_b = mean(a), mean(b)
    var_a = mean(a * a) - mu_a**2
    var_b = mean(b * b) - mu_b**2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.mean(dim=(1, 2, 3)).cpu()


def normalized_map(attribution: torch.Tensor, clip: float = 0.99) -> torch.Tensor:
    """Any method's output as a picture ``(N, H, W)`` in [0, 1]: |.| (max over channels),
    capped at its ``clip`` quantile per image (a few extreme pixels must not set the scale),
    min-max per image. SSIM compares these pictures."""
    magnitude = to_map(attribution).float()
    cap = torch.quantile(magnitude.flatten(1), clip, dim=1).view(-1, 1, 1)
    return minmax(torch.minimum(magnitude, cap))


# ----- sanity checks: model parameter randomisation ---------------------------------------------

def randomization_layers(model) -> list[str]:
    """The default randomisation order: the top-level modules that hold parameters, from the
    output down; a container (``nn.Sequential`` / ``nn.ModuleList`` such as EfficientNet's
    ``blocks``) is split into its children. Lite0: ``classifier, bn2, conv_head, blocks.6, ...,
    blocks.0, bn1, conv_stem``."""
    names = []
    for name, child in unwrap(model).named_children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            names += [f"{name}.{sub}" for sub, grandchild in child.named_children()
                      if any(True for _ in grandchild.parameters())]
        else:
            names.append(name)
    return names[::-1]


def _randomize(module: nn.Module, how: str, generator: torch.Generator) -> None:
    """Randomise a module's parameters in place, keeping each tensor's scale; buffers (BatchNorm
    running statistics) are left as they are.

    ``"shuffle"``: permute each tensor's entries (the same values, structure destroyed);
    ``"gaussian"``: new entries drawn from a normal with the tensor's own mean and std. Either way
    the weights keep their size, so activations stay in the range the trained BatchNorm
    statistics expect; ``reset_parameters()`` instead resets BatchNorm to mean 0 / variance 1 and
    re-initialises convolutions at another scale, and on Lite0 the activations overflow to NaN.
    """
    with torch.no_grad():
        for p in module.parameters():
            flat = p.detach().flatten()
            if how == "shuffle":
                perm = torch.randperm(flat.numel(), generator=generator).to(p.device)
                p.copy_(flat[perm].view_as(p))
            else:
                std = flat.std() if flat.numel() > 1 else flat.new_zeros(())
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                p.copy_(flat.mean() + std * noise)


@dataclass
class Cascade:
    """What :func:`cascading_randomization` measured.

    ``layers[k]``: the module randomised at step ``k`` (cascading: together with every module
    before it in the list). ``rank_correlation[m][k]`` and ``ssim[m][k]``: method ``m``'s map after
    step ``k`` against its map on the trained model (mean over the batch). ``trained[m]``:
    ``(N, H, W)`` pictures on the trained model; ``randomized[m]``: ``(steps, N, H, W)``. Pictures
    are |map| capped at the 99th percentile, in [0, 1].
    """

    layers: list[str]
    rank_correlation: dict[str, list[float]]
    ssim: dict[str, list[float]]
    trained: dict[str, torch.Tensor]
    randomized: dict[str, torch.Tensor]
    cascading: bool = True


MethodFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cascading_randomization(model, x: torch.Tensor, methods: Mapping[str, MethodFn] |
                            Sequence[MethodFn], target: Target = None, *,
                            layers: Sequence[str] | None = None, cascading: bool = True,
                            randomize: str = "shuffle", seed: int = 0,
                            progress: bool = True) -> Cascade:
    """Model parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps").

    On a deep copy of the model, randomise ``layers`` (default :func:`randomization_layers`:
    from the output down) one more at each step (``cascading=False``: one at a time, the others
    trained) and, after each step, compute every method's map for the same class (fixed on the
    trained model) and compare it with the trained model's map: Spearman rank correlation of
    |map| (:func:`rank_correlation`) and SSIM of the pictures (:func:`ssim`). A map that still
    looks the same once the weights it should explain are noise does not explain them.

    ``methods``: ``{name: fn}`` or a list of functions (named by ``__name__``), each
    ``fn(model, x, target) -> (N, H, W) or (N, C, H, W)`` (every method of ``helpers`` fits).
    ``randomize``: ``"shuffle"`` (default) or ``"gaussian"``, see ``_randomize``; BatchNorm
    running statistics are kept, which keeps every activation finite.
    The caller's model is never touched. Returns a :class:`Cascade`.
    """
    check_batch(x)
    if randomize not in ("shuffle", "gaussian"):
        raise ValueError("randomize must be 'shuffle' or 'gaussian'")
    if not isinstance(methods, Mapping):
        methods = {getattr(fn, "__name__", f"method {i}"): fn for i, fn in enumerate(methods)}
    if not methods:
        raise ValueError("give at least one method")
    classes = fixed_targets(model, x, target)
    trained_net = unwrap(model)
    layers = list(layers) if layers is not None else randomization_layers(trained_net)
    modules = dict(trained_net.named_modules())
    unknown = [name for name in layers if name not in modules or not name]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; randomization_layers(model) lists the "
                         f"default ones")
    trained_state = {k: v.detach().clone() for k, v in trained_net.state_dict().items()}
    net = copy.deepcopy(trained_net).eval()
    copied = dict(net.named_modules())
    generator = torch.Generator().manual_seed(seed)

    def maps(m):  # {method: (|map|, picture)}
        out = {}
        for name, fn in methods.items():
            attribution = fn(m, x, classes).detach()
            out[name] = (to_map(attribution), normalized_map(attribution))
        return out

    trained = maps(net)
    steps: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    rho: dict[str, list[float]] = {name: [] for name in methods}
    structural: dict[str, list[float]] = {name: [] for name in methods}
    for layer in tqdm(layers, desc="randomising", disable=not progress, leave=False):
        if not cascading:
            net.load_state_dict(trained_state)
        _randomize(copied[layer], randomize, generator)
        for name, (magnitude, picture) in maps(net).items():
            steps[name].append(picture)
            rho[name].append(float(rank_correlation(magnitude, trained[name][0]).mean()))
            structural[name].append(float(ssim(picture, trained[name][1]).mean()))
    return Cascade(layers, rho, structural, {name: t[1] for name, t in trained.items()},
                   {name: torch.stack(pics) for name, pics in steps.items()}, cascading)
