"""Attention rollout (Abnar & Zuidema 2020), where a ViT's class token gathers information from,
and its class-specific heir, Chefer et al.'s gradient-weighted attention (ICCV 2021).

One block's attention ``A_l`` ``(T, T)`` (row i: how much token i reads from each token) is only
part of the story: the residual connection passes every token on to the next block unchanged.
Rollout models that by adding the identity and renormalising the rows, then chains the blocks:

    Ã_l = (fuse_heads(A_l) + I) / 2,  rows renormalised to sum to 1
    R   = Ã_L · … · Ã_2 · Ã_1

Row 0 of ``R`` (the class token) over the patch tokens, reshaped to the patch grid, is the map.
``fuse_heads`` is the mean over heads (the paper); ``discard_ratio`` (a knob of Jacob Gildenblat's
``vit-explain``) first zeroes that fraction of each fused matrix's smallest entries, never the class
token's attention to itself. Rollout needs no class and no gradient: it is the same map for
every class.

Works on timm Vision Transformers (``blocks[i].attn`` with ``qkv``; class, distillation or register
tokens in front, ``num_prefix_tokens``). The attention is recomputed from each block's ``norm1``
output with the block's own ``qkv``, so timm's fused attention kernel stays on and nothing in the
model is switched or swapped.

**Gradient-weighted attention** (Chefer, Gur & Wolf, *Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers*, ICCV 2021, eqs. 5-6; for a ViT the same
rules as their ViT notebook). Each block's attention is weighted by the gradient of the class
score ``y_c`` (the logit) with respect to it, and only the positive part is kept:

    Ā_l = mean_heads( ReLU( ∂y_c/∂A_l ⊙ A_l ) )          (eq. 5)
    R_0 = I,   R_l = R_{l-1} + Ā_l · R_{l-1}                (eq. 6)

Row 0 of ``R_L`` over the patch tokens is the map. Without the gradient (every ``∂y_c/∂A = 1``)
this is rollout again, up to the factor ``2^L`` and without the row renormalisation: the gradient
is what makes it depend on the class. (Their CVPR 2021 *Transformer Interpretability Beyond
Attention Visualization* weights the attention by LRP relevance instead of the attention itself;
this module implements the ICCV rules, which need only gradients.) The gradient is taken at the
attention probabilities the model really used: for the call only, each block runs timm's
explicit ``softmax(q k^T)`` path (``fused_attn = False``, restored afterwards), and the output of
``attn_drop`` (the identity in eval mode) is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .common import (
    Target,
    check_batch,
    check_int,
    evaluating,
    fixed_targets,
    minmax,
    resolve_targets,
    unwrap,
)
from .hooks import patch_grid, record

__all__ = ["attention_maps", "rollout_from_attentions", "attention_rollout",
           "attention_gradients", "relevance_from_attentions", "chefer_relevance"]


def _blocks(net: torch.nn.Module) -> Sequence[torch.nn.Module]:
    blocks = getattr(net, "blocks", None)
    if blocks is None or not all(hasattr(getattr(b, "attn", None), "qkv") for b in blocks):
        raise ValueError(
            f"attention rollout needs a timm Vision Transformer (blocks[i].attn.qkv); "
            f"{type(net).__name__} has no such blocks. Swin's windowed attention has no class "
            f"token to roll out from: use grad_cam there.")
    return blocks


@torch.no_grad()
def attention_maps(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's attention probabilities, ``[(N, heads, T, T)] * depth`` (T tokens, prefix
    tokens first): ``softmax(q k^T * scale)`` recomputed from the block's ``norm1`` output (its
    attention's input) with the block's ``qkv`` and ``q_norm`` / ``k_norm``."""
    check_batch(x)
    net = unwrap(model)
    blocks = _blocks(net)
    names = [f"blocks.{i}.norm1" for i in range(len(blocks))]
    with evaluating(net), record(net, names) as rec:
        net(x)
    maps = []
    for name, block in zip(names, blocks):
        attn, tokens = block.attn, rec[name]
        n, t, _ = tokens.shape
        qkv = attn.qkv(tokens).reshape(n, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        maps.append((q * attn.scale @ k.transpose(-2, -1)).softmax(dim=-1))
    return maps


def rollout_from_attentions(attentions: Sequence[torch.Tensor], *, discard_ratio: float = 0.0,
                            head_fusion: str = "mean") -> torch.Tensor:
    """Roll attention out through the blocks: ``[(N, heads, T, T)]`` -> ``R`` ``(N, T, T)``.

    Per block: fuse the heads (``"mean"``, or ``"max"`` / ``"min"``), zero the smallest
    ``discard_ratio`` fraction of the ``T * T`` entries (never entry ``[0, 0]``), add the identity,
    halve, renormalise each row to sum 1, and left-multiply: ``R = Ã_l @ R``.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), not {discard_ratio}")
    fuse = {"mean": lambda a: a.mean(dim=1), "max": lambda a: a.amax(dim=1),
            "min": lambda a: a.amin(dim=1)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be one of {', '.join(fuse)}, not {head_fusion!r}")
    if not attentions:
        raise ValueError("no attention maps to roll out")
    n, _, t, _ = attentions[0].shape
    eye = torch.eye(t, dtype=attentions[0].dtype, device=attentions[0].device)
    result = eye.expand(n, t, t)
    for attention in attentions:
        fused = fuse[head_fusion](attention)
        drop = int(t * t * discard_ratio)
        if drop:
            flat = fused.reshape(n, -1).clone()
            lowest = flat.topk(drop, dim=1, largest=False).indices
            keep_cls = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
            keep_cls[:, 0] = False  # the class token's attention to itself stays
            fused = flat.masked_fill(keep_cls, 0.0).reshape(n, t, t)
        step = (fused + eye) / 2
        step = step / step.sum(dim=-1, keepdim=True)
        result = step @ result
    return result


def attention_rollout(model, x: torch.Tensor, target: Target = None, *,
                      discard_ratio: float = 0.9,
                      head_fusion: str = "mean", blocks: int | None = None,
                      upsample: bool = True) -> torch.Tensor:
    """Attention rollout map: ``x`` ``(N, 3, H, W)`` -> ``(N, H, W)`` in [0, 1].

    Row 0 of the rollout over the first ``blocks`` blocks (default: all), without the prefix
    tokens (``num_prefix_tokens``), reshaped to the patch grid, upsampled bilinearly to the input
    (``upsample=False``: the grid itself) and min-max scaled per image. ``target`` is taken as
    by every method and checked, but rollout is blind to the class: every target gives the same
    map (that is the method's limit, not a bug). ``discard_ratio=0.9`` (``vit-explain``'s example
    setting) keeps the strongest 10 % of each block's attention.
    Example: ``attention_rollout(load_model("course_vit"), x, discard_ratio=0.9)``.
    """
    net = unwrap(model)
    if target is not None:
        fixed_targets(model, x, target)  # a wrong class is still an error
    attentions = attention_maps(net, x)
    if blocks is not None:
        if not 1 <= blocks <= len(attentions):
            raise ValueError(f"blocks must be in [1, {len(attentions)}], not {blocks}")
        attentions = attentions[:blocks]
    rolled = rollout_from_attentions(attentions, discard_ratio=discard_ratio,
                                     head_fusion=head_fusion)
    prefix, (h, w) = patch_grid(net, rolled.shape[-1])
    maps = rolled[:, 0, prefix:].reshape(-1, h, w)
    if upsample:
        maps = F.interpolate(maps[:, None], size=tuple(x.shape[-2:]), mode="bilinear",
                             align_corners=False)[:, 0]
    return minmax(maps)


# ----- gradient-weighted attention (Chefer et al. 2021) ---------------------------------------

def _explicit_attention(blocks: Sequence[torch.nn.Module]) -> None:
    for i, block in enumerate(blocks):
        attn = block.attn
        if not hasattr(attn, "fused_attn") or not isinstance(getattr(attn, "attn_drop", None),
                                                             torch.nn.Module):
            raise ValueError(
                f"blocks.{i}.attn ({type(attn).__name__}) has no explicit softmax(q k^T) path "
                "(timm's fused_attn flag and attn_drop module): gradient-weighted attention "
                "needs the attention probabilities as a tensor")


def attention_gradients(model, x: torch.Tensor, target: Target = None
                        ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every block's attention probabilities ``A_l`` and the gradient ``∂y_c/∂A_l`` of the class
    logit with respect to them: two lists of ``(N, heads, T, T)``, first block first.

    ``x`` ``(N, 3, H, W)``; ``target`` as everywhere (None: each image's top class). One forward
    and one backward through the whole network, to the attention tensors only (no parameter
    ``.grad``); works with frozen parameters and inside ``torch.no_grad()``. For the call, every
    block's ``attn.fused_attn`` is False (timm's explicit path, the same numbers as the fused
    kernel up to rounding); the flags and the model are restored afterwards, also on error.
    Example: ``attentions, gradients = attention_gradients(model, x, "circle")``.
    """
    check_batch(x)
    net = unwrap(model)
    blocks = _blocks(net)
    _explicit_attention(blocks)
    captured: list[torch.Tensor | None] = [None] * len(blocks)

    def keep(i: int):
        def hook(module, inputs, output):
            captured[i] = output
        return hook

    flags = [block.attn.fused_attn for block in blocks]
    handles = []
    try:
        for i, block in enumerate(blocks):
            block.attn.fused_attn = False
            handles.append(block.attn.attn_drop.register_forward_hook(keep(i)))
        with evaluating(net), torch.enable_grad():
            logits = net(x.detach().requires_grad_(True))  # a graph even with frozen weights
            if any(a is None for a in captured):
                raise RuntimeError("a block's attention did not run during the forward pass")
            classes = resolve_targets(model, logits, target)
            score = logits.gather(1, classes[:, None]).sum()  # images independent in eval mode
            grads = torch.autograd.grad(score, captured, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        for block, flag in zip(blocks, flags):
            block.attn.fused_attn = flag
    attentions = [a.detach() for a in captured]
    gradients = [torch.zeros_like(a) if g is None else g.detach()
                 for a, g in zip(attentions, grads)]
    return attentions, gradients


def relevance_from_attentions(attentions: Sequence[torch.Tensor],
                              gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s relevance ``R`` ``(N, T, T)`` from each block's attention and its gradient,
    ``[(N, heads, T, T)] * depth`` each, first block first:

        Ā_l = mean over heads of ReLU(gradient_l * A_l);   R = I, then R <- R + Ā_l @ R

    Row 0 (the class token) over the patch tokens is the map. With every gradient 1 it equals
    ``2**depth * rollout_from_attentions(attentions)``.
    """
    if not attentions or len(attentions) != len(gradients):
        raise ValueError(f"need one gradient per attention map: got {len(attentions)} attention "
                         f"maps and {len(gradients)} gradients")
    if any(a.shape != g.shape or a.ndim != 4 for a, g in zip(attentions, gradients)):
        raise ValueError("every attention map and its gradient must have the same shape "
                         "(N, heads, T, T)")
    n, _, t, _ = attentions[0].shape
    result = torch.eye(t, dtype=attentions[0].dtype, device=attentions[0].device).expand(n, t, t)
    for attention, gradient in zip(attentions, gradients):
        weighted = (gradient * attention).clamp(min=0).mean(dim=1)  # (N, T, T)
        result = result + weighted @ result
    return result


def _chunk_target(target: Target, start: int, stop: int) -> Target:
    """The part of a per-image ``target`` that belongs to images ``start:stop``."""
    if isinstance(target, torch.Tensor) and target.ndim > 0:
        return target.reshape(-1)[start:stop]
    if isinstance(target, (list, tuple)):
        return list(target)[start:stop]
    return target  # None, one index or one name: the same for every image


def chefer_relevance(model, x: torch.Tensor, target: Target = None, *, blocks: int | None = None,
                     upsample: bool = True, batch_size: int = 64) -> torch.Tensor:
    """Gradient-weighted attention (Chefer et al., ICCV 2021): ``x`` ``(N, 3, H, W)`` ->
    ``(N, H, W)`` in [0, 1], the map for class ``target`` (None: each image's top class).

    ``relevance_from_attentions(*attention_gradients(model, x, target))``, row 0 without the
    prefix tokens, on the patch grid, upsampled bilinearly to the input (``upsample=False``: the
    grid) and min-max scaled per image. ``blocks``: use the first ``blocks`` blocks only (the
    gradient still comes from the whole network). ``batch_size``: images per forward and
    backward pass (the graph of the whole network is kept for one pass: a smaller chunk, less
    memory). Unlike :func:`attention_rollout`, the map changes with the class: a block's
    attention counts only where raising it raises ``y_c``.
    Example: ``chefer_relevance(load_model("course_vit"), x, "circle")``.
    """
    check_batch(x)
    check_int("batch_size", batch_size)
    net = unwrap(model)
    depth = len(_blocks(net))
    if blocks is not None and (isinstance(blocks, bool) or not isinstance(blocks, int)
                               or not 1 <= blocks <= depth):
        raise ValueError(f"blocks must be an integer in [1, {depth}], not {blocks!r}")
    if isinstance(target, (list, tuple)) or (isinstance(target, torch.Tensor) and target.ndim):
        if len(_chunk_target(target, 0, None)) != x.shape[0]:
            raise ValueError(f"got {len(_chunk_target(target, 0, None))} targets for a batch "
                             f"of {x.shape[0]} images")
    rows = []
    for start in range(0, x.shape[0], batch_size):
        stop = min(start + batch_size, x.shape[0])
        attentions, gradients = attention_gradients(model, x[start:stop],
                                                    _chunk_target(target, start, stop))
        relevance = relevance_from_attentions(attentions[:blocks], gradients[:blocks])
        rows.append(relevance[:, 0])
    relevance_rows = torch.cat(rows)
    prefix, (h, w) = patch_grid(net, relevance_rows.shape[-1])
    maps = relevance_rows[:, prefix:].reshape(-1, h, w)
    if upsample:
        maps = F.interpolate(maps[:, None], size=tuple(x.shape[-2:]), mode="bilinear",
                             align_corners=False)[:, 0]
    return minmax(maps)
