"""Integrated Gradients: equal to captum on the lesson model and on a torchvision model for the
same rule and steps (and right where captum's trapezoid is not), exact where the answer is
known, complete up to an error that falls with the steps, the model left as it came, bad
arguments refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from conftest import assert_unchanged, snapshot
from torch import nn

from helpers.attribution import IG_METHODS, integrated_gradients, integration_points
from helpers.imputation import rise_blur


def captum_ig(net, x, target, baseline, steps, method, batch=8):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return IntegratedGradients(net).attribute(
            x.clone(), baselines=baseline, target=target, n_steps=steps, method=method,
            internal_batch_size=batch)


def close(ours, expected, rtol=1e-4):
    """Equal up to float rounding: within rtol of the largest expected value."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(ours, expected, rtol=rtol, atol=rtol * scale)


# ----- the quadrature rules ------------------------------------------------------------------

@pytest.mark.parametrize("method", IG_METHODS)
def test_rules_sum_to_one_and_match_captums_nodes(method):
    for steps in (2, 5, 16):
        alphas, weights = integration_points(steps, method)
        assert alphas.shape == weights.shape == (steps,)
        assert abs(weights.sum() - 1) < 1e-12 and (alphas >= 0).all() and (alphas <= 1).all()
        step_sizes, their_alphas = (f(steps) for f in approximation_parameters(method))
        np.testing.assert_allclose(alphas, their_alphas, atol=1e-6)  # captum: float32 linspace
        if method == "riemann_trapezoid":  # captum puts 1/m on nodes spaced 1/(m - 1)
            np.testing.assert_allclose(weights * (steps - 1) / steps, step_sizes, atol=1e-12)
        else:
            np.testing.assert_allclose(weights, step_sizes, atol=1e-12)


def test_gauss_legendre_is_exact_for_polynomials_of_degree_2m_minus_1():
    alphas, weights = integration_points(4)
    for degree in range(8):
        assert abs((weights * alphas**degree).sum() - 1 / (degree + 1)) < 1e-14
    assert abs((weights * alphas**8).sum() - 1 / 9) > 1e-6


# ----- equal to captum -----------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
def test_equals_captum_on_the_lesson_model(lite0, cat_coffee, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = integrated_gradients(lite0, cat_coffee, [281, 967], steps=8, progress=False)
        theirs = captum_ig(lite0.model, cat_coffee, [281, 967], 0.0, 8, "gausslegendre")
        close(ours, theirs)
        black = lite0.input_range[0]
        x = cat_coffee[1:]
        ours = integrated_gradients(lite0, x, "espresso", baseline="black", steps=4,
                                    method="riemann_right", progress=False)
        close(ours, captum_ig(lite0.model, x, 967, black.expand_as(x), 4, "riemann_right"))
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval().requires_grad_(False).double()


@pytest.mark.parametrize("method", IG_METHODS)
def test_equals_captum_on_a_torchvision_model(resnet, method):
    """In float64, so that the comparison sees the method and not the rounding: on this random
    ResNet18 float32 convolutions round to up to 5e-3 of the largest attribution, in ours and in
    captum alike (the lesson model is compared in float32 above)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 48, 48, generator=generator, dtype=torch.float64)
    baseline = torch.randn(2, 3, 48, 48, generator=generator, dtype=torch.float64) * 0.3
    theirs = captum_ig(resnet, x, [3, 7], baseline, 5, method, batch=4)
    if method == "riemann_trapezoid":  # captum's weights sum to (m - 1) / m
        theirs = theirs * 5 / 4
    ours = integrated_gradients(resnet, x, [3, 7], baseline=baseline, steps=5, method=method,
                                batch_size=3, progress=False)
    close(ours, theirs, rtol=1e-6)  # captum rounds its step sizes to float32


# ----- known answers and completeness --------------------------------------------------------

class Square(nn.Module):
    """Logit 0 is (w . x)^2, logit 1 is w . x: along the path from 0 the gradient of the first
    grows linearly with alpha, that of the second is constant."""

    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(2),
                                          dtype=torch.float64))

    def forward(self, x):
        s = (x * self.w).sum(dim=(1, 2, 3))
        return torch.stack([s**2, s], dim=1)


@pytest.mark.parametrize("method, factor", [
    ("gausslegendre", lambda m: 1.0), ("riemann_middle", lambda m: 1.0),
    ("riemann_trapezoid", lambda m: 1.0), ("riemann_left", lambda m: (m - 1) / m),
    ("riemann_right", lambda m: (m + 1) / m)])
def test_known_answers(method, factor):
    """For F = (w.x)^2 from baseline 0, IG = (w.x) w x exactly (the integral of 2 alpha is 1):
    the rules that integrate a straight line exactly give it, left and right Riemann sums give
    (m -+ 1)/m of it. For the linear logit every rule is exact: IG = w x."""
    net = Square((1, 3, 4, 5))
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = (x * net.w).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)
    for steps in (2, 3, 7):
        got = integrated_gradients(net, x, 0, steps=steps, method=method, progress=False)
        torch.testing.assert_close(got, factor(steps) * s * net.w.detach() * x)
        got = integrated_gradients(net, x, 1, steps=steps, method=method, progress=False)
        torch.testing.assert_close(got, net.w.detach() * x)


def completeness_error(model, x, target, baseline, steps):
    """|sum IG - (S(x) - S(x'))| / |S(x) - S(x')| per image."""
    ig = integrated_gradients(model, x, target, baseline=baseline, steps=steps, progress=False)
    x_base = torch.full_like(x, baseline)
    with torch.no_grad():
        gain = (model(x) - model(x_base))[torch.arange(len(x)), target]
    return ((ig.sum(dim=(1, 2, 3)) - gain).abs() / gain.abs())


def test_completeness_error_falls_with_steps_on_the_lesson_model(lite0, cat_coffee):
    """Measured (grey baseline, Gauss-Legendre): cat 0.98, 0.42, 0.04 and espresso 0.45, 0.02,
    0.01 of the score's change at 8, 32, 128 steps. The path's gradient has sharp peaks near
    the baseline, so the fall is not steady; the bounds keep a wide margin."""
    coarse = completeness_error(lite0, cat_coffee, [282, 967], 0.0, 8)
    fine = completeness_error(lite0, cat_coffee, [282, 967], 0.0, 128)
    assert (fine < 0.1).all() and (fine < coarse / 5).all(), (coarse, fine)


def test_completeness_on_a_smooth_torchvision_model():
    """With smooth activations (SiLU instead of ReLU: torchvision's EfficientNet-B0) the path's
    gradient is smooth, and Gauss-Legendre converges fast: 64 steps are complete to 1 %."""
    torch.manual_seed(0)
    net = torchvision.models.efficientnet_b0(weights=None).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    errors = [float(completeness_error(net, x, [5], 0.0, steps)[0]) for steps in (2, 8, 64)]
    assert errors[2] < 0.01 and errors[2] < errors[0] / 10, errors


# ----- invariants ----------------------------------------------------------------------------

def test_invariants(resnet):
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(3, 3, 32, 32, generator=generator, dtype=torch.float64)
    one = integrated_gradients(resnet, x, [1, 2, 3], steps=4, batch_size=1, progress=False)
    many = integrated_gradients(resnet, x, [1, 2, 3], steps=4, batch_size=5, progress=False)
    close(one, many)                                   # chunking changes nothing
    top = resnet(x).argmax(dim=1)
    close(integrated_gradients(resnet, x, steps=2, progress=False),
          integrated_gradients(resnet, x, top, steps=2, progress=False))
    assert integrated_gradients(resnet, x, 1, baseline=x, steps=3, progress=False).abs().max() == 0
    half = x.clone()
    half[..., :16] = 0.0                               # equal to the baseline there
    ig = integrated_gradients(resnet, half, 1, steps=2, progress=False)
    assert ig[..., :16].abs().max() == 0 and ig[..., 16:].abs().max() > 0


def test_named_baselines(lite0):
    x = lite0.preprocess("rocket")[..., :64, :64]
    low, high = lite0.input_range
    close(integrated_gradients(lite0, x, 3, baseline="black", steps=2, progress=False),
          integrated_gradients(lite0, x, 3, baseline=low, steps=2, progress=False))
    close(integrated_gradients(lite0, x, 3, baseline="blur", steps=2, progress=False),
          integrated_gradients(lite0, x, 3, baseline=rise_blur(x), steps=2, progress=False))
    a = integrated_gradients(lite0, x, 3, baseline="uniform", steps=2, progress=False)
    b = integrated_gradients(lite0, x, 3, baseline="uniform", steps=2, progress=False)
    c = integrated_gradients(lite0, x, 3, baseline="uniform", seed=1, steps=2, progress=False)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_model_left_as_it_came_under_no_grad_and_with_trainable_weights():
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None)
    net.train()
    net.layer2.eval()
    before = snapshot(net)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        out = integrated_gradients(net, x, [1, 2], steps=3, progress=False)
    assert out.shape == x.shape and torch.isfinite(out).all() and not out.requires_grad
    assert_unchanged(before, net)
    with pytest.raises(ValueError, match=r"outside \[0, 1000\)"):
        integrated_gradients(net, x, [1, 1000], steps=3, progress=False)
    assert_unchanged(before, net)


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "simpson"}, "method must be one of 'gausslegendre'"),
    ({"steps": 0}, r"steps must be an integer >= 1"),
    ({"steps": 1, "method": "riemann_trapezoid"}, r"steps must be an integer >= 2"),
    ({"batch_size": 0}, r"batch_size must be an integer >= 1"),
    ({"baseline": "grey"}, "'black', 'blur', 'uniform'"),
    ({"baseline": float("nan")}, "baseline must be a number"),
    ({"baseline": torch.full((1, 3, 8, 8), float("nan"))}, "baseline holds 192 NaN"),
    ({"baseline": torch.zeros(2, 3, 5, 5)}, "does not broadcast"),
    ({"baseline": torch.zeros(1, 3, 8, 8, dtype=torch.long)}, "must be float"),
])
def test_bad_arguments_are_refused(resnet, kwargs, message):
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        integrated_gradients(resnet, x, 1, progress=False, **kwargs)


def test_other_refusals(resnet, lite0):
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="LessonModel"):
        integrated_gradients(resnet, x, 1, baseline="black")
    with pytest.raises(ValueError, match="NaN"):
        integrated_gradients(resnet, x * float("nan"), 1)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        integrated_gradients(lite0, x.float(), 1)
    with pytest.raises(ValueError, match="tabby"):
        integrated_gradients(lite0, x.float(), "tabbby")
