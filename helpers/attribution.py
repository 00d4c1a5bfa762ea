"""Gradient attributions: which input pixels change a class score.

One calling convention for every method (captum's): ``method(model, x, target=None, ...)`` with
``model`` an ``nn.Module`` or a ``LessonModel``, ``x`` a batch ``(N, 3, H, W)``, ``target`` an
int, a class name, a sequence of N of those, or None for each image's top class. Each returns a
tensor batch on ``x``'s device. Gradients flow to the input only (``torch.autograd.grad``), never
into parameter ``.grad``; the model is in eval mode during the call and leaves it exactly as it
came, also when the call raises.

The ReLU backward rules (Springenberg et al. 2015, table 1), for a ReLU-like unit with forward
input ``z`` and incoming gradient ``g``:

=============  ====================================  =========================
method         backward                              depends on
=============  ====================================  =========================
saliency       ``g * [0 < z < top]``                 forward input
deconvnet      ``max(g, 0)``                         gradient only
guided         ``relu(g) * [0 < z < top]``           both
=============  ====================================  =========================

``top`` is infinity for ReLU and 6 for ReLU6. The rules are applied by a ``TorchFunctionMode``
that intercepts every ReLU/ReLU6 *call* during the forward pass, whether it comes from a module
(``nn.ReLU``, ``nn.ReLU6``, timm's ``BatchNormAct2d``, in place or not) or a function in a
``forward`` (``F.relu``, ``torch.relu_``): no module is swapped, so nothing needs restoring.
Activations without a defined rule (SiLU, GELU, LeakyReLU, ...) raise
:class:`UnsupportedActivationError`, never a silent wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .common import (
    Target,
    check_batch,
    check_int,
    check_number,
    evaluating,
    fixed_targets,
    in_chunks,
    resolve_targets,
    unwrap,
)

__all__ = [
    "UnsupportedActivationError",
    "InputPass",
    "input_pass",
    "saliency",
    "smooth_grad",
    "gradient_x_input",
    "deconvnet",
    "guided_backprop",
    "resolve_targets",
]

class UnsupportedActivationError(TypeError):
    """A backward rule is defined for ReLU and ReLU6 only; the message names the activation."""


@dataclass
class InputPass:
    """One forward pass kept with its graph, so that input gradients for several classes cost one
    backward each (an explorer's class switch). ``leaf`` ``(N, 3, H, W)`` is the input that
    requires grad, ``logits`` ``(N, classes)``; ``rule`` the ReLU backward rule it was run with."""

    model: torch.nn.Module
    leaf: torch.Tensor
    logits: torch.Tensor
    rule: str | None = None

    def gradient(self, target: Target = None, *, keep_graph: bool = False) -> torch.Tensor:
        """``d y_c / d x`` ``(N, 3, H, W)`` for ``target`` (as every method takes it);
        ``keep_graph=True`` allows another call."""
        index = resolve_targets(self.model, self.logits, target)
        score = self.logits.gather(1, index[:, None]).sum()  # images are independent in eval mode
        (grad,) = torch.autograd.grad(score, self.leaf, retain_graph=keep_graph)
        return grad


def input_pass(model, x: torch.Tensor, *, rule: str | None = None) -> InputPass:
    """Run ``model(x)`` in eval mode with the graph from the input on (``rule``: ``None``,
    ``"guided"`` or ``"deconvnet"``, the ReLU backward rule); the parameters are not
    differentiated."""
    check_batch(x)
    if rule not in (None, "guided", "deconvnet"):
        raise ValueError(f"rule must be None, 'guided' or 'deconvnet', not {rule!r}")
    net = unwrap(model)
    with evaluating(net), torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        x_in = leaf.clone()  # a model may modify its input in place; a leaf cannot be
        if rule is None:
            logits = net(x_in)
        else:
            with _ReluRuleMode(rule):
                logits = net(x_in)
    return InputPass(model, leaf, logits, rule)


def _input_gradient(model, x: torch.Tensor, target: Target, rule: str | None = None
                    ) -> torch.Tensor:
    """d(score of each image's target class)/d(input), with an optional ReLU backward rule."""
    return input_pass(model, x, rule=rule).gradient(target)


def saliency(model, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Vanilla gradient (Simonyan et al. 2014): ``d y_c / d x`` of the class *logit* y_c.

    The logit, not the softmax probability: the probability's gradient also pushes the other
    classes down, so it mixes "more of c" with "less of everything else".

    Args: ``model`` (a ``LessonModel`` or ``nn.Module``); ``x`` ``(N, 3, H, W)``; ``target``: a
    class index or name, one per image, or ``None`` for each image's top class.
    Returns ``(N, 3, H, W)``, signed (``helpers.maps.as_grey`` makes a per-pixel map).
    Example: ``saliency(model, model.preprocess("cat"), "tabby")``.
    """
    return _input_gradient(model, x, target)


def gradient_x_input(model, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Gradient times input (Shrikumar et al. 2016): ``x * d y_c / d x``.

    Args and Returns as ``saliency``: ``(N, 3, H, W)`` -> ``(N, 3, H, W)``, signed.
    Example: ``gradient_x_input(model, x, "tabby")``."""
    return saliency(model, x, target) * x


def deconvnet(model, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """DeconvNet (Zeiler & Fergus 2014): through each ReLU, pass ``max(g, 0)`` regardless of
    the forward pass.

    Args and Returns as ``saliency``: ``(N, 3, H, W)`` -> ``(N, 3, H, W)``. An activation
    without a rule (SiLU, GELU) raises ``UnsupportedActivationError``.
    Example: ``deconvnet(model, x, "tabby")``."""
    return _input_gradient(model, x, target, rule="deconvnet")


def guided_backprop(model, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): through each ReLU, pass the gradient
    only where the forward input was active *and* the gradient is positive.

    Args and Returns as ``saliency``: ``(N, 3, H, W)`` -> ``(N, 3, H, W)``. An activation
    without a rule (SiLU, GELU) raises ``UnsupportedActivationError``.
    Example: ``guided_backprop(model, x, "tabby")``."""
    return _input_gradient(model, x, target, rule="guided")


def smooth_grad(model, x: torch.Tensor, target: Target = None, *, n: int = 25,
                noise: float = 0.15, method: Callable = saliency, batch_size: int = 4,
                seed: int = 0, progress: bool = True) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the mean of ``method`` over ``n`` noisy copies.

    ``noise`` is the standard deviation sigma as a fraction of each image's value range
    (``max - min``), the paper's 10-20 %. The target is fixed on the clean image (noise must not
    change which class is explained). Noisy copies run ``batch_size`` at a time (4: each copy's
    backward graph costs ~100 MB on Lite0 at 224 px, and larger batches were no faster on 2 CPU
    cores), with a progress bar; ``seed`` makes the noise repeatable without touching torch's
    global generator.

    Args: as ``saliency``, plus ``n`` copies, ``noise`` (fraction of the value range),
    ``method`` (any attribution method), ``batch_size``, ``seed``, ``progress`` (a bar).
    Returns ``(N, 3, H, W)``. Example: ``smooth_grad(model, x, "tabby", n=16, noise=0.15)``.
    """
    check_int("n", n)
    check_int("batch_size", batch_size)
    check_number("noise", noise, low=0.0)
    check_batch(x)
    classes = fixed_targets(model, x, target)
    span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1)
    sigma = noise * span
    generator = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros_like(x)
    for i in range(x.shape[0]):  # the same draws, in the same order, whatever batch_size
        for chunk in in_chunks(range(n), batch_size, desc=f"SmoothGrad {i + 1}/{x.shape[0]}",
                               progress=progress):
            noisy = x[i:i + 1] + sigma[i] * torch.randn(
                (len(chunk), *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
            total[i] += method(model, noisy, [int(classes[i])] * len(chunk)).sum(dim=0)
    return total / n


# ----- the ReLU backward rules ---------------------------------------------------------------

class _DeconvReLU(torch.autograd.Function):
    """``clamp(z, 0, top)`` forward; backward ``max(g, 0)``, whatever z was (the DeconvNet rule:
    the paper's "rectification" of the reconstruction signal; for ReLU6 the cap at ``top``
    belongs to the forward pass only, so the backward is the same as for ReLU)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, top: float | None) -> torch.Tensor:
        return z.clamp(min=0) if top is None else z.clamp(0, top)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g.clamp(min=0), None


def _positive(g: torch.Tensor) -> torch.Tensor:
    return g.clamp(min=0)


def _apply_rule(rule: str, func, args, kwargs, top: float | None) -> torch.Tensor:
    if rule == "deconvnet":
        return _DeconvReLU.apply(args[0], top)
    # Guided: the activation runs natively (in place if it was), so its own backward applies the
    # forward mask [0 < z < top]; a hook on its output first keeps only positive gradients.
    out = func(*args, **kwargs)
    if out.requires_grad:
        out.register_hook(_positive)
    return out


_RELU = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_HARDTANH = {F.hardtanh, F.hardtanh_, F.relu6}
_UNSUPPORTED = {
    F.silu: "SiLU (swish)", F.gelu: "GELU", F.leaky_relu: "LeakyReLU", F.leaky_relu_: "LeakyReLU",
    F.elu: "ELU", F.elu_: "ELU", F.selu: "SELU", F.celu: "CELU", F.hardswish: "Hardswish",
    F.mish: "Mish", F.softplus: "Softplus", F.prelu: "PReLU", F.rrelu: "RReLU",
    F.hardsigmoid: "Hardsigmoid", torch.sigmoid: "Sigmoid", torch.Tensor.sigmoid: "Sigmoid",
    F.sigmoid: "Sigmoid", torch.tanh: "Tanh", torch.Tensor.tanh: "Tanh", F.tanh: "Tanh",
}


class _ReluRuleMode(TorchFunctionMode):
    """While active, every ReLU/ReLU6 call follows ``rule`` (``_apply_rule``); an activation
    without a rule raises."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU:
            return _apply_rule(self.rule, func, args, kwargs, None)
        if func in _HARDTANH:
            low, top = (0.0, 6.0) if func is F.relu6 else _hardtanh_bounds(args, kwargs)
            if low != 0.0:
                raise UnsupportedActivationError(
                    f"Hardtanh({low}, {top}) has no {self.rule} rule; only ReLU-like "
                    "clamps at 0 (ReLU, ReLU6) do")
            return _apply_rule(self.rule, func, args, kwargs, top)
        if func in _UNSUPPORTED:
            raise UnsupportedActivationError(
                f"{_UNSUPPORTED[func]} activation found: the {self.rule} backward rule is "
                "defined for ReLU and ReLU6 only, and applying it elsewhere would give a silently "
                "wrong map. Use saliency / smooth_grad / grad_cam for this model.")
        return func(*args, **kwargs)


def _hardtanh_bounds(args, kwargs) -> tuple[float, float]:
    low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
    top = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
    return float(low), float(top)
