"""Class activation maps on one core: CAM, Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM, Score-CAM
and guided Grad-CAM.

Every CAM method is the same computation with different weights (pytorch-grad-cam's insight).
For a layer's activations ``A`` of shape ``(N, K, h, w)`` and weights ``w``:

    map = ReLU( sum_k w_k * A_k )  ->  bilinear upsampling to the input size  ->  min-max to [0, 1]

``w`` is ``(N, K)``, one weight per channel, or ``(N, K, h, w)``, one weight per channel and
position (HiResCAM and LayerCAM weigh each position on its own; a channel weight is the special
case of a weight map that is constant over positions, so one core serves both).

A variant is one public weights function with one signature, ``fn(layer_pass, **knobs)``,
where ``layer_pass = capture_layer(model, x, target, layer=...)`` holds what the forward pass saw:

- ``cam_weights``: the classifier's weights of class c (Zhou et al. 2016; pooled nets only);
- ``grad_cam_weights``: the spatial mean of ``d y_c / d A_k`` (Selvaraju et al. 2017);
- ``grad_cam_plus_plus_weights``: positive gradients weighted by Grad-CAM++'s closed-form
  ``alpha`` (Chattopadhyay et al. 2018);
- ``hires_cam_weights``: the gradient itself, position by position (Draelos & Carin 2020);
- ``layer_cam_weights``: the positive part of the gradient, position by position (Jiang et al.
  2021);
- ``score_cam_weights``: the class probability of the input seen through each channel's upsampled
  activation (Wang et al. 2020).

Calling convention as in ``helpers.attribution``: ``method(model, x, target=None, *, layer=None)``
with ``layer=None`` meaning ``layer_roles(model).cam_layer``. Each returns ``(N, H, W)`` in [0, 1]
on ``x``'s device; ``upsample=False`` returns the ``(N, h, w)`` map at the layer's resolution.

Transformer layers work too: a token layer ``(N, T, D)`` loses the model's prefix tokens (class,
distillation, register: timm's ``num_prefix_tokens``) and is laid out on the patch grid
``(N, D, h, w)``; a channels-last stage ``(N, h, w, C)`` (timm's Swin) is permuted (``as_grid``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attribution import guided_backprop
from .common import (
    Target,
    check_batch,
    check_int,
    evaluating,
    fixed_targets,
    forward_in_chunks,
    minmax,
    resolve_targets,
    unwrap,
)
from .hooks import Layer, get_layer, layer_roles, patch_grid, split_forward

__all__ = [
    "LayerPass",
    "as_grid",
    "capture_layer",
    "cam_from_weights",
    "class_map",
    "cam_weights",
    "grad_cam_weights",
    "grad_cam_plus_plus_weights",
    "hires_cam_weights",
    "layer_cam_weights",
    "score_cam_masks",
    "score_cam_weights",
    "classifier",
    "cam",
    "grad_cam",
    "grad_cam_plus_plus",
    "hires_cam",
    "layer_cam",
    "score_cam",
    "guided_grad_cam",
]

logger = logging.getLogger(__name__)

Reshape = Callable[[torch.Tensor], torch.Tensor]


# ----- the layer's output as a grid of channels --------------------------------------------------

def as_grid(model, output: torch.Tensor) -> torch.Tensor:
    """A layer's output as channel maps ``(N, K, h, w)``.

    - ``(N, K, h, w)`` (a CNN layer): unchanged;
    - ``(N, h, w, K)`` from a channels-last model (timm's Swin, ``output_fmt == "NHWC"``): permuted;
    - ``(N, T, D)`` tokens (ViT, DeiT): the first ``num_prefix_tokens`` (class, distillation,
      register tokens) are dropped and the ``h * w`` patch tokens laid out on the patch grid
      (``patch_embed.grid_size``, else the square ``h = w = sqrt(T - prefix)``).

    The result is a view of ``output`` in the autograd graph. Anything else raises and says which
    reshape is needed: pass your own as ``reshape=`` to the CAM methods.
    """
    net = unwrap(model)
    if output.ndim == 4:
        channels_last = getattr(net, "output_fmt", "NCHW") == "NHWC"
        return output.permute(0, 3, 1, 2) if channels_last else output
    if output.ndim != 3:
        raise ValueError(
            f"a CAM layer must give channel maps (N, K, h, w) or tokens (N, T, D); this one gives "
            f"{tuple(output.shape)}. Choose another layer, or pass reshape=f with f(output) -> "
            "(N, K, h, w)")
    n, tokens, dim = output.shape
    prefix, grid = patch_grid(net, tokens)
    return output[:, prefix:].reshape(n, grid[0], grid[1], dim).permute(0, 3, 1, 2)


# ----- one forward pass, captured at the layer ---------------------------------------------------

@dataclass
class LayerPass:
    """What a forward pass saw at one layer; every weights function takes one of these.

    ``activations`` ``(N, K, h, w)`` (detached), ``logits`` ``(N, classes)`` (still in the graph
    from the layer on), ``target`` ``(N,)`` the target class indices, ``model`` the
    ``nn.Module``, ``x``
    the input batch ``(N, C, H, W)``.
    """

    model: nn.Module
    x: torch.Tensor
    activations: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    layer_output: torch.Tensor  # the layer's raw output, a leaf that requires grad
    reshape: Reshape
    layer: str = ""  # its name: what layer=None picked (layer_roles(model).cam_layer)

    def gradients(self, *, keep_graph: bool = False) -> torch.Tensor:
        """``d y_c / d A`` ``(N, K, h, w)`` for the classes ``target``. One backward through the
        part of the net after the layer; ``keep_graph=True`` allows another call (for another
        class: ``layer_pass.for_target(index)``)."""
        score = self.logits.gather(1, self.target[:, None]).sum()  # images independent in eval
        (grads,) = torch.autograd.grad(score, self.layer_output, retain_graph=keep_graph)
        return self.reshape(grads)

    def for_target(self, target: torch.Tensor) -> LayerPass:
        """The same pass for other classes ``target`` ``(N,)`` (no new forward pass: an explorer
        switches class with one backward; call ``gradients(keep_graph=True)`` on it)."""
        return dataclasses.replace(self, target=torch.as_tensor(target, device=self.logits.device))


def capture_layer(model, x: torch.Tensor, target: Target = None, *, layer: Layer | None = None,
                  reshape: Reshape | None = None) -> LayerPass:
    """Run ``model(x)`` once and keep what ``layer`` (default: ``layer_roles(model).cam_layer``)
    gave, laid out as channel maps by ``reshape`` (default: ``as_grid``). The graph is recorded
    from the layer on only, so it works with frozen weights and inside ``torch.no_grad()``.
    The chosen layer is ``.layer``; with ``layer=None`` it is also logged at INFO level on the
    ``helpers.cam`` logger (``logging.basicConfig(level="INFO")`` shows it)."""
    check_batch(x)
    net = unwrap(model)
    name, _ = get_layer(net, layer if layer is not None else layer_roles(net).cam_layer)
    if layer is None:  # as torchcam: say which layer the default picked (logging, not stderr)
        logger.info("layer=None: the CAM layer of %s is %r (layer_roles(model).cam_layer)",
                    type(net).__name__, name)
    with evaluating(net), torch.enable_grad():
        output, logits = split_forward(net, x, name)
    to_grid = reshape if reshape is not None else (lambda t: as_grid(net, t))
    activations = to_grid(output.detach())
    if activations.ndim != 4:
        raise ValueError(f"reshape must give (N, K, h, w), gave {tuple(activations.shape)}")
    classes = resolve_targets(model, logits, target)
    return LayerPass(net, x, activations, logits, classes, output, to_grid, name)


# ----- the shared core ---------------------------------------------------------------------------

def cam_from_weights(activations: torch.Tensor, weights: torch.Tensor,
                     size: tuple[int, int] | None = None, *, relu: bool = True,
                     normalize: bool = True) -> torch.Tensor:
    """The shared core: ``ReLU(sum_k w_k A_k)`` ``(N, h, w)`` from ``activations`` ``(N, K, h, w)``
    and ``weights`` ``(N, K)`` (one per channel) or ``(N, K, h, w)`` (one per channel and
    position, multiplied elementwise: HiResCAM, LayerCAM); the sum starts at zero. Upsampled
    bilinearly to ``size`` ``(H, W)`` if given, then min-max scaled per image to [0, 1] (0
    everywhere on a flat map).

    ``relu=False`` keeps the signed sum (CAM as Zhou et al. define it has no ReLU; the ReLU is
    Grad-CAM's). ``normalize=False`` keeps the raw values, which can be compared across images
    and classes (as captum's ``LayerGradCam`` and torchcam's ``normalized=False``)."""
    if weights.shape == activations.shape:  # a weight per channel and position
        maps = (weights * activations).sum(dim=1)
    elif weights.shape == activations.shape[:2]:
        maps = torch.einsum("nk,nkhw->nhw", weights, activations)
    else:
        raise ValueError(f"weights must be (N, K) = {tuple(activations.shape[:2])} or (N, K, h, w) "
                         f"= {tuple(activations.shape)}, got {tuple(weights.shape)}")
    if relu:
        maps = F.relu(maps)
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(maps) if normalize else maps


def class_map(layer_pass: LayerPass, weights_fn: Callable[[LayerPass], torch.Tensor], *,
              upsample: bool = True, relu: bool = True, normalize: bool = True) -> torch.Tensor:
    """A CAM from a captured pass: ``cam_from_weights`` with ``weights_fn(layer_pass)``,
    upsampled to the input (``upsample=False``: the layer's ``(N, h, w)``). Every CAM method is
    this on a fresh ``capture_layer``; an explorer calls it on a cached pass."""
    with torch.enable_grad():
        weights = weights_fn(layer_pass)
    size = tuple(layer_pass.x.shape[-2:]) if upsample else None
    return cam_from_weights(layer_pass.activations, weights.detach(), size, relu=relu,
                            normalize=normalize)


def _class_map(model, x, target, *, layer, reshape, weights_fn, upsample, relu, normalize
               ) -> torch.Tensor:
    layer_pass = capture_layer(model, x, target, layer=layer, reshape=reshape)
    return class_map(layer_pass, weights_fn, upsample=upsample, relu=relu, normalize=normalize)


# ----- the variants: one weights function each ---------------------------------------------------

def classifier(model) -> nn.Linear:
    """The final linear layer of a global-average-pooled classifier (ResNet, DenseNet,
    EfficientNet); raises for nets with a multi-layer head (VGG, AlexNet)."""
    net = unwrap(model)
    candidates = [net.get_classifier()] if hasattr(net, "get_classifier") else []
    candidates += [getattr(net, name, None) for name in ("fc", "classifier", "head")]
    candidates.append(list(net.modules())[-1])  # e.g. the Linear closing an nn.Sequential
    head = next((c for c in candidates if isinstance(c, nn.Linear)), candidates[1])
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"CAM needs a net whose last conv features are global-average-pooled into one linear "
            f"layer; {type(net).__name__} has a {type(head).__name__} head. Use grad_cam.")
    return head


def cam_weights(layer_pass: LayerPass) -> torch.Tensor:
    """CAM's channel weights ``(N, K)``: the classifier's weight row of each target class,
    ``W[c, k]``. Exact only at the layer whose global average feeds the classifier."""
    head = classifier(layer_pass.model)
    channels = layer_pass.activations.shape[1]
    if channels != head.in_features:
        raise ValueError(
            f"CAM: the layer has {channels} channels but the classifier takes "
            f"{head.in_features}; CAM needs the layer that feeds the global average pooling "
            f"into the classifier. For other layers or nets (VGG, AlexNet) use grad_cam.")
    return head.weight[layer_pass.target].detach().to(layer_pass.activations.dtype)


def grad_cam_weights(layer_pass: LayerPass, *, keep_graph: bool = False) -> torch.Tensor:
    """Grad-CAM's channel weights ``(N, K)``: ``alpha_k = mean_ij d y_c / d A_k[i, j]``, y_c the
    logit. One backward for N images and N targets; ``keep_graph=True`` allows another class."""
    return layer_pass.gradients(keep_graph=keep_graph).mean(dim=(2, 3))


def grad_cam_plus_plus_weights(layer_pass: LayerPass, *, keep_graph: bool = False
                               ) -> torch.Tensor:
    """Grad-CAM++'s channel weights ``(N, K)`` (Chattopadhyay et al. 2018, eq. 19):
    ``w_k = sum_ij alpha_k[i, j] ReLU(g_k[i, j])`` with ``g = d y_c / d A`` and

        alpha_k[i, j] = g^2 / (2 g^2 + S_k g^3) = 1 / (2 + S_k g_k[i, j]),   S_k = sum_ab A_k[a, b].

    The closed form of the paper, its authors' code and pytorch-grad-cam: the class score is
    ``Y = exp(y_c)`` and the net after the layer is piecewise linear, so the second and third
    derivatives of ``Y`` are ``exp(y_c) g^2`` and ``exp(y_c) g^3``; ``exp(y_c)`` cancels in
    ``alpha``, and the one it leaves on ``w`` (the same for every channel of an image) is dropped,
    as pytorch-grad-cam does. ``alpha`` is 0 where ``g <= 0`` (the ReLU) or where ``2 + S_k g`` is
    0; no epsilon (pytorch-grad-cam adds 1e-6 to ``2 g^2 + S_k g^3``, which is not small where the
    gradients are, ~1e-3 at Lite0's ``bn2``). Where activations are signed, ``S_k`` can be
    negative and ``2 + S_k g`` near 0: a few weights can then be very large.
    One backward; ``keep_graph=True`` allows another call."""
    grads = layer_pass.gradients(keep_graph=keep_graph)
    totals = layer_pass.activations.sum(dim=(2, 3), keepdim=True)  # S_k: (N, K, 1, 1)
    denominators = 2 + totals * grads
    used = (grads > 0) & (denominators != 0)
    alpha = torch.where(used, 1 / torch.where(used, denominators, 1.0), 0.0)
    return (alpha * grads).sum(dim=(2, 3))  # alpha is 0 where g <= 0: alpha g = alpha ReLU(g)


def hires_cam_weights(layer_pass: LayerPass, *, keep_graph: bool = False) -> torch.Tensor:
    """HiResCAM's weights ``(N, K, h, w)`` (Draelos & Carin 2020): the gradient ``d y_c / d A``
    itself, position by position, so the map is ``ReLU(sum_k g_k * A_k)`` with no averaging.
    Where the layer feeds a global average and a linear layer, ``g_k`` is the same at every
    position and HiResCAM equals Grad-CAM; before the ReLU, its map summed over positions is
    ``y_c - b_c`` for a net that is linear after the layer."""
    return layer_pass.gradients(keep_graph=keep_graph)


def layer_cam_weights(layer_pass: LayerPass, *, keep_graph: bool = False) -> torch.Tensor:
    """LayerCAM's weights ``(N, K, h, w)`` (Jiang et al. 2021): the positive part of the gradient,
    ``ReLU(d y_c / d A)``, position by position; the map is ``ReLU(sum_k ReLU(g_k) * A_k)``
    (torchcam's and pytorch-grad-cam's LayerCAM; torchcam's ``fuse_cams`` across layers is not
    part of it)."""
    return F.relu(layer_pass.gradients(keep_graph=keep_graph))


def score_cam_masks(activations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Score-CAM's masks: channel maps ``(K, h, w)`` of one image -> ``(K, 1, H, W)``, each
    upsampled bilinearly to the input ``size`` and min-max scaled to [0, 1] (a flat channel gives
    an all-zero mask, never NaN)."""
    masks = F.interpolate(activations[:, None], size=size, mode="bilinear", align_corners=False)
    return minmax(masks)


@torch.no_grad()
def score_cam_weights(layer_pass: LayerPass, *, top_k: int | None = None, rank_by: str = "mean",
                      score: str = "probability", channel_softmax: bool = False,
                      batch_size: int = 5, progress: bool = True) -> torch.Tensor:
    """Score-CAM's channel weights ``(N, K)``: how much the class likes the input seen through
    each channel. ``M_k = score_cam_masks(A)_k``; ``s_k`` = the class score of ``x * M_k``.

    - the paper's definition (Wang et al. 2020, and its authors' code): ``w_k = s_k`` with ``s_k``
      the softmax *probability* of the class (``score="probability"``, the default); a flat
      channel, which gives no mask, gets weight 0;
    - torchcam and pytorch-grad-cam: ``w = softmax_k(s_k)`` over channels with ``s_k`` the *logit*
      (``score="logit", channel_softmax=True``).

    Cost: one forward pass per channel and image. ``top_k`` (fast mode) scores only the k
    channels with the highest activation ``rank_by`` ("mean" or "var"); the others get weight 0.
    Masked inputs go through the network ``batch_size`` at a time (5 images of 224 x 224, about
    100 MB of activations on Lite0, was the fastest chunk on 2 CPU cores: larger batches spill
    the caches).

    Args: ``layer_pass`` from ``capture_layer``; ``top_k``: channels scored (None: all);
    ``rank_by``: how the fast mode picks them; ``score``: ``"probability"`` or ``"logit"``;
    ``channel_softmax``: softmax of the scores over channels; ``batch_size``; ``progress``: a bar.
    Returns ``(N, K)``. Example: ``score_cam_weights(capture_layer(model, x, "tabby"), top_k=32)``.
    """
    if score not in ("logit", "probability"):
        raise ValueError("score must be 'logit' or 'probability'")
    if rank_by not in ("mean", "var"):
        raise ValueError("rank_by must be 'mean' or 'var'")
    check_int("batch_size", batch_size)
    if top_k is not None:
        check_int("top_k", top_k)
    net, x, activations = layer_pass.model, layer_pass.x, layer_pass.activations
    n, k = activations.shape[:2]
    if top_k is not None:
        check_int(f"top_k (layer {layer_pass.layer} has {k} channels)", top_k, high=k)
    weights = torch.zeros(n, k, device=x.device, dtype=x.dtype)
    for i in range(n):
        a = activations[i]
        channels = torch.arange(k, device=x.device)
        if top_k is not None and top_k < k:
            ranking = a.mean(dim=(1, 2)) if rank_by == "mean" else a.var(dim=(1, 2))
            channels = ranking.topk(top_k).indices
        scores = torch.empty(len(channels), device=x.device, dtype=x.dtype)

        def masked(chunk, i=i, a=a):  # the image seen through each chunk's channel masks
            return x[i:i + 1] * score_cam_masks(a[torch.stack(list(chunk))], x.shape[-2:])

        done = 0
        for chunk, out in forward_in_chunks(net, channels, masked, batch_size=batch_size,
                                            desc=f"Score-CAM image {i + 1}/{n}",
                                            progress=progress):
            values = out if score == "logit" else out.softmax(dim=1)
            scores[done:done + len(chunk)] = values[:, layer_pass.target[i]]
            done += len(chunk)
        if channel_softmax:
            weights[i, channels] = scores.softmax(dim=0)
        else:  # as the authors' code: a flat channel (no mask at all) gets no weight
            flat = a[channels].amax(dim=(1, 2)) <= a[channels].amin(dim=(1, 2))
            weights[i, channels] = scores.masked_fill(flat, 0.0)
    return weights


# ----- the methods -------------------------------------------------------------------------------

def cam(model, x: torch.Tensor, target: Target = None, *, layer: Layer | None = None,
        reshape: Reshape | None = None, upsample: bool = True, relu: bool = True,
        normalize: bool = True) -> torch.Tensor:
    """CAM (Zhou et al. 2016): ``sum_k W[c, k] A_k`` with the classifier's weights
    (``cam_weights``), here with Grad-CAM's ReLU unless ``relu=False``.

    Args: ``x`` ``(N, 3, H, W)``; ``target`` as everywhere; ``layer`` (default
    ``layer_roles(model).cam_layer``, the one feeding the pooled classifier); ``reshape``,
    ``upsample``, ``relu``, ``normalize`` as in ``class_map``. Returns ``(N, H, W)`` in [0, 1].
    Example: ``cam(model, x, "tabby")``.
    """
    return _class_map(model, x, target, layer=layer, reshape=reshape, weights_fn=cam_weights,
                      upsample=upsample, relu=relu, normalize=normalize)


def grad_cam(model, x: torch.Tensor, target: Target = None, *, layer: Layer | None = None,
             reshape: Reshape | None = None, upsample: bool = True, relu: bool = True,
             normalize: bool = True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k alpha_k A_k)`` with
    ``alpha_k = mean_ij d y_c / d A_k[i, j]``.

    The backward pass runs only from the logits back to ``layer`` (``split_forward``), so it
    works with frozen parameters and inside ``torch.no_grad()``. Token layers of transformers are
    laid on their patch grid (``as_grid``) unless ``reshape`` says otherwise.

    Args: ``x`` ``(N, 3, H, W)``; ``target`` as everywhere; ``layer`` (default
    ``layer_roles(model).cam_layer``); ``upsample=False``: the layer's ``(N, h, w)``;
    ``relu=False``: signed; ``normalize=False``: raw values. Returns ``(N, H, W)`` in [0, 1].
    Example: ``grad_cam(model, x, "tabby", layer="blocks.5")``.
    """
    return _class_map(model, x, target, layer=layer, reshape=reshape, weights_fn=grad_cam_weights,
                      upsample=upsample, relu=relu, normalize=normalize)


def grad_cam_plus_plus(model, x: torch.Tensor, target: Target = None, *,
                       layer: Layer | None = None, reshape: Reshape | None = None,
                       upsample: bool = True, relu: bool = True,
                       normalize: bool = True) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018): ``ReLU(sum_k w_k A_k)`` with
    ``w_k = sum_ij ReLU(g_k[i, j]) / (2 + S_k g_k[i, j])``, ``g = d y_c / d A``,
    ``S_k = sum_ab A_k[a, b]`` (``grad_cam_plus_plus_weights``). Its derivation assumes maps that
    are never negative (a layer after a ReLU); at a signed layer (Lite0's block outputs) a few
    weights can be huge. pytorch-grad-cam's ``GradCAMPlusPlus`` adds 1e-6 to alpha's
    denominator: its maps differ a little (Pearson r > 0.99 on Lite0 and ResNet18).

    Args: as ``grad_cam``. Returns ``(N, H, W)`` in [0, 1].
    Example: ``grad_cam_plus_plus(model, x, "tabby")`` (at ``layer_roles(model).cam_layer``).
    """
    return _class_map(model, x, target, layer=layer, reshape=reshape,
                      weights_fn=grad_cam_plus_plus_weights, upsample=upsample, relu=relu,
                      normalize=normalize)


def hires_cam(model, x: torch.Tensor, target: Target = None, *, layer: Layer | None = None,
              reshape: Reshape | None = None, upsample: bool = True, relu: bool = True,
              normalize: bool = True) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k g_k * A_k)``, ``g = d y_c / d A``
    multiplied position by position (``hires_cam_weights``); Grad-CAM averages ``g_k`` first.

    Args: as ``grad_cam``. Returns ``(N, H, W)`` in [0, 1].
    Example: ``hires_cam(model, x, "tabby", layer="blocks.5")``.
    """
    return _class_map(model, x, target, layer=layer, reshape=reshape,
                      weights_fn=hires_cam_weights, upsample=upsample, relu=relu,
                      normalize=normalize)


def layer_cam(model, x: torch.Tensor, target: Target = None, *, layer: Layer | None = None,
              reshape: Reshape | None = None, upsample: bool = True, relu: bool = True,
              normalize: bool = True) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(g_k) * A_k)``, ``g = d y_c / d A``, position
    by position (``layer_cam_weights``): only where raising the activation raises the score.

    Args: as ``grad_cam``. Returns ``(N, H, W)`` in [0, 1].
    Example: ``layer_cam(model, x, "tabby", layer="blocks.3")``.
    """
    return _class_map(model, x, target, layer=layer, reshape=reshape,
                      weights_fn=layer_cam_weights, upsample=upsample, relu=relu,
                      normalize=normalize)


def score_cam(model, x: torch.Tensor, target: Target = None, *, layer: Layer | None = None,
              reshape: Reshape | None = None, top_k: int | None = None, rank_by: str = "mean",
              score: str = "probability", channel_softmax: bool = False, batch_size: int = 5,
              progress: bool = True, upsample: bool = True, relu: bool = True,
              normalize: bool = True) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020): ``ReLU(sum_k w_k A_k)`` with ``w_k`` the class probability
    of ``x`` masked by channel k.

    Args: as ``grad_cam``, plus ``score_cam_weights``' knobs: ``top_k`` (the fast mode),
    ``rank_by``, ``score``, ``channel_softmax``, ``batch_size``, ``progress``.
    Returns ``(N, H, W)`` in [0, 1]. Example: ``score_cam(model, x, "tabby", top_k=32)``.
    """
    weights = functools.partial(score_cam_weights, top_k=top_k, rank_by=rank_by, score=score,
                                channel_softmax=channel_softmax, batch_size=batch_size,
                                progress=progress)
    return _class_map(model, x, target, layer=layer, reshape=reshape, weights_fn=weights,
                      upsample=upsample, relu=relu, normalize=normalize)


def guided_grad_cam(model, x: torch.Tensor, target: Target = None, *,
                    layer: Layer | None = None, reshape: Reshape | None = None) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop ``(N, 3, H, W)`` times the upsampled Grad-CAM map,
    fine detail where the class evidence is. Returns ``(N, 3, H, W)`` (signed).
    Example: ``guided_grad_cam(model, x, "tabby")``."""
    check_batch(x)
    classes = fixed_targets(model, x, target)
    return guided_backprop(model, x, classes) * grad_cam(model, x, classes, layer=layer,
                                                         reshape=reshape)[:, None]
