"""Gradient ascent and deep dream: they reach their goals, stay valid and repeatable, and leave
the model as it came."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_unchanged, snapshot
from PIL import Image
from torch import nn

import helpers
from helpers.plotting import animation_html, save_gif
from helpers.synthesis import (
    Pass,
    ascend,
    channel_mean,
    channel_visualization,
    class_logit,
    class_visualization,
    deep_dream,
    l2,
    layer_norm,
    total_variation,
)
from helpers.widgets import RunExplorer


def activation(model, image, layer, channel=None):
    with helpers.record(model, layer) as rec, torch.no_grad():
        model.model(image)
    a = rec[layer]
    return a.pow(2).mean().item() if channel is None else a[0, channel].mean().item()


def test_class_visualization_reaches_its_class_for_three_classes(lite0):
    before = snapshot(lite0.model)
    targets = ["goldfish", "tarantula", "espresso"]
    images = class_visualization(lite0, targets, progress=False)
    assert images.shape == (3, 3, 224, 224)
    with torch.no_grad():
        probs = lite0.model(images).softmax(dim=1)
    for i, name in enumerate(targets):
        assert probs[i, lite0.class_index(name)] >= 0.9, name
    low, high = lite0.input_range
    assert ((images >= low - 1e-6) & (images <= high + 1e-6)).all()
    assert_unchanged(before, lite0.model)


def test_channel_objective_rises_at_least_fivefold(lite0):
    start = helpers.synthesis._start(lite0, 1, 160, "noise", 0)
    before = activation(lite0, start, "blocks.5", 20)
    image, frames = channel_visualization(lite0, "blocks.5", 20, frames_every=20, progress=False)
    assert before > 0 and activation(lite0, image, "blocks.5", 20) >= 5 * before
    assert len(frames) == 1 + 60 // 20


def test_same_seed_same_picture_other_seed_other_picture(lite0):
    def run(seed):
        return class_visualization(lite0, 1, steps=5, size=96, init="noise", seed=seed,
                                   progress=False)
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert torch.equal(torch.get_rng_state(), global_state), "the global generator moved"


def test_deep_dream_raises_the_layer_and_the_pyramid_differs(lite0):
    x = lite0.preprocess("grace_hopper")
    before = snapshot(lite0.model)
    plain = deep_dream(lite0, x, "blocks.3", octaves=1, steps=6, progress=False)
    pyramid = deep_dream(lite0, x, "blocks.3", octaves=3, steps=6, progress=False)
    one = deep_dream(lite0, x, "blocks.3", channel=7, octaves=2, steps=6, progress=False)
    base = activation(lite0, x, "blocks.3")
    assert activation(lite0, plain, "blocks.3") > base
    assert activation(lite0, pyramid, "blocks.3") > base
    assert activation(lite0, one, "blocks.3", 7) > activation(lite0, x, "blocks.3", 7)
    assert pyramid.shape == plain.shape == x.shape
    assert (pyramid - plain).abs().mean() > 0.01
    low, high = lite0.input_range
    for image in (plain, pyramid, one):
        assert ((image >= low - 1e-6) & (image <= high + 1e-6)).all()
    assert torch.equal(plain, deep_dream(lite0, x, "blocks.3", octaves=1, steps=6,
                                         progress=False))
    assert_unchanged(before, lite0.model)


def test_objectives_compose_as_sums():
    image = torch.randn(2, 3, 8, 8)
    logits = torch.randn(2, 5)
    acts = {"a": torch.randn(2, 4, 3, 3)}
    p = Pass(image, logits, acts)
    combined = class_logit([1, 2]) - 0.5 * l2() + 2 * channel_mean("a", 3) - total_variation()
    expected = (logits[[0, 1], [1, 2]] - 0.5 * image.pow(2).sum(dim=(1, 2, 3)) * 224 ** 2 / 64
                + 2 * acts["a"][:, 3].mean(dim=(1, 2))
                - total_variation()(p))
    torch.testing.assert_close(combined(p), expected)
    assert combined.layers == ("a",) and "L2" in combined.name
    torch.testing.assert_close(layer_norm("a")(p), acts["a"].pow(2).mean(dim=(1, 2, 3)))


def test_ascend_needs_a_lesson_model_and_leaves_the_input_alone(lite0):
    with pytest.raises(TypeError, match="LessonModel"):
        ascend(nn.Conv2d(3, 3, 1), torch.zeros(1, 3, 8, 8), l2(), steps=1)
    start = torch.zeros(1, 3, 64, 64)
    ascend(lite0, start, class_logit(3), steps=2, progress=False)
    assert (start == 0).all()


def test_animation_outputs(tmp_path):
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 128, 255)]
    save_gif(frames, tmp_path / "a.gif")
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 3
    html = animation_html(frames, titles=["a", "b", "c"])
    assert "<script" in html and html.count("data:image/jpeg;base64") == 3


def test_run_explorer_caches_each_combination():
    import ipywidgets as W

    calls = []

    def compute(level):
        calls.append(level)
        return np.full((4, 4, 3), level, np.uint8)

    explorer = RunExplorer({"level": W.IntSlider(10, 0, 255)}, compute)
    explorer.button.click()
    first = explorer.picture.value
    explorer.controls["level"].value = 200
    explorer.button.click()
    assert explorer.picture.value != first
    explorer.controls["level"].value = 10
    explorer.button.click()
    assert explorer.picture.value == first and calls == [10, 200]
