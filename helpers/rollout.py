"""Attention rollout (Abnar & Zuidema 2020): where a ViT's class token gathers information from.

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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .common import Target, check_batch, evaluating, fixed_targets, minmax, unwrap
from .hooks import patch_grid, record

__all__ = ["attention_maps", "rollout_from_attentions", "attention_rollout"]


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
