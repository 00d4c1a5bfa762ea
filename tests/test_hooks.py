"""record / split_forward: right values, no leaked hooks, the model left exactly as it came."""

from __future__ import annotations

import gc

import psutil
import pytest
import torch
import torchvision
from conftest import assert_unchanged, snapshot
from timm.models._features_fx import create_feature_extractor as timm_feature_extractor
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import helpers
from helpers.hooks import split_forward


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50", "vgg16"])
def test_record_equals_create_feature_extractor(name, lite0):
    lesson_model = lite0 if name == "efficientnet_lite0" else helpers.load_model(
        name, pretrained=False)
    roles = helpers.layer_roles(lesson_model)
    layers = [roles.pick("early"), roles.pick("middle"), roles.cam_layer]
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    before = snapshot(lesson_model.model)
    with helpers.record(lesson_model, layers) as rec, torch.no_grad():
        lesson_model.model(x)
    assert_unchanged(before, lesson_model.model)
    # timm's wrapper of torchvision's create_feature_extractor knows timm's untraceable leaves.
    fx_extractor = timm_feature_extractor if name == "efficientnet_lite0" else \
        create_feature_extractor
    extractor = fx_extractor(lesson_model.model, return_nodes=layers)
    with torch.no_grad():
        expected = extractor(x)
    for layer in layers:
        # torchvision's extractor returns the node's tensor, which a later in-place activation
        # may have changed; the extractor's value then equals what the in-place op wrote.
        torch.testing.assert_close(rec[layer], expected[layer], rtol=1e-5, atol=1e-5)


def test_recording_keeps_value_before_in_place_activation():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1))
    x = torch.randn(1, 3, 8, 8)
    with helpers.record(model, "0") as rec, torch.no_grad():
        model(x)
    assert (rec["0"] < 0).any(), "the recorded conv output was overwritten by the in-place ReLU"
    torch.testing.assert_close(rec["0"], model[0](x))


def test_gradients_with_in_place_activations():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with helpers.record(model, ["0", "1"], grads=True) as rec:
        model(x)[0, 1].backward()
    a = model[0](x).detach().requires_grad_(True)
    expected, = torch.autograd.grad(model[2:](torch.relu(a))[0, 1], a)
    torch.testing.assert_close(rec.grad("0"), expected)
    assert rec.grad("1").shape == (1, 4, 6, 6)


def test_thousand_recordings_leave_no_hooks_and_flat_memory(lite0):
    x = torch.randn(1, 3, 64, 64)
    before = snapshot(lite0.model)
    process = psutil.Process()

    def run(n):
        for _ in range(n):
            with helpers.record(lite0, ["blocks.2", "bn2"]) as rec, torch.no_grad():
                lite0.model(x)
            del rec

    run(50)
    gc.collect()
    start = process.memory_info().rss
    run(1000)
    gc.collect()
    growth = process.memory_info().rss - start
    assert growth < 30e6, f"memory grew by {growth / 1e6:.0f} MB over 1,000 recordings"
    assert_unchanged(before, lite0.model)


def test_body_that_raises_leaves_no_hooks(lite0):
    before = snapshot(lite0.model)
    with pytest.raises(RuntimeError, match="student error"):
        with helpers.record(lite0, ["blocks.2", "bn2"], grads=True):
            raise RuntimeError("student error")
    assert_unchanged(before, lite0.model)


def test_unknown_layer_lists_closest_names(lite0):
    with pytest.raises(ValueError, match="blocks.3") as error:
        with helpers.record(lite0, "block.3"):
            pass
    assert "layer_names" in str(error.value)


def test_grad_needs_a_gradient_run(lite0):
    with helpers.record(lite0, "bn2", grads=True) as rec, torch.no_grad():
        lite0.model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(KeyError, match="no_grad"):
        rec.grad("bn2")


def test_evaluating_restores_each_module_flag():
    model = torchvision.models.resnet18(weights=None)
    model.train()
    model.layer1.eval()
    flags = [m.training for m in model.modules()]
    with helpers.evaluating(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == flags


def test_split_forward_gives_a_leaf_and_back_props_only_the_head(lite0):
    x = lite0.preprocess("cat")
    before = snapshot(lite0.model)
    with torch.no_grad():  # works inside no_grad and with frozen parameters
        A, logits = split_forward(lite0, x, "blocks.5")
    assert A.is_leaf and A.requires_grad and A.shape == (1, 192, 7, 7)
    grad, = torch.autograd.grad(logits[0, 281], A)
    assert grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(logits, lite0.model(x))
    assert torch.is_grad_enabled()
    assert_unchanged(before, lite0.model)


def test_split_forward_refuses_a_shared_module():
    model = torchvision.models.resnet18(weights=None).eval()
    with pytest.raises(RuntimeError, match="more than once"):
        split_forward(model, torch.zeros(1, 3, 64, 64), "layer1.0.relu")
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
