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

Integrated Gradients (Sundararajan, Taly & Yan 2017) averages the plain gradient along the
straight path from a baseline to the image, so that the attributions add up to the change of the
score (completeness); ``integration_points`` gives the quadrature rules it can use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .common import (
    Target,
    check_batch,
    check_finite,
    check_int,
    check_number,
    evaluating,
    fixed_targets,
    in_chunks,
    resolve_targets,
    unwrap,
)
from .imputation import rise_blur

__all__ = [
    "UnsupportedActivationError",
    "InputPass",
    "input_pass",
    "saliency",
    "smooth_grad",
    "gradient_x_input",
    "deconvnet",
    "guided_backprop",
    "integrated_gradients",
    "integration_points",
    "IG_METHODS",
    "IG_BASELINES",
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


# ----- Integrated Gradients -----------------------------------------------------------------

IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
              "riemann_trapezoid")
IG_BASELINES = ("black", "blur", "uniform")
Baseline = Union[float, str, torch.Tensor]


def integration_points(steps: int, method: str = "gausslegendre"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The quadrature rule ``integral_0^1 g(a) da ~ sum_k w_k g(a_k)`` for ``steps = m``
    points: ``(alphas, weights)``, two float64 arrays of m values; the weights sum to 1.

    - ``"riemann_left"``: ``a_k = k / m`` for k = 0 ... m-1, ``w_k = 1 / m``;
    - ``"riemann_right"``: ``a_k = k / m`` for k = 1 ... m; ``"riemann_middle"``: ``(k + 1/2) / m``;
    - ``"riemann_trapezoid"``: ``a_k = k / (m - 1)`` for k = 0 ... m-1, ``w = 1 / (m - 1)``
      halved at both ends (needs ``steps >= 2``);
    - ``"gausslegendre"``: numpy's ``leggauss(m)`` nodes and weights moved from [-1, 1] to
      [0, 1]; exact for polynomials of degree up to 2m - 1.

    For a smooth integrand the error falls as 1/m (left, right), 1/m^2 (middle, trapezoid), and
    much faster for Gauss-Legendre. captum's ``riemann_trapezoid`` puts ``1 / m`` on the same
    nodes, so its weights sum to (m - 1) / m, not 1.
    Example: ``alphas, weights = integration_points(32, "riemann_middle")``.
    """
    if method not in IG_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, IG_METHODS))}, "
                         f"not {method!r}")
    m = check_int("steps", steps, low=2 if method == "riemann_trapezoid" else 1)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(m)
        return 0.5 * (nodes + 1), 0.5 * weights
    k = np.arange(m, dtype=np.float64)
    if method == "riemann_trapezoid":
        weights = np.full(m, 1 / (m - 1))
        weights[[0, -1]] /= 2
        return k / (m - 1), weights
    shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (k + shift) / m, np.full(m, 1 / m)


def _pixel_range(model, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The input values of black and white ``(1, 3, 1, 1)`` each (``LessonModel.input_range``);
    a plain module has no normalisation to read them from."""
    if not hasattr(model, "input_range"):
        raise ValueError(f"{what} needs the model's normalisation (mean, std): pass the "
                         "LessonModel from load_model(...) rather than its nn.Module, or give "
                         "the baseline as a tensor in the model's input space")
    return model.input_range


def _baseline(model, x: torch.Tensor, baseline: Baseline, seed: int) -> torch.Tensor:
    """The baseline as a batch like ``x`` (same shape, dtype and device)."""
    if isinstance(baseline, str):
        if baseline not in IG_BASELINES:
            raise ValueError(f"baseline must be a number (in the model's input space), a tensor, "
                             f"or one of {', '.join(map(repr, IG_BASELINES))}; not {baseline!r}")
        if baseline == "blur":
            return rise_blur(x.detach())
        low, high = (t.to(x.device, x.dtype) for t in _pixel_range(model, f"baseline={baseline!r}"))
        if baseline == "black":
            return low.expand_as(x).clone()
        generator = torch.Generator(device=x.device).manual_seed(seed)
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return low + noise * (high - low)  # every pixel uniform in [0, 255], each channel alone
    if isinstance(baseline, torch.Tensor):
        if not baseline.is_floating_point():
            raise ValueError(f"a baseline tensor must be float, got {baseline.dtype}")
        try:
            out = torch.broadcast_to(baseline.detach().to(x.device, x.dtype), x.shape)
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to "
                             f"the batch's {tuple(x.shape)}") from None
        return check_finite("baseline", out).clone()
    value = check_number("baseline", baseline)
    return torch.full_like(x.detach(), value)


def integrated_gradients(model, x: torch.Tensor, target: Target = None, *,
                         baseline: Baseline = 0.0, steps: int = 32,
                         method: str = "gausslegendre", batch_size: int = 4, seed: int = 0,
                         progress: bool = True) -> torch.Tensor:
    """Integrated Gradients (Sundararajan, Taly & Yan 2017): the gradient of the class logit
    S_c averaged along the straight path from a baseline x' to the image x, times x - x'::

        IG_i(x) = (x_i - x'_i) * integral_0^1 dS_c/dx_i (x' + a (x - x')) da
                ~ (x_i - x'_i) * sum_k w_k dS_c/dx_i (x' + a_k (x - x'))

    with the nodes a_k and weights w_k of ``integration_points(steps, method)``. Completeness:
    the attributions sum to S_c(x) - S_c(x'), up to the quadrature error, which falls with
    ``steps`` (measure it; the paper asks for 5 % or better). With the same ``method`` and
    ``steps`` this equals captum's ``IntegratedGradients(net).attribute(x, baselines, target,
    n_steps=steps, method=method)``, except ``"riemann_trapezoid"``, whose captum weights sum
    to (m - 1) / m (see ``integration_points``).

    Args:
        model: a ``LessonModel`` or ``nn.Module``; x: ``(N, 3, H, W)`` in the model's input space;
        target: a class index or name, one per image, or ``None`` (each image's top class on
            ``x``; the class is fixed on ``x``, never on a point of the path).
        baseline: x'. A number, in the model's input space like captum's (``0.0``, the
            default, is mid-grey for Lite0, whose mean and std are 0.5, and the mean colour for
            ImageNet-normalised models); a tensor that broadcasts to ``x``; or ``"black"`` (all
            pixels 0), ``"uniform"`` (each value drawn uniformly from the 0-255 range, repeatable
            with ``seed``), ``"blur"`` (``x`` blurred by RISE's Gaussian, sigma 5 px). ``"black"``
            and ``"uniform"`` need a ``LessonModel`` (its mean and std).
        steps: points on the path (one forward and backward pass each, per image).
        method: ``"gausslegendre"`` (captum's default; the most accurate for a given number of
            steps) or ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
            ``"riemann_trapezoid"``.
        batch_size: path points per forward pass (4: on Lite0 at 224 px each point's graph
            costs about 75 MB, so 8 would take a lesson past 1.5 GB; 8 was no faster on 2 CPU
            cores).
        seed: for ``baseline="uniform"``; progress: show a bar when there is more than one chunk.

    The path points stay in PyTorch's default memory order, as captum's and a lesson's own loop
    do: channels-last is about 15 % faster on a CPU, but with 2 threads it rounds differently
    (5e-4 of the largest attribution on Lite0), enough to break a check against a hand-written
    sum.

    Returns ``(N, 3, H, W)``, signed, in the units of the logit: summed over all pixels and
    channels they give S_c(x) - S_c(x').
    Example: ``integrated_gradients(model, model.preprocess("cat"), "tabby", baseline="black")``.
    """
    check_batch(x)
    check_finite("x", x)
    alphas, weights = integration_points(steps, method)
    check_int("batch_size", batch_size)
    start = _baseline(model, x, baseline, seed)
    classes = fixed_targets(model, x, target)
    delta = x.detach() - start
    net = unwrap(model)
    total = torch.zeros_like(delta)
    jobs = [(i, k) for i in range(x.shape[0]) for k in range(len(alphas))]
    with evaluating(net), torch.enable_grad():
        for chunk in in_chunks(jobs, batch_size, desc="Integrated Gradients", progress=progress):
            images = torch.tensor([i for i, _ in chunk], device=x.device)
            alpha = torch.tensor([alphas[k] for _, k in chunk], device=x.device,
                                 dtype=x.dtype).view(-1, 1, 1, 1)
            leaf = (start[images] + alpha * delta[images]).requires_grad_(True)
            logits = net(leaf.clone())  # a model may change its input in place; a leaf cannot
            score = logits.gather(1, classes[images][:, None]).sum()  # images are independent
            (grad,) = torch.autograd.grad(score, leaf)
            weight = torch.tensor([weights[k] for _, k in chunk], device=x.device,
                                  dtype=x.dtype).view(-1, 1, 1, 1)
            total.index_add_(0, images, grad * weight)
    return total * delta


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
