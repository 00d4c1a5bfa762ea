"""Fooling images: a hand-written signed-gradient loop gives the same image; the budget holds in
grey levels whatever the normalisation; every course photo reaches a chosen class (drawn per
seed), at one and at two threads; the model leaves every call as it came; bad arguments are
refused with the valid range."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from conftest import assert_unchanged, snapshot

from helpers.adversarial import fooling_image, pixel_change
from helpers.images import sample_names, sample_path
from helpers.models import LessonModel

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def by_hand(model, x, target, epsilon, steps, step_size):
    """The textbook loop: ascend log p_target by signed steps, then clip to the budget and to
    [0, 1], all in pixel units (RGB in [0, 1]), moving in and out of the input space each step."""
    mean = torch.tensor(model.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=x.dtype).view(1, 3, 1, 1)
    pixels = x * std + mean
    start = pixels.clone()
    for _ in range(steps):
        leaf = pixels.clone().requires_grad_(True)
        log_p = model.model((leaf - mean) / std).log_softmax(dim=1)
        (grad,) = torch.autograd.grad(log_p[torch.arange(len(x)), target].sum(), leaf)
        pixels = pixels + step_size * grad.sign()
        pixels = torch.minimum(torch.maximum(pixels, start - epsilon), start + epsilon).clamp(0, 1)
    return (pixels - mean) / std


@pytest.fixture(scope="module")
def resnet():
    """A torchvision ResNet18 (random weights) with ImageNet's normalisation: per-channel std,
    so that a budget in grey levels differs per channel in the input space."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval().requires_grad_(False)
    return LessonModel(net, "resnet18", [str(i) for i in range(1000)], IMAGENET_MEAN,
                       IMAGENET_STD)


def test_equals_a_hand_written_loop(resnet):
    """In float64, so that no gradient value near 0 changes its sign between the two ways of
    writing the same loop (in float32 one such flip moves a value by two steps)."""
    model = LessonModel(copy.deepcopy(resnet.model).double(), "resnet18", resnet.labels,
                        IMAGENET_MEAN, IMAGENET_STD)
    x = resnet.preprocess("coffee", "rocket")[..., :96, :96].double()
    ours = fooling_image(model, x, [3, 500], epsilon=3 / 255, steps=4, step_size=1 / 255,
                         progress=False)
    expected = by_hand(model, x, torch.tensor([3, 500]), 3 / 255, 4, 1 / 255)
    # a sign flip would part them by 2 grey levels; float32 mean and std leave 1e-5
    assert pixel_change(model, expected, ours).abs().max() < 1e-3


def test_one_step_is_the_signed_gradient_clipped(lite0, cat_coffee):
    x = cat_coffee[1:]
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(lite0(leaf).log_softmax(dim=1)[0, 1], leaf)
    low, high = lite0.input_range
    expected = (x + 2 / 255 * (high - low) * grad.sign()).clamp(low, high)
    got = fooling_image(lite0, x, 1, epsilon=2 / 255, steps=1, step_size=2 / 255,
                        progress=False)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_every_course_photo_reaches_a_chosen_class(lite0, threads):
    """Three seeds each draw one target class per photo (never its own top class); 20 steps
    of 4/255 reach every one of them with p > 0.5 (measured: p >= 0.99 at 1 and 2 threads),
    while no value moves by more than 4 grey levels and all stay valid pixels."""
    names = sorted({sample_path(name): name for name in sample_names()}.values())  # "cat" is
    photos = lite0.preprocess(*names)                                          # "chelsea"
    with torch.no_grad():
        own = lite0(photos).argmax(dim=1)
    targets = []
    for seed in range(3):
        drawn = torch.randint(1000, (len(names),), generator=torch.Generator().manual_seed(seed))
        targets += torch.where(drawn == own, (drawn + 1) % 1000, drawn).tolist()
    x = photos.repeat(3, 1, 1, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fooled = fooling_image(lite0, x, targets, epsilon=4 / 255, steps=20, progress=False)
    finally:
        torch.set_num_threads(before)
    with torch.no_grad():
        probs = lite0(fooled).softmax(dim=1)
    reached = probs[torch.arange(len(x)), targets]
    assert (probs.argmax(dim=1) == torch.tensor(targets)).all(), reached
    assert reached.min() > 0.5, reached
    change = pixel_change(lite0, x, fooled).abs()
    assert change.max() <= 4 + 1e-3
    low, high = lite0.input_range
    assert (fooled >= low - 1e-6).all() and (fooled <= high + 1e-6).all()


def test_budget_in_grey_levels_whatever_the_normalisation(resnet):
    x = resnet.preprocess("astronaut")[..., :64, :64]
    fooled = fooling_image(resnet, x, 7, epsilon=1 / 255, steps=3, progress=False)
    change = pixel_change(resnet, x, fooled).abs()
    assert change.max() <= 1 + 1e-3
    assert change.amax(dim=(0, 2, 3)).min() > 0.99  # each channel uses its full budget
    pixels = resnet.deprocess(fooled).astype(int) - resnet.deprocess(x).astype(int)
    assert abs(pixels).max() <= 2  # as 8-bit images: at most 1 level plus rounding


def test_white_and_black_pixels_stay_valid(lite0):
    x = lite0.preprocess(torch.zeros(40, 40, 3).numpy() + 1.0)  # a white image
    x[..., :20, :] = lite0.input_range[0]                          # top half black
    fooled = fooling_image(lite0, x, 1, epsilon=8 / 255, steps=2, progress=False)
    low, high = lite0.input_range
    assert (fooled >= low).all() and (fooled <= high).all()
    assert pixel_change(lite0, x, fooled).abs().max() <= 8 + 1e-3


def test_model_left_as_it_came_under_no_grad_and_with_trainable_weights():
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None)
    net.train()
    net.layer3.eval()
    model = LessonModel(net, "resnet18", [str(i) for i in range(1000)], IMAGENET_MEAN,
                        IMAGENET_STD)
    before = snapshot(net)
    x = torch.zeros(2, 3, 48, 48)
    with torch.no_grad():
        fooled = fooling_image(model, x, [1, 2], epsilon=2 / 255, steps=2, progress=False)
    assert fooled.shape == x.shape and not fooled.requires_grad
    assert_unchanged(before, net)
    with pytest.raises(ValueError, match=r"outside \[0, 1000\)"):
        fooling_image(model, x, [1, 1000], epsilon=2 / 255, steps=2, progress=False)
    assert_unchanged(before, net)


@pytest.mark.parametrize("kwargs, message", [
    ({"epsilon": 0.0, "steps": 5}, r"epsilon must be a number > 0.0 and <= 1.0"),
    ({"epsilon": -1 / 255, "steps": 5}, r"epsilon must be a number > 0.0"),
    ({"epsilon": 2.0, "steps": 5}, r"epsilon must be .*<= 1.0"),
    ({"epsilon": float("nan"), "steps": 5}, "epsilon"),
    ({"epsilon": 2 / 255, "steps": 0}, r"steps must be an integer >= 1"),
    ({"epsilon": 2 / 255, "steps": 2.5}, "steps"),
    ({"epsilon": 2 / 255, "steps": 2, "step_size": 0.0}, "step_size"),
])
def test_bad_numbers_are_refused(lite0, kwargs, message):
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match=message):
        fooling_image(lite0, x, 1, progress=False, **kwargs)


def test_other_refusals(lite0):
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="class to reach"):
        fooling_image(lite0, x, None, epsilon=2 / 255, steps=2)
    with pytest.raises(ValueError, match="tabby"):
        fooling_image(lite0, x, "tabbby", epsilon=2 / 255, steps=2)
    with pytest.raises(ValueError, match="LessonModel"):
        fooling_image(lite0.model, x, 1, epsilon=2 / 255, steps=2)
    with pytest.raises(ValueError, match="valid pixel range"):
        fooling_image(lite0, x + 1.5, 1, epsilon=2 / 255, steps=2)
    with pytest.raises(ValueError, match="NaN"):
        fooling_image(lite0, x * float("nan"), 1, epsilon=2 / 255, steps=2)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        fooling_image(lite0, x, 1, epsilon=2 / 255, steps=2)
