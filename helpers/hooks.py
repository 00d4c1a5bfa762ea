"""Look inside a model without changing it: record layer outputs and gradients, find layers by role.

Every context manager here removes its hooks and restores the model's train/eval flags on exit,
also when the body raises. Nothing here touches parameters or their ``.grad``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from .common import evaluating, unwrap

__all__ = [
    "Recording",
    "LayerRoles",
    "record",
    "evaluating",
    "get_layer",
    "layer_names",
    "layer_roles",
    "conv_layers",
    "split_forward",
]

Layer = Union[str, nn.Module]


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule, in definition order (the names ``record`` accepts)."""
    return [name for name, _ in unwrap(model).named_modules() if name]


def get_layer(model: nn.Module, layer: Layer) -> tuple[str, nn.Module]:
    """Resolve a layer given by name (``"blocks.3"``) or module -> ``(name, module)``."""
    model = unwrap(model)
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(f"the module {type(layer).__name__} is not part of this model")
    modules = dict(model.named_modules())
    if layer in modules and layer:
        return layer, modules[layer]
    close = difflib.get_close_matches(str(layer), list(modules), n=5, cutoff=0.4)
    hint = f" Closest names: {', '.join(close)}." if close else ""
    raise ValueError(
        f"no layer named {layer!r} in {type(model).__name__}.{hint} "
        f"layer_names(model) lists all {len(modules) - 1}; layer_roles(model) the useful ones."
    )


class Recording(Mapping):
    """What ``record`` saw: ``rec[name]`` is the layer's output ``(N, C, H, W)`` (a copy taken when
    the layer ran, so later in-place operations do not change it); ``rec.grad(name)`` is the
    gradient of whatever was back-propagated with respect to that output (same shape)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.outputs:
            raise KeyError(f"{name!r} was not recorded (recorded: {', '.join(self.names)}); "
                           "did the forward pass run inside the with-block?")
        return self.outputs[name]

    def __iter__(self):
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    def grad(self, name: str) -> torch.Tensor:
        if name not in self.grads:
            raise KeyError(
                f"no gradient reached {name!r}: record(..., grads=True), run the forward with "
                "gradients enabled (not under torch.no_grad()) and call backward inside the block"
            )
        return self.grads[name]


@contextmanager
def record(model: nn.Module, layers: Layer | Sequence[Layer], *, grads: bool = False,
           detach: bool = True) -> Iterator[Recording]:
    """Record the outputs (and with ``grads=True`` their gradients) of ``layers`` during the block.

    >>> with record(model, ["blocks.3", "conv_head"]) as rec:
    ...     model(x)
    >>> rec["blocks.3"].shape          # (N, C, H, W)

    Gradients come from ``tensor.register_hook`` on the recorded output (module backward hooks
    break on in-place activations). ``detach=False`` keeps the recorded copies in the autograd
    graph, to differentiate a function of them (an objective of gradient ascent). A layer that
    runs several times keeps its last output.
    All hooks are removed on exit, also when the body raises.
    """
    model = unwrap(model)
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    resolved = [get_layer(model, layer) for layer in layers]
    recording = Recording([name for name, _ in resolved])
    handles = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returned {type(output).__name__}, not a tensor")
            recording.outputs[name] = output.detach().clone() if detach else output.clone()
            if grads and output.requires_grad:
                def keep(grad, name=name):
                    recording.grads[name] = grad.detach()
                output.register_hook(keep)
        return hook

    try:
        for name, module in resolved:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield recording
    finally:
        for handle in handles:
            handle.remove()


def split_forward(model: nn.Module, x: torch.Tensor, layer: Layer
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model(x)`` and return ``(A, logits)`` where ``A`` (e.g. ``(N, K, h, w)``) is the
    layer's output as a leaf tensor that requires grad and ``logits`` ``(N, classes)`` depends
    on it.

    Autograd only records from the layer onwards, so ``torch.autograd.grad(score, A)`` costs a
    backward through the head of the network alone; this works with frozen parameters and when
    called inside ``torch.no_grad()``. Raises if the layer runs more than once per forward.
    """
    model = unwrap(model)
    name, module = get_layer(model, layer)
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        if captured:
            raise RuntimeError(
                f"layer {name!r} runs more than once per forward pass (a shared module); "
                "choose the block that contains it instead"
            )
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {name!r} returns a {type(output).__name__}, not a tensor; "
                            "choose a layer that returns one")
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        torch.set_grad_enabled(True)
        return leaf.clone()  # the rest of the net may modify it in place; the leaf stays intact

    grad_was_enabled = torch.is_grad_enabled()
    handle = module.register_forward_hook(hook)
    try:
        torch.set_grad_enabled(False)
        logits = model(x)
    finally:
        handle.remove()
        torch.set_grad_enabled(grad_was_enabled)
    if not captured:
        raise RuntimeError(f"layer {name!r} did not run during the forward pass")
    return captured[0], logits


@dataclass(frozen=True)
class LayerRoles:
    """Layers worth looking at: ``stages`` from early to late, and ``cam_layer``, the layer CAM
    methods explain by default (a CNN's last spatial feature maps; a ViT's last ``norm1``)."""

    stages: list[str]
    cam_layer: str

    def pick(self, where: str) -> str:
        """``"early"``, ``"middle"`` or ``"late"`` -> a stage name."""
        index = {"early": 0, "middle": len(self.stages) // 2, "late": len(self.stages) - 1}
        if where not in index:
            raise ValueError(f"where must be 'early', 'middle' or 'late', not {where!r}")
        return self.stages[index[where]]


def layer_roles(model: nn.Module) -> LayerRoles:
    """Find the stages and the CAM layer of a network by its structure, not by its name.

    Known families: timm EfficientNet (``blocks.i``; CAM layer ``bn2``, the BatchNorm + ReLU6
    after the last conv), torchvision ResNet (``layer1..4``), VGG/AlexNet (each ReLU in
    ``features``), DenseNet (dense blocks), timm ViT / DeiT (``blocks.i``; CAM layer the last
    block's ``norm1``, as pytorch-grad-cam recommends: the final norm only feeds the class
    token) and Swin (``layers.i``; CAM layer the last stage's last block). Any other CNN: every
    ``nn.Conv2d`` in order.
    """
    model = unwrap(model)
    children = dict(model.named_children())
    blocks = getattr(model, "blocks", None)
    if "patch_embed" in children and isinstance(blocks, nn.Sequential) and blocks \
            and hasattr(blocks[-1], "norm1"):  # ViT, DeiT
        return LayerRoles([f"blocks.{i}" for i in range(len(blocks))],
                          f"blocks.{len(blocks) - 1}.norm1")
    stages = getattr(model, "layers", None)
    if "patch_embed" in children and isinstance(stages, nn.Sequential) \
            and hasattr(stages[-1], "blocks"):  # Swin
        return LayerRoles([f"layers.{i}" for i in range(len(stages))],
                          f"layers.{len(stages) - 1}.blocks.{len(stages[-1].blocks) - 1}")
    if {"conv_stem", "bn1", "blocks", "bn2"} <= children.keys():  # timm EfficientNet / MobileNet
        blocks = [f"blocks.{i}" for i in range(len(model.blocks))]
        return LayerRoles(["bn1", *blocks, "bn2"], "bn2")
    if {"layer1", "layer2", "layer3", "layer4"} <= children.keys():  # ResNet family
        return LayerRoles(["relu", "layer1", "layer2", "layer3", "layer4"], "layer4")
    features = children.get("features")
    if isinstance(features, nn.Sequential):
        named = dict(features.named_children())
        if any(k.startswith("denseblock") for k in named):  # DenseNet
            stages = [f"features.{k}" for k in named if k == "relu0" or k.startswith("denseblock")]
            return LayerRoles(stages, "features.norm5")
        relus = [f"features.{k}" for k, m in named.items() if isinstance(m, nn.ReLU)]
        if relus:  # VGG, AlexNet
            return LayerRoles(relus, relus[-1])
    convs = conv_layers(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer to look at")
    return LayerRoles(convs, convs[-1])


def conv_layers(model: nn.Module) -> list[str]:
    """Names of every ``nn.Conv2d`` in definition order."""
    return [name for name, m in unwrap(model).named_modules() if isinstance(m, nn.Conv2d)]


def patch_grid(model: nn.Module, tokens: int) -> tuple[int, tuple[int, int]]:
    """How a transformer's ``tokens`` tokens lie on the image: ``(prefix, (h, w))``.

    ``prefix`` tokens (class, distillation, register: timm's ``num_prefix_tokens``, else 1 when
    there is a ``cls_token``) come first; the ``h * w`` patch tokens follow, row by row, on
    ``patch_embed.grid_size`` (else the square grid ``h = w = sqrt(tokens - prefix)``). Raises a
    ``ValueError`` that says what to pass instead when neither fits.
    """
    net = getattr(model, "model", model) if not isinstance(model, nn.Module) else model
    prefix = int(getattr(net, "num_prefix_tokens", 1 if getattr(net, "cls_token", None) is not None
                         else 0))
    patches = tokens - prefix
    grid = getattr(getattr(net, "patch_embed", None), "grid_size", None)
    if grid is not None and grid[0] * grid[1] == patches:
        return prefix, (int(grid[0]), int(grid[1]))
    side = math.isqrt(max(patches, 0))
    if patches <= 0 or side * side != patches:
        raise ValueError(
            f"cannot lay {tokens} tokens ({prefix} prefix tokens) on a square patch grid; pass "
            "reshape=f with f(output) -> (N, K, h, w), e.g. dropping your model's extra tokens")
    return prefix, (side, side)


class _Stop(Exception):
    """Raised by a probe's hook: the forward pass has reached the layer it needed."""


def channel_count(model: nn.Module, layer: Layer, *, size: int = 64) -> int:
    """How many channels ``layer`` gives (dimension 1 of its output), from a forward pass of a
    small grey ``size`` x ``size`` image that stops at the layer, without gradients: what a
    channel index is checked against before a long computation starts."""
    net = unwrap(model)
    name, module = get_layer(net, layer)
    parameter = next(net.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    shape: list[int] = []

    def hook(module, inputs, output):
        shape.extend(output.shape)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        with evaluating(net), torch.no_grad():
            net(torch.zeros(1, 3, size, size, device=device))
    except _Stop:
        pass
    except RuntimeError as error:  # a model with a fixed input size (a ViT)
        raise ValueError(f"cannot probe {name!r} at {size} px: {error}") from error
    finally:
        handle.remove()
    return int(shape[1])
