"""Feature inversion: at an early layer the reconstruction matches the photo's activations and
looks like the photo (pixel SSIM), for two photos, three seeds and two thread counts; the prior
is what makes a deeper reconstruction look like the photo; picture and photo see the same random
transforms; the loss is Mahendran & Vedaldi's; the model leaves every call as it came."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, snapshot

import helpers
from helpers.similarity import ssim
from helpers.synthesis import (
    INVERSION,
    ForwardRecord,
    activation_match,
    compose,
    feature_inversion,
    inversion_loss,
    to_rgb,
)

SIZE = 96  # small photos keep the test short; the lesson inverts at 128 px


@pytest.fixture(scope="module")
def photos(lite0):
    x = lite0.preprocess("cat", "coffee")
    return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True,
                         align_corners=False)


def match_and_ssim(model, reconstruction, photo, layer):
    """``(loss, pixel SSIM)`` per image: the activation match at ``layer`` reached, and the
    SSIM of the grey pictures."""
    with helpers.record(model, layer) as rec, torch.no_grad():
        model(torch.cat([reconstruction, photo]))
    acts = rec[layer]
    n = len(photo)
    loss = inversion_loss(acts[:n], acts[n:])
    grey = [to_rgb(model, t).mean(dim=1) for t in (reconstruction, photo)]
    return loss, ssim(*grey)


@pytest.mark.parametrize("threads, seeds", [(1, (0, 1, 2)), (2, (0,))], indirect=["threads"])
def test_early_layer_reconstruction_matches_the_photo(lite0, photos, threads, seeds):
    """At the stem (bn1) 64 steps of the default recipe reach a loss under 0.15 and a pixel
    SSIM over 0.75 on the cat and the espresso (measured at 96 px, 1 thread, seeds 0-2: loss
    0.033-0.064, SSIM 0.88-0.99, the same at 2 threads). At blocks.1 the match is looser (loss
    0.15-0.23) and the SSIM 0.75-0.88."""
    before = snapshot(lite0.model)
    for seed in seeds:
        stem = feature_inversion(lite0, photos, "bn1", steps=64, seed=seed, progress=False)
        assert stem.shape == photos.shape
        low, high = lite0.input_range
        assert ((stem >= low - 1e-5) & (stem <= high + 1e-5)).all()
        loss, similarity = match_and_ssim(lite0, stem, photos, "bn1")
        print(f"threads {threads} seed {seed} bn1: loss {loss.tolist()} SSIM {similarity.tolist()}")
        assert (loss < 0.15).all(), loss
        assert (similarity > 0.75).all(), similarity
    deeper = feature_inversion(lite0, photos, "blocks.1", steps=64, seed=seeds[0],
                               progress=False)
    loss, similarity = match_and_ssim(lite0, deeper, photos, "blocks.1")
    print(f"threads {threads} blocks.1: loss {loss.tolist()} SSIM {similarity.tolist()}")
    assert (loss < 0.35).all() and (similarity > 0.6).all(), (loss, similarity)
    assert_unchanged(before, lite0.model)


def test_the_prior_makes_the_picture_not_the_match(lite0, photos):
    """Without a prior (pixels, no transforms) blocks.1 is matched as closely (loss 0.12-0.16
    against 0.15-0.23 with the prior, measured on three seeds) but the picture is far less like
    the photo (SSIM 0.24-0.36 against 0.75-0.88): many images share these activations, and the
    prior picks a natural one."""
    prior = feature_inversion(lite0, photos, "blocks.1", steps=64, progress=False)
    plain = feature_inversion(lite0, photos, "blocks.1", steps=64, parameterization="pixel",
                              progress=False)
    prior_loss, prior_ssim = match_and_ssim(lite0, prior, photos, "blocks.1")
    plain_loss, plain_ssim = match_and_ssim(lite0, plain, photos, "blocks.1")
    assert (plain_loss < prior_loss + 0.1).all(), (plain_loss, prior_loss)
    assert (prior_ssim > plain_ssim + 0.25).all(), (prior_ssim, plain_ssim)


def test_depth_loses_the_picture(lite0, photos):
    """From the stem to a late stage the SSIM falls (measured on the cat at 128 px and 96
    steps: 0.99 at bn1, 0.10 at blocks.5)."""
    cat = photos[:1]
    early = feature_inversion(lite0, cat, "bn1", steps=48, progress=False)
    late = feature_inversion(lite0, cat, "blocks.5", steps=48, progress=False)
    assert match_and_ssim(lite0, early, cat, "bn1")[1] > \
        match_and_ssim(lite0, late, cat, "blocks.5")[1] + 0.3


def test_same_seed_same_picture(lite0, photos):
    a = feature_inversion(lite0, photos[:1], "bn1", steps=3, progress=False)
    b = feature_inversion(lite0, photos[:1], "bn1", steps=3, progress=False)
    c = feature_inversion(lite0, photos[:1], "bn1", steps=3, seed=1, progress=False)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().mean() > 1e-3


def test_inversion_loss_known_answers():
    target = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert inversion_loss(target, target).tolist() == [0.0, 0.0]
    assert inversion_loss(torch.zeros_like(target), target).tolist() == [1.0, 1.0]
    assert inversion_loss(2 * target, target).tolist() == [1.0, 1.0]
    got = inversion_loss(torch.tensor([[0.0, 4.0], [1.0, 1.0]]), target)
    torch.testing.assert_close(got, torch.tensor([9 / 25, 1.0]))
    with pytest.raises(ValueError, match="differ in shape"):
        inversion_loss(torch.zeros(1, 3), torch.zeros(1, 4))


def test_picture_and_photo_see_the_same_transforms():
    """The render loop draws one transform per batch: a photo appended to the batch moves with
    the picture, so a picture equal to its photo scores a perfect match under every draw."""
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    transform = compose(INVERSION)
    for seed in range(5):
        view = transform(torch.cat([image, image]), torch.Generator().manual_seed(seed))
        assert torch.equal(view[0], view[1])
        record = ForwardRecord(view, None, {"layer": view})
        assert activation_match("layer", 1)(record).item() == 0.0


def test_model_left_as_it_came_under_no_grad_and_with_trainable_weights(photos):
    torch.manual_seed(0)
    model = helpers.load_model("efficientnet_lite0")
    net = model.model
    net.requires_grad_(True).train()
    net.blocks[2].eval()
    before = snapshot(net)
    with torch.no_grad():
        out = feature_inversion(model, photos[:1], "blocks.0", steps=2, progress=False)
    assert out.shape == photos[:1].shape and not out.requires_grad
    assert_unchanged(before, net)
    with pytest.raises(ValueError, match="no layer named"):
        feature_inversion(model, photos[:1], "blocks.99", steps=2, progress=False)
    assert_unchanged(before, net)


def test_refusals(lite0, photos):
    x = photos[:1]
    with pytest.raises(ValueError, match="no layer named 'blockz.1'.*blocks.1"):
        feature_inversion(lite0, x, "blockz.1")
    with pytest.raises(TypeError, match="layer name"):
        feature_inversion(lite0, x, 3)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        feature_inversion(lite0, x, "bn1", steps=0)
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        feature_inversion(lite0, x, "bn1", lr=float("nan"))
    with pytest.raises(ValueError, match="'fft'.*'pixel'"):
        feature_inversion(lite0, x, "bn1", parameterization="wavelet")
    with pytest.raises(ValueError, match="x\\[None\\]"):
        feature_inversion(lite0, x[0], "bn1")
    with pytest.raises(ValueError, match="NaN"):
        feature_inversion(lite0, x * float("nan"), "bn1")
    with pytest.raises(ValueError, match="valid pixel range"):
        feature_inversion(lite0, x + 3.0, "bn1")
    with pytest.raises(ValueError, match="3 colour channels"):
        feature_inversion(lite0, x[:, :1], "bn1")
    with pytest.raises(TypeError, match="LessonModel"):
        feature_inversion(lite0.model, x, "bn1")
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        feature_inversion(lite0, x, "bn1")
