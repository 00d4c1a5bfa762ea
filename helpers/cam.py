"""Class activation maps on one core: CAM, Grad-CAM, Score-CAM and guided Grad-CAM.

Every CAM method is the same computation with different channel weights (pytorch-grad-cam's
insight). For a layer's activations ``A`` of shape ``(N, K, h, w)`` and weights ``w`` ``(N, K)``:

    map = ReLU( sum_k w_k A_k )  ->  bilinear upsampling to the input size  ->  min-max to [0, 1]

A variant only says how it computes ``w``:

- CAM (Zhou et al. 2016): the classifier's weights for class c (global-average-pooled nets);
- Grad-CAM (Selvaraju et al. 2017): the spatial mean of ``d y_c / d A_k``;
- Score-CAM (Wang et al. 2020): the class score of the input masked by each upsampled channel,
  softmax over channels.

Calling convention as in ``helpers.attribution``: ``method(model, x, target=None, layer=None)``
with ``layer=None`` meaning the last conv layer found by ``layer_roles``. Each returns
``(N, H, W)`` in [0, 1] on ``x``'s device; ``upsample=False`` returns the ``(N, h, w)`` map at
the layer's resolution (also min-max scaled).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .attribution import Target, check_batch, guided_backprop, resolve_targets
from .hooks import _unwrap, evaluating, layer_roles, split_forward

__all__ = [
    "cam", "grad_cam", "score_cam", "guided_grad_cam", "cam_from_weights", "grad_cam_weights",
    "classifier",
]

EPS = 1e-7  # guards every division by a (max - min) that can be 0 on a flat map

# A weights function gets (A, logits, target indices, net, x) and returns (N, K).
WeightsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, nn.Module, torch.Tensor],
                     torch.Tensor]


def cam_from_weights(activations: torch.Tensor, weights: torch.Tensor,
                     size: tuple[int, int] | None = None) -> torch.Tensor:
    """The shared core: ``ReLU(sum_k w_k A_k)`` ``(N, h, w)``, upsampled bilinearly to ``size``
    ``(H, W)`` if given, then min-max scaled per image to [0, 1] (0 everywhere on a flat map)."""
    maps = F.relu(torch.einsum("nk,nkhw->nhw", weights, activations))
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _minmax(maps)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low + EPS)


def _run(model, x: torch.Tensor, target: Target, layer, weights_fn: WeightsFn,
         upsample: bool) -> torch.Tensor:
    check_batch(x)
    net = _unwrap(model)
    layer = layer if layer is not None else layer_roles(net).last_conv
    with evaluating(net), torch.enable_grad():  # also inside a caller's torch.no_grad()
        activations, logits = split_forward(net, x, layer)
        index = resolve_targets(model, logits, target)
        weights = weights_fn(activations, logits, index, net, x)
    size = tuple(x.shape[-2:]) if upsample else None
    return cam_from_weights(activations.detach(), weights.detach(), size)


def grad_cam_weights(activations: torch.Tensor, logits: torch.Tensor, index: torch.Tensor,
                     retain_graph: bool = False) -> torch.Tensor:
    """Grad-CAM's channel weights ``(N, K)``: the spatial mean of ``d y_c / d A``. One backward
    for N images and N targets; ``retain_graph=True`` keeps the graph for another class."""
    score = logits.gather(1, index[:, None]).sum()
    (grads,) = torch.autograd.grad(score, activations, retain_graph=retain_graph)
    return grads.mean(dim=(2, 3))


def _gradient_weights(activations, logits, index, net, x) -> torch.Tensor:
    return grad_cam_weights(activations, logits, index)


def grad_cam(model, x: torch.Tensor, target: Target = None, layer=None,
             upsample: bool = True) -> torch.Tensor:
    """Grad-CAM: channel weights ``alpha_k = mean_ij d y_c / d A_k[i, j]`` (y_c the logit).

    The backward pass runs only from the logits back to ``layer`` (``split_forward``), so it
    works with frozen parameters and inside ``torch.no_grad()``.
    ``x`` ``(N, 3, H, W)`` -> ``(N, H, W)`` in [0, 1].
    """
    return _run(model, x, target, layer, _gradient_weights, upsample)


def classifier(model) -> nn.Linear:
    """The final linear layer of a global-average-pooled classifier (ResNet, DenseNet,
    EfficientNet); raises for nets with a multi-layer head (VGG, AlexNet)."""
    net = _unwrap(model)
    candidates = [net.get_classifier()] if hasattr(net, "get_classifier") else []
    candidates += [getattr(net, name, None) for name in ("fc", "classifier", "head")]
    candidates.append(list(net.modules())[-1])  # e.g. the Linear closing an nn.Sequential
    head = next((c for c in candidates if isinstance(c, nn.Linear)), candidates[1])
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"CAM needs a net whose last conv features are global-average-pooled into one linear "
            f"layer; {type(net).__name__} has a {type(head).__name__} head. Use grad_cam.")
    return head


def cam(model, x: torch.Tensor, target: Target = None, layer=None,
        upsample: bool = True) -> torch.Tensor:
    """CAM: channel weights = the classifier's weight row of class c, ``W[c, k]``.

    Exact only for ``layer`` = the features that are averaged into the classifier (the default
    last conv layer of ResNet / EfficientNet). ``(N, 3, H, W)`` -> ``(N, H, W)`` in [0, 1].
    """
    head = classifier(model)

    def classifier_weights(activations, logits, index, net, x):
        if activations.shape[1] != head.in_features:
            raise ValueError(
                f"CAM: the layer has {activations.shape[1]} channels but the classifier takes "
                f"{head.in_features}; CAM needs the layer that feeds the global average pooling "
                f"into the classifier. For other layers or nets (VGG, AlexNet) use grad_cam.")
        return head.weight[index].to(activations.dtype)

    return _run(model, x, target, layer, classifier_weights, upsample)


def score_cam(model, x: torch.Tensor, target: Target = None, layer=None, top_k: int | None = None,
              rank_by: str = "mean", score: str = "logit", memory_mb: float = 100.0,
              progress: bool = True, upsample: bool = True) -> torch.Tensor:
    """Score-CAM: weight each channel by how much the class likes the input seen through it.

    For channel k: ``M_k`` = ``A_k`` upsampled to the input and min-max scaled to [0, 1];
    ``s_k`` = the class score of ``x * M_k`` (no gradients); weights = ``softmax_k(s_k)``.
    ``score="logit"`` (default) uses the logit y_c, as torchcam does; ``"probability"`` uses
    softmax(y)_c, as the paper's code does (softmax of probabilities in [0, 1] gives nearly equal
    weights, so that map is close to the plain channel sum).

    Cost: one forward pass per channel and image. ``top_k`` (fast mode) scores only the k
    channels with the highest activation ``rank_by`` ("mean" or "var") and gives the others
    weight 0. Masked inputs go through the network in chunks that fit ``memory_mb`` (the default,
    5 images of 224 x 224, was the fastest chunk on 2 CPU cores: larger batches spill the caches);
    flat channels get a zero mask, never a NaN. ``(N, 3, H, W)`` -> ``(N, H, W)`` in [0, 1].
    """
    if score not in ("logit", "probability"):
        raise ValueError("score must be 'logit' or 'probability'")
    if rank_by not in ("mean", "var"):
        raise ValueError("rank_by must be 'mean' or 'var'")

    def score_weights(activations, logits, index, net, x):
        with torch.no_grad():
            return _score_weights(net, x, activations.detach(), index, top_k, rank_by, score,
                                  memory_mb, progress)

    return _run(model, x, target, layer, score_weights, upsample)


# Bytes a masked image costs in a no-grad forward, as a multiple of its own size: a few of the
# largest activations are alive at once (Lite0 at 224: 96 x 112 x 112 floats, 8x the input).
_ACTIVATION_FACTOR = 32


def _score_weights(net, x, activations, index, top_k, rank_by, score, memory_mb, progress):
    n, k = activations.shape[:2]
    per_image = x[0].numel() * x.element_size() * _ACTIVATION_FACTOR
    chunk = max(1, int(memory_mb * 1e6 // per_image))
    weights = torch.zeros(n, k, device=x.device, dtype=x.dtype)
    for i in range(n):
        a = activations[i]
        if top_k is not None and top_k < k:
            ranking = a.mean(dim=(1, 2)) if rank_by == "mean" else a.var(dim=(1, 2))
            channels = ranking.topk(top_k).indices
        else:
            channels = torch.arange(k, device=x.device)
        scores = torch.empty(len(channels), device=x.device, dtype=x.dtype)
        steps = range(0, len(channels), chunk)
        for start in tqdm(steps, desc=f"Score-CAM image {i + 1}/{n}", leave=False,
                          disable=not progress or len(steps) < 2):
            picked = channels[start:start + chunk]
            masks = F.interpolate(a[picked][:, None], size=x.shape[-2:], mode="bilinear",
                                  align_corners=False)
            masks = _minmax(masks)  # (c, 1, H, W); a flat channel gives an all-zero mask
            out = net(x[i:i + 1] * masks)
            values = out if score == "logit" else out.softmax(dim=1)
            scores[start:start + len(picked)] = values[:, index[i]]
        weights[i, channels] = scores.softmax(dim=0)
    return weights


def guided_grad_cam(model, x: torch.Tensor, target: Target = None, layer=None) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop ``(N, 3, H, W)`` times the upsampled Grad-CAM map,
    fine detail where the class evidence is. Returns ``(N, 3, H, W)`` (signed)."""
    net = _unwrap(model)
    with torch.no_grad(), evaluating(net):
        index = resolve_targets(model, net(x), target)
    return guided_backprop(model, x, index) * grad_cam(model, x, index, layer)[:, None]
