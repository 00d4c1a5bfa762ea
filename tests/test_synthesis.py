"""Feature visualisation and deep dream: pictures that keep their class under views the optimiser
never saw (for several seeds and thread counts), parameterisations equal to lucent's, repeatable
randomness, forward passes that stop where the objective needs, and the model left as it came."""

from __future__ import annotations

import io
import unittest.mock

import ipywidgets
import numpy as np
import pytest
import torch
from conftest import assert_unchanged, snapshot
from PIL import Image

import helpers
from helpers.plotting import animation, gif_bytes, save_gif
from helpers.synthesis import (
    COLOR_CORRELATION_SQRT,
    ROBUST,
    SHOWCASE,
    SHOWCASE_CLASSES,
    FFTImage,
    ForwardRecord,
    Objective,
    channel_mean,
    channel_visualization,
    class_logit,
    class_visualization,
    compose,
    deep_dream,
    fft_frequencies,
    from_rgb,
    held_out_probability,
    held_out_views,
    image_parameterization,
    jitter,
    l2,
    layer_norm,
    other_networks_probability,
    pad,
    random_rotate,
    random_scale,
    render,
    roll,
    store_class_pictures,
    stored_class_pictures,
    to_rgb,
    total_variation,
)
from helpers.widgets import RunExplorer

# Classes lesson 07 does not show: the test must not pass because the lesson's classes were tuned.
# Sports car and lemon were the weakest under the standard transforms of Olah et al.
UNSEEN = ["golden retriever", "lemon", "sports car"]
# The default call (224 px x 128 steps). The held-out views lie outside every transform the
# recipe draws (half size, 1.5x, 30 degrees, mirror, upside down), so photos lose some of their
# class there too (the espresso photo keeps 0.71 on average). Measured on these classes and
# castle, 3 seeds at 1 thread and seed 0 at 2 threads: p >= 0.999, held-out means 0.43 to 0.94,
# the mean over the three classes 0.60 to 0.74. Naive-ascent pictures keep 0.00 to 0.16 (four
# classes at 160 px), 0.05 on average, below both bars. The bars leave a margin of 0.15 or more
# for other seeds, threads and CPUs.
HELD_OUT_MIN = 0.25  # every picture
HELD_OUT_MEAN_MIN = 0.45  # the three pictures of one seed
# The stored showcase pictures (fixed files, so only the judges' float rounding moves this): the
# mean of Lite1 and Lite2 is 0.81 (espresso) to 0.99 (goldfish, tarantula).
STORED_MIN = 0.5


def activation(model, image, layer, channel=None):
    with helpers.record(model, layer) as rec, torch.no_grad():
        model(image)
    a = rec[layer]
    return a.pow(2).mean().item() if channel is None else a[0, channel].mean().item()


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
def test_class_pictures_keep_their_class_under_held_out_views(lite0, threads):
    """The default call reaches its class and keeps much of it under views it never trained on
    (a mirror, half size, a 1.5x centre crop, a 30 degree turn, upside down), for three seeds and
    classes the lesson does not use. (The naive recipe of the first papers reaches p = 1 too, but
    collapses under the same views: lesson 07.)"""
    before = snapshot(lite0.model)
    low, high = lite0.input_range
    for seed in (0, 1, 2):
        images = class_visualization(lite0, UNSEEN, seed=seed, progress=False)
        assert images.shape == (3, 3, 224, 224)
        assert ((images >= low - 1e-5) & (images <= high + 1e-5)).all()
        with torch.no_grad():
            probs = lite0(images).softmax(dim=1)
        held_out = held_out_probability(lite0, images, UNSEEN)
        print(f"threads {threads} seed {seed}: p", probs.max(1).values.tolist(),
              "held-out", held_out.tolist())
        for i, name in enumerate(UNSEEN):
            assert probs[i, lite0.class_index(name)] >= 0.9, (name, seed, threads)
            assert held_out[i] >= HELD_OUT_MIN, (name, seed, threads, held_out.tolist())
        assert held_out.mean() >= HELD_OUT_MEAN_MIN, (seed, threads, held_out.tolist())
    assert_unchanged(before, lite0.model)


def test_batch_size_bounds_memory_not_the_result(lite0):
    """Batches of two (or one) give the pictures one batch gives (same start, same random
    transforms), up to float rounding: with 2 threads a batch's size changes the rounding, which
    Adam's normalised first steps amplify where a gradient is near zero (measured: 0.002 at most,
    against 0.5 between two seeds). Every frame has one picture per image."""
    def assert_same_pictures(a, b, other_seed):
        assert (a - b).abs().max() < 0.05
        assert (a - other_seed).abs().mean() > 10 * (a - b).abs().mean() + 0.01

    targets = ["lemon", "castle", 1, 2]
    whole, frames = class_visualization(lite0, targets, size=64, steps=4, frames_every=2,
                                        batch_size=4, progress=False)
    split, split_frames = class_visualization(lite0, targets, size=64, steps=4, frames_every=2,
                                              batch_size=2, progress=False)
    other = class_visualization(lite0, targets, size=64, steps=4, seed=1, progress=False)
    assert_same_pictures(whole, split, other)
    assert len(split_frames) == len(frames) == 3
    assert all(f.shape == (4, 3, 64, 64) for f in split_frames)

    def channels(**knobs):
        return channel_visualization(lite0, "blocks.2", [0, 1, 2], size=48, steps=3,
                                     progress=False, **knobs)
    assert_same_pictures(channels(), channels(batch_size=1), channels(seed=1))
    with pytest.raises(ValueError, match="batch_size"):
        class_visualization(lite0, 1, steps=1, size=32, batch_size=0, progress=False)


def test_channel_visualization_raises_its_channel_and_stops_at_the_layer(lite0):
    before = snapshot(lite0.model)
    calls = []
    handle = lite0.model.conv_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        image = channel_visualization(lite0, "blocks.3", [7, 20], size=64, steps=24,
                                      progress=False)
    finally:
        handle.remove()
    assert calls == [], "the forward pass ran past the layer the objective reads"
    assert image.shape == (2, 3, 64, 64)
    start = torch.zeros(1, 3, 64, 64)  # the grey image the FFT start is close to
    for i, channel in enumerate([7, 20]):
        gained = activation(lite0, image[i: i + 1], "blocks.3", channel)
        assert gained > activation(lite0, start, "blocks.3", channel) + 1.0, channel
    assert_unchanged(before, lite0.model)


def test_same_seed_same_picture_other_seed_other_picture(lite0):
    def run(seed, **kwargs):
        return class_visualization(lite0, 1, steps=3, size=64, seed=seed, progress=False,
                                   **kwargs)
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert torch.equal(run(0, recipe="naive"), run(0, recipe="naive"))
    assert torch.equal(torch.get_rng_state(), global_state), "the global generator moved"


def test_fft_parameterization_equals_lucents():
    param = pytest.importorskip("lucent.optvis.param")
    for decorrelate in (True, False):
        ours = FFTImage((2, 3, 32, 48), decorrelate=decorrelate,
                        generator=torch.Generator().manual_seed(0))
        params, image_f = param.image(48, h=32, batch=2, decorrelate=decorrelate, fft=True)
        with torch.no_grad():
            params[0].copy_(ours.spectrum)
            torch.testing.assert_close(ours.rgb(), image_f().cpu(), atol=1e-6, rtol=1e-5)


def test_fft_known_answers():
    freqs = fft_frequencies(6, 8)
    expected = np.sqrt(np.fft.fftfreq(6)[:, None] ** 2 + np.fft.rfftfreq(8)[None, :] ** 2)
    np.testing.assert_allclose(freqs.numpy(), expected, rtol=1e-6)
    assert COLOR_CORRELATION_SQRT.norm(dim=0).max() == pytest.approx(1.0)
    # A spectrum with only its constant term is a flat image; zero spectrum is exact grey.
    flat = FFTImage((1, 3, 8, 8), decorrelate=False)
    with torch.no_grad():
        flat.spectrum.zero_()
        torch.testing.assert_close(flat.rgb(), torch.full((1, 3, 8, 8), 0.5))
        flat.spectrum[0, :, 0, 0, 0] = 1.0
    assert flat.rgb().std(dim=(2, 3)).max() < 1e-6


def test_transforms_draw_from_the_generator_only():
    x = torch.rand(2, 3, 40, 40)

    def apply(seed):
        generator = torch.Generator().manual_seed(seed)
        y = pad(4)(x, generator)
        assert y.shape[-1] == 48 and (y[..., 0, :] == 0.5).all()
        y = jitter(6)(y, generator)
        assert y.shape[-2:] == (42, 42)
        y = random_rotate([-10, 10])(random_scale([0.9, 1.1])(y, generator), generator)
        return roll(3)(y, generator)

    torch.manual_seed(5)
    state = torch.get_rng_state()
    assert torch.equal(apply(0), apply(0)) and apply(0).shape != (0,)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("size", [40, 160, 224])
def test_held_out_views_are_never_the_picture_nor_a_robust_draw(size):
    """Five views, each the picture's own size and none of them the picture; the two that
    resize it do so by 0.5 and 1.5, outside the 0.7 .. 1.2 that ROBUST draws, at any size."""
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    views = held_out_views(x)
    assert list(views) == ["flip", "0.5x on grey", "1.5x centre", "rotate 30°", "upside down"]
    for name, view in views.items():
        assert view.shape == x.shape, name
        assert (view - x).abs().mean() > 0.1, name  # random pixels: far from the picture
    from helpers.synthesis.transforms import ROBUST_SCALES, ROTATIONS
    assert min(ROBUST_SCALES) > 0.5 and max(ROBUST_SCALES) < 1.5 and max(map(abs, ROTATIONS)) < 30
    grey = views["0.5x on grey"]
    assert (grey[..., : size // 4 - 1, :] == 0.5).all()  # a quarter of the height is grey above


def test_held_out_probability_of_a_photo_stays_high(lite0, cat_coffee):
    coffee = cat_coffee[1:]
    per_view = held_out_probability(lite0, coffee, "espresso", per_view=True)
    assert per_view.shape == (1, 5)
    assert held_out_probability(lite0, coffee, "espresso")[0] >= 0.5
    assert held_out_probability(lite0, coffee, "tarantula")[0] < 0.01
    # None: the class the model gives the picture itself (espresso); indices are range-checked
    assert torch.equal(held_out_probability(lite0, coffee, None),
                       held_out_probability(lite0, coffee, "espresso"))
    for bad in (1000, -1, ["espresso", "espresso"]):
        with pytest.raises(ValueError):
            held_out_probability(lite0, coffee, bad)
    with pytest.raises(ValueError):
        other_networks_probability(lite0, coffee, 1000)


def test_other_networks_recognise_a_photo_and_not_naive_ascent(lite0, cat_coffee):
    """Lite1 and Lite2, which never saw the optimisation, know the espresso photo and do not
    take Lite0's naive-ascent texture for a goldfish (which Lite0 itself scores at p ~ 1)."""
    before = snapshot(lite0.model)
    judged = other_networks_probability(lite0, cat_coffee[1:], "espresso", per_judge=True)
    assert judged.shape == (1, 2) and judged.mean() > 0.5 and judged.min() > 0.3  # 0.44, 0.90
    naive = class_visualization(lite0, "goldfish", recipe="naive", steps=48, size=128,
                                progress=False)
    with torch.no_grad():
        assert lite0(naive).softmax(dim=1)[0, 1] > 0.9
    assert other_networks_probability(lite0, naive, "goldfish")[0] < 0.2
    assert_unchanged(before, lite0.model)


def test_deep_dream_raises_the_layer_and_the_pyramid_differs(lite0):
    x = lite0.preprocess("grace_hopper")[..., ::2, ::2].contiguous()  # 112 px: fast
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
        assert ((image >= low - 1e-5) & (image <= high + 1e-5)).all()
    assert torch.equal(plain, deep_dream(lite0, x, "blocks.3", octaves=1, steps=6,
                                         progress=False))
    assert_unchanged(before, lite0.model)


def interrupting(after: int):
    """A zero penalty that presses the stop button on its call number ``after`` (counted)."""
    calls = []

    def fn(record):
        calls.append(1)
        if len(calls) == after:
            raise KeyboardInterrupt
        return record.image.sum(dim=(1, 2, 3)) * 0
    return Objective(fn, "stop"), calls


def test_one_interrupt_stops_every_batch_and_octave_and_keeps_the_picture(lite0):
    before = snapshot(lite0.model)
    penalty, calls = interrupting(after=3)
    with pytest.warns(UserWarning, match="interrupted after 2 of 8 steps"):
        pictures, frames = class_visualization(lite0, [1, 2, 3], penalty=penalty, steps=8,
                                               size=32, batch_size=1, frames_every=2,
                                               progress=False)
    assert len(calls) == 3  # the second and third batches never ran
    with pytest.warns(UserWarning, match="interrupted after 0 of 8 steps"):
        start = class_visualization(lite0, [1, 2, 3], penalty=interrupting(after=1)[0], steps=8,
                                    size=32, batch_size=1, progress=False)
    assert pictures.shape == start.shape == (3, 3, 32, 32)
    assert not torch.equal(pictures[0], start[0])  # two steps taken
    torch.testing.assert_close(pictures[1:], start[1:])  # the rest keep their start
    assert len(frames) == 1 and frames[0].shape == (3, 3, 32, 32)

    x = lite0.preprocess("grace_hopper")[..., ::4, ::4].contiguous()
    stop = interrupting(after=4)[0]
    record = Objective(lambda r: r.acts["blocks.2"].mean(dim=(1, 2, 3)), "b2", ["blocks.2"])
    with pytest.warns(UserWarning, match="octave 2/3: interrupted"), \
            unittest.mock.patch("helpers.synthesis.render.layer_norm",
                                lambda layer: record - stop):
        dreamt = deep_dream(lite0, x, "blocks.2", octaves=3, steps=2, progress=False)
    assert dreamt.shape == x.shape and (dreamt - x).abs().max() > 0
    assert_unchanged(before, lite0.model)


def test_objectives_compose_as_sums():
    image = torch.randn(2, 3, 8, 8)
    logits = torch.randn(2, 5)
    acts = {"a": torch.randn(2, 4, 3, 3)}
    record = ForwardRecord(image, logits, acts)
    combined = class_logit([1, 2]) - 0.5 * l2() + 2 * channel_mean("a", 3) - total_variation()
    expected = (logits[[0, 1], [1, 2]] - 0.5 * image.pow(2).sum(dim=(1, 2, 3)) * 224 ** 2 / 64
                + 2 * acts["a"][:, 3].mean(dim=(1, 2))
                - total_variation()(record))
    torch.testing.assert_close(combined(record), expected)
    assert combined.layers == ("a",) and combined.needs_logits and "L2" in combined.name
    assert not channel_mean("a", 3).needs_logits
    torch.testing.assert_close(channel_mean("a", [1, 3])(record),
                               acts["a"][[0, 1], [1, 3]].mean(dim=(1, 2)))
    torch.testing.assert_close(layer_norm("a")(record), acts["a"].pow(2).mean(dim=(1, 2, 3)))


def test_render_needs_a_lesson_model_and_knows_its_recipes(lite0):
    image = image_parameterization((1, 3, 8, 8), parameterization="pixel")
    with pytest.raises(TypeError, match="LessonModel"):
        render(torch.nn.Conv2d(3, 3, 1), l2(), image, steps=1)
    with pytest.raises(ValueError, match="recipe"):
        class_visualization(lite0, 1, recipe="fancy")
    with pytest.raises(ValueError, match="decorrelate"):
        class_visualization(lite0, 1, parameterization="pixel", decorrelate=True)


def test_animation_is_an_embedded_gif(tmp_path):
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 128, 255)]
    save_gif(frames, tmp_path / "a.gif")
    assert Image.open(tmp_path / "a.gif").n_frames == 3
    data = gif_bytes(frames, titles=["a", "b", "c"], scale=4)
    assert data[:6] == b"GIF89a"
    captioned = Image.open(io.BytesIO(gif_bytes(frames[2:], titles=["Hg|"], scale=4)))
    ink = np.flatnonzero((np.asarray(captioned.convert("L"))[:, :40] < 128).any(axis=1))
    assert ink.max() - ink.min() + 1 >= 12  # a caption readable when projected (>= 9 pt)
    shown = animation(frames, titles=["a", "b", "c"])
    bundle = shown._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "image/gif" in bundle and "text/html" not in bundle


def test_run_explorer_caches_each_combination():
    calls = []

    def compute(level):
        calls.append(level)
        return np.full((4, 4, 3), level, np.uint8)

    explorer = RunExplorer({"level": ipywidgets.IntSlider(10, 0, 255)}, compute)
    explorer.button.click()
    first = explorer.picture.value
    explorer.controls["level"].value = 200
    explorer.button.click()
    assert explorer.picture.value != first
    explorer.controls["level"].value = 10
    explorer.button.click()
    assert explorer.picture.value == first and calls == [10, 200]


def test_views_average_the_objective_over_independent_draws(lite0):
    """One step with ``views=2`` equals the step written by hand: two draws of the transforms from
    the seeded generator, each cut about its centre to the smaller size, the mean of the two
    logits, Adam on the spectrum. ``views=1`` stays the one-draw step."""
    before = snapshot(lite0.model)

    def start():
        return image_parameterization((2, 3, 48, 48), seed=3)

    targets = [1, 130]
    helper, _ = render(lite0, class_logit(targets), start(), transforms=ROBUST, steps=1,
                       views=2, seed=5, progress=False)
    image = start()
    generator, transform = torch.Generator().manual_seed(5), compose(ROBUST)
    rgb = image.rgb()
    drawn = [transform(rgb, generator) for _ in range(2)]
    h, w = min(v.shape[-2] for v in drawn), min(v.shape[-1] for v in drawn)
    cut = [v[..., (v.shape[-2] - h) // 2:][..., :h, (v.shape[-1] - w) // 2:][..., :w]
           for v in drawn]
    with torch.enable_grad():
        logits = [lite0.model(from_rgb(lite0, v)) for v in cut]
        value = sum(lg[[0, 1], targets] for lg in logits) / 2
        (grad,) = torch.autograd.grad(value.sum(), image.params)
    adam = torch.optim.Adam(image.params, lr=0.05)
    image.params[0].grad = -grad
    adam.step()
    torch.testing.assert_close(helper, from_rgb(lite0, image.rgb().detach()), atol=1e-5,
                               rtol=1e-4)
    one, _ = render(lite0, class_logit(targets), start(), transforms=ROBUST, steps=1, seed=5,
                    progress=False)
    assert not torch.allclose(one, helper, atol=1e-4)
    with pytest.raises(ValueError, match="views"):
        class_visualization(lite0, 1, views=0, steps=1, size=32, progress=False)
    assert_unchanged(before, lite0.model)


def test_stored_class_pictures_hold_for_every_network(lite0):
    """The showcase pictures lesson 07 shows: made with ``SHOWCASE`` (recorded in each PNG),
    scored p > 0.9 by Lite0 and recognised by Lite1 and Lite2, which never saw them made."""
    images, recipe = stored_class_pictures(lite0)
    assert images.shape == (len(SHOWCASE_CLASSES), 3, 224, 224) and recipe == SHOWCASE
    indices = [lite0.class_index(c) for c in SHOWCASE_CLASSES]
    with torch.no_grad():
        assert (lite0(images).softmax(dim=1)[torch.arange(len(indices)), indices] > 0.9).all()
    judged = other_networks_probability(lite0, images, indices)
    assert judged.min() > STORED_MIN, judged


def test_store_then_load_class_pictures(lite0, tmp_path):
    """A picture goes to PNG and back within half a grey level, with its recipe; a missing
    picture says how to make it."""
    recipe = {"size": 32, "steps": 2, "seed": 1}
    paths = store_class_pictures(lite0, ["lemon", "sports car"], recipe=recipe, folder=tmp_path)
    assert [p.name for p in paths] == [f"{lite0.name}_lemon.png", f"{lite0.name}_sports_car.png"]
    made = class_visualization(lite0, ["lemon", "sports car"], progress=False, **recipe)
    loaded, stored_recipe = stored_class_pictures(lite0, ["lemon", "sports car"],
                                                  folder=tmp_path)
    assert stored_recipe == recipe
    assert (to_rgb(lite0, loaded) - to_rgb(lite0, made)).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(FileNotFoundError, match="store_class_pictures"):
        stored_class_pictures(lite0, ["castle"], folder=tmp_path)
