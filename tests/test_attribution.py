"""Gradient attributions: equal to captum where captum is right, right where it is not
(ReLU6, in-place, functional ReLU), loud on activations without a rule, model left untouched."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Deconvolution, GuidedBackprop, Saliency
from conftest import assert_unchanged, snapshot
from torch import nn

from helpers.attribution import (
    UnsupportedActivationError,
    deconvnet,
    gradient_x_input,
    guided_backprop,
    saliency,
    smooth_grad,
)
from helpers.plotting import as_color, as_grey, split_signs

METHODS = [saliency, gradient_x_input, deconvnet, guided_backprop]


@pytest.fixture(scope="module", params=["resnet50", "vgg16"])
def zoo_net(request):
    torch.manual_seed(0)
    return torchvision.models.get_model(request.param, weights=None).eval()


@pytest.mark.parametrize("ours,theirs", [(saliency, Saliency), (deconvnet, Deconvolution),
                                         (guided_backprop, GuidedBackprop)])
def test_equals_captum_on_relu_nets(zoo_net, ours, theirs):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    expected_kwargs = {"abs": False} if theirs is Saliency else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(zoo_net).attribute(x.clone(), target=[3, 7], **expected_kwargs)
    torch.testing.assert_close(ours(zoo_net, x, [3, 7]), expected, rtol=1e-5, atol=1e-5)


def test_elementwise_rules_on_a_single_relu6():
    z = torch.tensor([[-2.0, -0.5, 0.5, 3.0, 5.9, 6.5, 9.0, 1.0]])
    w = torch.tensor([[1.0, -1.0, 2.0, -3.0, 4.0, 5.0, -6.0, 7.0]])

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU6(inplace=True)

        def forward(self, x):
            return (self.act(x.flatten(1)) * w).sum(dim=1, keepdim=True)

    x = z.view(1, 8, 1, 1).expand(1, 8, 1, 1).clone().view(1, 1, 1, 8)
    active = (z > 0) & (z < 6)
    for method, expected in (
        (saliency, w * active),                         # forward mask
        (deconvnet, w.clamp(min=0)),                    # gradient sign only
        (guided_backprop, w.clamp(min=0) * active),     # both
    ):
        got = method(Probe(), x.view(1, 1, 1, 8), 0).view(1, 8)
        torch.testing.assert_close(got, expected, msg=method.__name__)


class SmallReLU6Net(nn.Module):
    """conv -> ReLU6 (in place) -> conv -> functional relu6 -> pool -> linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)
        with torch.no_grad():
            self.conv1.weight.mul_(8)  # push many pre-activations above 6

    def forward(self, x):
        a = self.act1(self.conv1(x))
        b = F.relu6(self.conv2(a))
        return self.fc(b.mean(dim=(2, 3)))


def reference(net: SmallReLU6Net, x: torch.Tensor, target: int, rule: str) -> torch.Tensor:
    """Backward by hand: autograd only through the linear parts, the ReLU6 rules written out."""
    def through(g, z):
        if rule == "deconvnet":
            return g.clamp(min=0)
        mask = ((z > 0) & (z < 6)).to(g.dtype)
        return g * mask if rule == "vanilla" else g.clamp(min=0) * mask

    x = x.detach().requires_grad_(True)
    z1 = net.conv1(x)
    a1 = z1.clamp(0, 6).detach().requires_grad_(True)
    z2 = net.conv2(a1)
    b = z2.clamp(0, 6).detach().requires_grad_(True)
    (g_b,) = torch.autograd.grad(net.fc(b.mean(dim=(2, 3)))[0, target], b)
    (g_a1,) = torch.autograd.grad(z2, a1, grad_outputs=through(g_b, z2.detach()))
    (g_x,) = torch.autograd.grad(z1, x, grad_outputs=through(g_a1, z1.detach()))
    return g_x


@pytest.mark.parametrize("method,rule", [(saliency, "vanilla"), (deconvnet, "deconvnet"),
                                         (guided_backprop, "guided")])
def test_relu6_rules_match_a_hand_written_reference(method, rule):
    net = SmallReLU6Net().eval()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    z1 = net.conv1(x)
    assert (z1 > 6).any() and (z1 < 0).any(), "the test must exercise both clamps"
    torch.testing.assert_close(method(net, x, 2), reference(net, x, 2, rule))


def test_guided_backprop_on_lite0_differs_from_vanilla_gradient(lite0, cat_coffee):
    x = cat_coffee[:1]
    vanilla, guided = saliency(lite0, x), guided_backprop(lite0, x)
    assert (guided - vanilla).abs().max() > 0.1 * vanilla.abs().max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = GuidedBackprop(lite0.model).attribute(x.clone(), target=int(
            lite0.model(x).argmax()))
    assert torch.equal(captum, vanilla), "captum's guided backprop is the vanilla gradient here"


@pytest.mark.parametrize("activation,name", [(nn.SiLU(), "SiLU"), (nn.GELU(), "GELU"),
                                             (nn.LeakyReLU(), "LeakyReLU")])
def test_activation_without_a_rule_is_named(activation, name):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), activation, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).eval()
    before = snapshot(net)
    for method in (guided_backprop, deconvnet):
        with pytest.raises(UnsupportedActivationError, match=name):
            method(net, torch.randn(1, 3, 8, 8), 0)
    assert_unchanged(before, net)
    assert saliency(net, torch.randn(1, 3, 8, 8), 0).shape == (1, 3, 8, 8)


@pytest.mark.parametrize("method", METHODS + [smooth_grad])
def test_model_left_exactly_as_it_came(method):
    net = torchvision.models.resnet18(weights=None)
    net.train()          # a student's model in train mode, parameters requiring grad
    net.layer2.eval()
    before = snapshot(net)
    x = torch.randn(2, 3, 64, 64)
    kwargs = {"n": 2, "progress": False} if method is smooth_grad else {}
    out = method(net, x, [1, 2], **kwargs)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert_unchanged(before, net)
    with pytest.raises(ValueError, match="2 targets for a batch of 3"):
        method(net, torch.randn(3, 3, 64, 64), [1, 2], **kwargs)
    assert_unchanged(before, net)


def test_target_none_is_each_images_top_class(lite0, cat_coffee):
    torch.testing.assert_close(saliency(lite0, cat_coffee),
                               saliency(lite0, cat_coffee, ["tiger cat", "espresso"]))
    with pytest.raises(ValueError, match="tabby"):
        saliency(lite0, cat_coffee, "tabbby")


def test_smooth_grad_batching_seed_and_limit(lite0, cat_coffee):
    x = cat_coffee[:1]
    torch.testing.assert_close(smooth_grad(lite0, x, 281, n=1, noise=0.0, progress=False),
                               saliency(lite0, x, 281))
    a = smooth_grad(lite0, x, 281, n=4, batch_size=4, progress=False)
    b = smooth_grad(lite0, x, 281, n=4, batch_size=4, progress=False)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, saliency(lite0, x, 281))


def test_display_transforms():
    grad = torch.randn(2, 3, 5, 5)
    colour, grey = as_color(grad), as_grey(grad)
    assert colour.shape == (2, 5, 5, 3) and grey.shape == (2, 5, 5)
    assert colour.min() >= 0 and colour.max() <= 1 and grey.min() == 0 and grey.max() == 1
    assert ((colour - 0.5).abs().amax(dim=(1, 2, 3)) == 0.5).all()  # the 99th percentile saturates
    # zero is mid-grey, and the sign survives the colour mapping
    torch.testing.assert_close(as_color(torch.zeros(1, 3, 4, 4)), torch.full((1, 4, 4, 3), 0.5))
    assert ((colour > 0.5) == (grad.permute(0, 2, 3, 1) > 0)).all()
    pos, neg = split_signs(grad)
    assert (pos >= 0).all() and (neg >= 0).all() and pos.max() == 1 and neg.max() == 1
    assert torch.isfinite(as_grey(torch.zeros(1, 3, 4, 4))).all()


def test_functional_relu_gets_the_rule_too():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(5)
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x), inplace=True).mean(dim=(2, 3)))

    class WithModule(Functional):  # the same net with a ReLU module, which captum can see
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))

    net = Functional().eval()
    twin = WithModule().eval()
    twin.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = GuidedBackprop(twin).attribute(x.clone(), target=1)
    torch.testing.assert_close(guided_backprop(net, x, 1), expected)


def test_wrong_input_shapes_get_a_clear_error(lite0):
    from helpers.cam import grad_cam

    image = lite0.preprocess("cat")[0]
    for method in (saliency, guided_backprop, grad_cam):
        with pytest.raises(ValueError, match=r"x\[None\]"):
            method(lite0, image)
    with pytest.raises(TypeError, match="preprocess"):
        saliency(lite0, "cat")
    with pytest.raises(ValueError, match="uint8"):
        grad_cam(lite0, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
