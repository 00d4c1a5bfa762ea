"""CAM family: equal to grad-cam, torchcam and captum; Score-CAM agrees with torchcam; Grad-CAM++,
LayerCAM and HiResCAM equal grad-cam's (and torchcam's where its formula is the paper's); maps
land on the right object of a collage; frozen / no_grad / batched / flat inputs all work."""

from __future__ import annotations

import copy
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from conftest import assert_unchanged, snapshot
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy.stats import spearmanr
from torch import nn
from torchcam.methods import GradCAM as TorchcamGradCAM
from torchcam.methods import GradCAMpp as TorchcamGradCAMpp
from torchcam.methods import LayerCAM as TorchcamLayerCAM
from torchcam.methods import ScoreCAM as TorchcamScoreCAM

import helpers
from helpers import record
from helpers.cam import (
    cam,
    cam_from_weights,
    cam_weights,
    capture_layer,
    grad_cam,
    grad_cam_plus_plus,
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    guided_grad_cam,
    hires_cam,
    layer_cam,
    score_cam,
    score_cam_weights,
)
from helpers.images import collage


def minmax(maps: torch.Tensor) -> torch.Tensor:
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + 1e-7)


def upsampled(maps: torch.Tensor, size) -> torch.Tensor:
    return minmax(F.interpolate(maps[:, None], size=size, mode="bilinear",
                                align_corners=False)[:, 0])


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


CASES = [("efficientnet_lite0", "bn2"), ("efficientnet_lite0", "blocks.4"),
         ("resnet50", "layer4"), ("resnet50", "layer3")]


@pytest.mark.parametrize("name,layer", CASES)
def test_grad_cam_equals_three_peer_libraries(name, layer, lite0, cat_coffee, resnet50):
    net = lite0.model if name == "efficientnet_lite0" else resnet50
    x = cat_coffee
    targets = [281, 967]
    ours = grad_cam(net, x, targets, layer=layer)
    assert ours.shape == (2, 224, 224) and ours.min() >= 0 and ours.max() <= 1
    # The peers need parameters that require grad (grad-cam and torchcam fail on frozen ones).
    peer_net = copy.deepcopy(net).requires_grad_(True)
    module = helpers.get_layer(peer_net, layer)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with GradCAM(model=peer_net, target_layers=[module]) as gradcam:
            expected = torch.as_tensor(gradcam(
                input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)
        with TorchcamGradCAM(peer_net, layer) as extractor:
            low = extractor(targets, peer_net(x))[0]
        torch.testing.assert_close(ours, upsampled(low, (224, 224)), atol=1e-4, rtol=0)
        low = LayerGradCam(peer_net, module).attribute(x, target=targets,
                                                       relu_attributions=True)
        captum = minmax(LayerAttribution.interpolate(low, (224, 224), "bilinear")[:, 0])
        torch.testing.assert_close(ours, captum, atol=1e-4, rtol=0)


def test_raw_signed_maps_equal_captums_and_the_default_layer_is_logged(lite0, cat_coffee,
                                                                       caplog):
    """``relu=False, normalize=False, upsample=False``: the raw signed map at the layer, which
    can be compared across images and classes, as captum's ``LayerGradCam`` gives it."""
    layer = helpers.layer_roles(lite0.model).cam_layer
    with caplog.at_level("INFO", logger="helpers.cam"):
        ours = grad_cam(lite0, cat_coffee, [281, 967], relu=False, normalize=False,
                        upsample=False)
    assert f"{layer!r}" in caplog.text
    peer_net = copy.deepcopy(lite0.model).requires_grad_(True)
    module = helpers.get_layer(peer_net, layer)[1]
    captum = LayerGradCam(peer_net, module).attribute(cat_coffee, target=[281, 967])[:, 0]
    torch.testing.assert_close(ours, captum, atol=1e-5, rtol=1e-4)
    assert (ours.amin(dim=(1, 2)) != 0).all()  # raw values, not min-max scaled to [0, 1]
    assert (grad_cam(lite0, cat_coffee, [281, 967], upsample=False).amin(dim=(1, 2)) == 0).all()


@pytest.fixture(scope="module")
def score_maps(lite0, cat_coffee):
    x = cat_coffee[:1]
    return x, score_cam(lite0, x, 281, score="logit", channel_softmax=True, progress=False)


def test_score_cam_agrees_with_torchcam(lite0, score_maps):
    # torchcam's variant: softmax over channels of the masked logits
    x, ours = score_maps
    with TorchcamScoreCAM(lite0.model, "bn2", batch_size=32) as extractor:
        with torch.no_grad():
            low = extractor(281, lite0.model(x))[0]
    expected = upsampled(low, (224, 224))
    pearson = torch.corrcoef(torch.stack([ours.flatten(), expected.flatten()]))[0, 1]
    assert pearson >= 0.99


def test_score_cam_fast_mode_ranks_pixels_like_full_mode(lite0, score_maps):
    x, full = score_maps
    fast = score_cam(lite0, x, 281, top_k=128, score="logit", channel_softmax=True,
                     progress=False)
    assert spearmanr(fast.flatten().numpy(), full.flatten().numpy()).statistic >= 0.95


def test_collage_maps_land_on_the_right_half(lite0):
    x = lite0.preprocess(collage("cat", "coffee"))
    maps = grad_cam(lite0, torch.cat([x, x]), ["tabby", "espresso"])
    half = maps.shape[-1] // 2
    assert maps[0, :, :half].sum() / maps[0].sum() >= 0.8
    assert maps[1, :, half:].sum() / maps[1].sum() >= 0.8
    fast = score_cam(lite0, x, "tabby", top_k=64, progress=False)[0]
    assert fast[:, :half].sum() / fast.sum() >= 0.7


def test_frozen_no_grad_batch_of_four_with_four_targets(lite0, cat_coffee):
    x = torch.cat([cat_coffee, cat_coffee.flip(-1)])
    targets = [281, 967, 285, 504]
    assert not any(p.requires_grad for p in lite0.model.parameters())
    before = snapshot(lite0.model)
    with torch.no_grad():
        batch = grad_cam(lite0, x, targets)
    one_by_one = torch.cat([grad_cam(lite0, x[i:i + 1], t) for i, t in enumerate(targets)])
    torch.testing.assert_close(batch, one_by_one, atol=1e-5, rtol=0)
    assert_unchanged(before, lite0.model)


def test_cam_equals_grad_cam_on_a_gap_net(lite0, cat_coffee):
    # For a global-average-pooled net at its last layer the two weights are proportional.
    torch.testing.assert_close(cam(lite0, cat_coffee, [281, 967]),
                               grad_cam(lite0, cat_coffee, [281, 967]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="grad_cam"):
        cam(torchvision.models.vgg16(weights=None), torch.zeros(1, 3, 64, 64), 0)


def test_flat_activations_give_zero_maps_not_nan():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.fill_(-1.0)  # every activation is 0 after the ReLU
    x = torch.randn(2, 3, 16, 16)
    for method in (grad_cam, cam, grad_cam_plus_plus, hires_cam, layer_cam):
        maps = method(net, x, [0, 1], layer="1")
        assert torch.isfinite(maps).all() and (maps == 0).all()
    maps = score_cam(net, x, [0, 1], layer="1", progress=False)
    assert torch.isfinite(maps).all() and (maps == 0).all()


def test_guided_grad_cam_and_model_unchanged(lite0, cat_coffee):
    before = snapshot(lite0.model)
    out = guided_grad_cam(lite0, cat_coffee, [281, 967])
    assert out.shape == cat_coffee.shape and torch.isfinite(out).all()
    assert_unchanged(before, lite0.model)


def test_score_cam_weights_are_the_papers_definition():
    """w_k = softmax(f(x * M_k))_c with M_k the upsampled, min-max scaled channel k; no softmax
    over channels. Written out channel by channel on a small net."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(5, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(6, 4)).eval()
    with torch.no_grad():  # channel 2: flat but not zero; the authors' code skips such a channel
        net[0].weight[2].zero_()
        net[0].bias[2] = 0.5
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    layer_pass = capture_layer(net, x, [1, 3], layer="2")
    ours = score_cam_weights(layer_pass, progress=False)
    expected = torch.zeros(2, 5)
    with torch.no_grad():
        for i, c in enumerate([1, 3]):
            for k in range(5):
                mask = F.interpolate(layer_pass.activations[i:i + 1, k:k + 1], size=(16, 16),
                                     mode="bilinear", align_corners=False)
                span = mask.max() - mask.min()
                if span > 0:
                    mask = (mask - mask.min()) / span
                    expected[i, k] = net(x[i:i + 1] * mask).softmax(dim=1)[0, c]
    assert (expected[:, 2] == 0).all() and (expected[:, [0, 1, 3, 4]] > 0).all()
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)
    channel_softmax = score_cam_weights(layer_pass, score="logit", channel_softmax=True,
                                        progress=False)
    torch.testing.assert_close(channel_softmax.sum(dim=1), torch.ones(2))
    maps = cam_from_weights(layer_pass.activations, ours, (16, 16))
    torch.testing.assert_close(maps, score_cam(net, x, [1, 3], layer="2", progress=False))


def test_grad_cam_weights_are_the_mean_gradient_and_cam_weights_the_classifier(lite0, cat_coffee):
    layer_pass = capture_layer(lite0, cat_coffee, [281, 967])
    with record(lite0, "bn2", grads=True) as rec:
        logits = lite0(cat_coffee.clone().requires_grad_(True))
        logits[[0, 1], [281, 967]].sum().backward()
    torch.testing.assert_close(grad_cam_weights(layer_pass), rec.grad("bn2").mean(dim=(2, 3)),
                               atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(cam_weights(layer_pass), lite0.model.classifier.weight[[281, 967]])
    assert all(p.grad is None for p in lite0.model.parameters())


def test_inference_mode_gets_a_clear_error_and_changes_nothing(lite0, cat_coffee):
    before = snapshot(lite0.model)
    for method in (grad_cam, score_cam, guided_grad_cam, grad_cam_plus_plus, hires_cam,
                   layer_cam):
        with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
            method(lite0, cat_coffee[:1], 281)
    with torch.inference_mode():
        made_inside = lite0.preprocess("cat")
    with pytest.raises(RuntimeError, match="inference_mode"):
        grad_cam(lite0, made_inside, 281)
    assert_unchanged(before, lite0.model)


# ----- Grad-CAM++, HiResCAM, LayerCAM ---------------------------------------------------------

VARIANTS = (grad_cam_plus_plus, hires_cam, layer_cam)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def _net(name, lite0, resnet18):
    return lite0.model if name == "efficientnet_lite0" else resnet18


def _peer(net, layer):
    # The peers need parameters that require grad (grad-cam and torchcam fail on frozen ones).
    peer_net = copy.deepcopy(net).requires_grad_(True)
    return peer_net, helpers.get_layer(peer_net, layer)[1]


def _grad_cam_library(cls, net, module, x, targets):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(model=net, target_layers=[module]) as extractor:
            return torch.as_tensor(extractor(
                input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))


def _torchcam(cls, net, layer, x, targets):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(net, layer) as extractor:
            return upsampled(extractor(targets, net(x))[0], tuple(x.shape[-2:]))


def _pearson(a, b):
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


# Lite0's block outputs are signed (linear bottlenecks): "blocks.3" for the elementwise methods;
# Grad-CAM++'s alpha assumes non-negative maps, so its second layer is a ReLU6 output.
ELEMENTWISE_CASES = [("efficientnet_lite0", "bn2"), ("efficientnet_lite0", "blocks.3"),
                     ("resnet18", "layer4"), ("resnet18", "layer3")]
PLUS_PLUS_CASES = [("efficientnet_lite0", "bn2"), ("efficientnet_lite0", "blocks.5.0.bn2"),
                   ("resnet18", "layer4"), ("resnet18", "layer3")]


@pytest.mark.parametrize("name,layer", ELEMENTWISE_CASES)
def test_layer_cam_and_hires_cam_equal_the_peers(name, layer, lite0, cat_coffee, resnet18):
    net, x, targets = _net(name, lite0, resnet18), cat_coffee, [281, 967]
    peer_net, module = _peer(net, layer)
    ours = layer_cam(net, x, targets, layer=layer)
    assert ours.shape == (2, 224, 224) and ours.min() >= 0 and ours.max() <= 1
    torch.testing.assert_close(ours, _grad_cam_library(LayerCAM, peer_net, module, x, targets),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(ours, _torchcam(TorchcamLayerCAM, peer_net, layer, x, targets),
                               atol=1e-4, rtol=0)
    ours = hires_cam(net, x, targets, layer=layer)
    torch.testing.assert_close(ours, _grad_cam_library(HiResCAM, peer_net, module, x, targets),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("name,layer", PLUS_PLUS_CASES)
def test_grad_cam_plus_plus_equals_grad_cams(name, layer, lite0, cat_coffee, resnet18):
    """pytorch-grad-cam adds 1e-6 to alpha's denominator ``2 g^2 + S g^3``, where ``g^2`` is
    ~1e-6 itself: the maps differ a little (r > 0.99); its weights on rescaled inputs, where the
    epsilon is negligible, equal ours."""
    net, x, targets = _net(name, lite0, resnet18), cat_coffee, [281, 967]
    ours = grad_cam_plus_plus(net, x, targets, layer=layer)
    assert ours.shape == (2, 224, 224) and ours.min() >= 0 and ours.max() <= 1
    peer_net, module = _peer(net, layer)
    expected = _grad_cam_library(GradCAMPlusPlus, peer_net, module, x, targets)
    for i in range(2):
        assert _pearson(ours[i], expected[i]) > 0.99
    # The formula itself: A / s and g * s leave S g alone and make 2 g^2 >> 1e-6.
    layer_pass = capture_layer(net, x, targets, layer=layer)
    grads = layer_pass.gradients(keep_graph=True)
    scale = 1e6
    peer_weights = torch.as_tensor(GradCAMPlusPlus.get_cam_weights(
        None, None, None, None, (layer_pass.activations.double() / scale).numpy(),
        (grads.double() * scale).numpy())).float() / scale
    torch.testing.assert_close(grad_cam_plus_plus_weights(layer_pass), peer_weights,
                               atol=1e-6 * peer_weights.abs().max().item(), rtol=1e-4)


def test_torchcams_grad_cam_pp_loses_its_alpha(lite0, cat_coffee):
    """torchcam 0.5's ``GradCAMpp`` divides ``alpha[mask]``, a copy, in place: its weights are
    ``sum_ij g^2 ReLU(g)``, not the paper's (r 0.95-0.998 with ours at ``bn2``). Through our core
    those weights give torchcam's map exactly, so the only difference is that formula."""
    x, targets = cat_coffee, [281, 967]
    layer_pass = capture_layer(lite0, x, targets, layer="bn2")
    grads = layer_pass.gradients()
    theirs = cam_from_weights(layer_pass.activations, (grads ** 2 * grads.relu()).sum(dim=(2, 3)),
                              (224, 224))
    peer_net, _ = _peer(lite0.model, "bn2")
    torch.testing.assert_close(theirs, _torchcam(TorchcamGradCAMpp, peer_net, "bn2", x, targets),
                               atol=1e-4, rtol=0)


def test_variants_at_a_pooled_layer_known_answers(lite0, cat_coffee, resnet18):
    """Before a global average and a linear layer, ``g_k = W[c, k] / hw`` everywhere: HiResCAM is
    Grad-CAM, its signed map sums to ``y_c - b_c``; LayerCAM is Grad-CAM without the negative
    channels; Grad-CAM++'s weight is ``hw ReLU(g_k) / (2 + S_k g_k)``."""
    targets = [281, 967]
    for net, layer in ((lite0.model, "bn2"), (resnet18, "layer4")):
        torch.testing.assert_close(hires_cam(net, cat_coffee, targets, layer=layer),
                                   grad_cam(net, cat_coffee, targets, layer=layer),
                                   atol=1e-5, rtol=0)
    head = lite0.model.classifier
    signed = hires_cam(lite0, cat_coffee, targets, relu=False, normalize=False, upsample=False)
    with torch.no_grad():
        logits = lite0(cat_coffee)[[0, 1], targets]
    torch.testing.assert_close(signed.sum(dim=(1, 2)), logits - head.bias[targets],
                               atol=1e-3, rtol=1e-4)
    layer_pass = capture_layer(lite0, cat_coffee, targets, layer="bn2")
    activations = layer_pass.activations
    hw = activations.shape[-2] * activations.shape[-1]
    g = head.weight[targets] / hw
    torch.testing.assert_close(
        layer_cam(lite0, cat_coffee, targets), cam_from_weights(activations, g.relu(), (224, 224)),
        atol=1e-5, rtol=0)
    expected = hw * g.relu() / (2 + activations.sum(dim=(2, 3)) * g)
    torch.testing.assert_close(grad_cam_plus_plus_weights(layer_pass), expected,
                               atol=1e-7, rtol=1e-4)


def test_hires_cam_differs_from_grad_cam_where_the_gradient_varies(lite0, cat_coffee):
    maps = [method(lite0, cat_coffee, [281, 967], layer="blocks.3")
            for method in (hires_cam, grad_cam)]
    assert (maps[0] - maps[1]).abs().amax() > 0.1


def test_variants_share_grad_cams_signature_and_leave_the_model_alone(lite0, cat_coffee):
    for method in VARIANTS:
        assert inspect.signature(method) == inspect.signature(grad_cam), method.__name__
    x = torch.cat([cat_coffee, cat_coffee.flip(-1)])
    targets = [281, 967, 285, 504]
    assert not any(p.requires_grad for p in lite0.model.parameters())
    before = snapshot(lite0.model)
    for method in VARIANTS:
        with torch.no_grad():
            batch = method(lite0, x, targets, layer="blocks.5.0.bn2")
        assert batch.shape == (4, 224, 224) and torch.isfinite(batch).all()
        one_by_one = torch.cat([method(lite0, x[i:i + 1], t, layer="blocks.5.0.bn2")
                                for i, t in enumerate(targets)])
        torch.testing.assert_close(batch, one_by_one, atol=1e-5, rtol=0)
    assert_unchanged(before, lite0.model)
    trainable = torchvision.models.resnet18(weights=None).eval()  # parameters require grad
    before = snapshot(trainable)
    for method in VARIANTS:
        method(trainable, cat_coffee, [1, 2], layer="layer3")
    assert_unchanged(before, trainable)


def test_variants_refuse_bad_layers_classes_and_weight_shapes(lite0, cat_coffee):
    for method in VARIANTS:
        with pytest.raises(ValueError, match="outside"):
            method(lite0, cat_coffee, 1000)
        with pytest.raises(ValueError):
            method(lite0, cat_coffee, 281, layer="no_such_layer")
    with pytest.raises(ValueError, match="weights must be"):
        cam_from_weights(torch.ones(1, 4, 3, 3), torch.ones(1, 4, 3))
