"""Faithfulness: occlusion equals captum's; deletion / insertion have exact endpoints and rank a
known answer right; ROAD's imputation equals the reference (pytorch-grad-cam's copy of the
authors' code); the randomisation cascade keeps every map finite and never touches the model."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion
from conftest import assert_unchanged, snapshot
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from scipy.stats import spearmanr
from torch import nn

from helpers.attribution import saliency
from helpers.baselines import centre_map, edge_map, random_map, salient_blob_map
from helpers.cam import grad_cam
from helpers.causal import auc, deletion, insertion
from helpers.imputation import noisy_linear_imputation, rise_blur
from helpers.occlusion import occlusion
from helpers.sanity import _randomize, cascading_randomization, randomization_layers
from helpers.similarity import rank_correlation, ssim


def small_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 5)).eval()


# ----- occlusion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("window,stride,baseline", [(8, 4, 0.0), (7, 5, 0.3), (12, 12, -1.0),
                                                    (5, 3, 0.0)])
def test_occlusion_equals_captum_on_small_cnns(seed, window, stride, baseline):
    net = small_cnn(seed)
    x = torch.randn(3, 3, 30, 37, generator=torch.Generator().manual_seed(seed))
    targets = [0, 3, 4]
    before = snapshot(net)
    ours = occlusion(net, x, targets, window=window, stride=stride, baseline=baseline,
                     batch_size=5, progress=False)
    expected = Occlusion(net).attribute(x, sliding_window_shapes=(3, window, window),
                                        strides=(3, stride, stride), baselines=baseline,
                                        target=targets)[:, 0]
    assert ours.shape == (3, 30, 37)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert_unchanged(before, net)


def test_occlusion_equals_captum_on_lite0(lite0, cat_coffee):
    # 224 - 80 = 144 is no multiple of 56: the last window sticks out and is clipped.
    before = snapshot(lite0.model)
    ours = occlusion(lite0, cat_coffee, [281, 967], window=80, stride=56, progress=False)
    expected = Occlusion(lite0.model).attribute(
        cat_coffee, sliding_window_shapes=(3, 80, 80), strides=(3, 56, 56), baselines=0.0,
        target=[281, 967])[:, 0]
    torch.testing.assert_close(ours, expected, atol=2e-4, rtol=1e-4)
    assert_unchanged(before, lite0.model)


def test_occlusion_refuses_bad_windows_and_leaves_the_model(lite0, cat_coffee):
    before = snapshot(lite0.model)
    with pytest.raises(ValueError, match=r"window must be an integer \[1, 224\]"):
        occlusion(lite0, cat_coffee, window=300)
    with pytest.raises(ValueError, match="outside"):
        occlusion(lite0, cat_coffee, 5000, window=112, stride=112, progress=False)
    assert_unchanged(before, lite0.model)


# ----- deletion / insertion ---------------------------------------------------------------------

def test_curves_have_exact_endpoints_on_lite0(lite0, cat_coffee):
    x = cat_coffee
    before = snapshot(lite0.model)
    maps = grad_cam(lite0, x, [281, 967])
    with torch.no_grad():
        clean = lite0(x).softmax(dim=1)[[0, 1], [281, 967]]
        at_zero = lite0(torch.zeros_like(x)).softmax(dim=1)[[0, 1], [281, 967]]
        at_blur = lite0(rise_blur(x)).softmax(dim=1)[[0, 1], [281, 967]]
    down = deletion(lite0, x, [281, 967], attribution=maps, steps=4, progress=False)
    up = insertion(lite0, x, [281, 967], attribution=maps, steps=4, progress=False)
    assert down.shape == up.shape == (2, 5)
    assert torch.equal(down[:, 0], clean)  # exactly p(x), not a re-run in another batch
    assert torch.equal(up[:, -1], clean)
    torch.testing.assert_close(down[:, -1], at_zero, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(up[:, 0], at_blur, atol=1e-5, rtol=1e-4)
    assert ((0 <= down) & (down <= 1)).all() and ((0 <= up) & (up <= 1)).all()
    assert_unchanged(before, lite0.model)


class TopLeftNet(nn.Module):
    """Class 0's logit grows with the texture energy (mean square) of the top-left quadrant;
    class 1's is 0. A known answer: only the top-left pixels matter for class 0, and grey, a
    blur or an imputation from neighbours all remove their texture."""

    def forward(self, x):
        h, w = x.shape[-2:]
        score = 4 * x[:, :, : h // 2, : w // 2].square().mean(dim=(1, 2, 3)) - 2
        return torch.stack([score, torch.zeros_like(score)], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("baseline", ["zero", "blur", "road"])
def test_the_true_map_beats_the_wrong_one(seed, baseline):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))  # white noise
    truth = torch.zeros(2, 32, 32)
    truth[:, :16, :16] = 1 + torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(seed))
    wrong = truth.flip(-1)
    net = TopLeftNet()
    kwargs = dict(steps=8, baseline=baseline, progress=False, seed=seed)
    good, bad = (deletion(net, x, 0, attribution=m, **kwargs) for m in (truth, wrong))
    # Deleting the top-left quarter first: after 2 of 8 steps, class 0 has lost its evidence.
    assert (auc(good) < auc(bad) - 0.1).all()
    if baseline == "zero":  # the score falls monotonically with every deleted true pixel
        assert (good.diff(dim=1) <= 1e-6).all()
        assert (good[:, 2:] == good[:, -1:]).all()
    up_good, up_bad = (insertion(net, x, 0, attribution=m, steps=8, progress=False)
                       for m in (truth, wrong))
    assert (auc(up_good) > auc(up_bad) + 0.1).all()


def test_auc_known_answers():
    assert auc(torch.full((3, 11), 0.25)).allclose(torch.full((3,), 0.25))
    assert auc(torch.linspace(0, 1, 29)).item() == pytest.approx(0.5)
    assert auc(torch.tensor([0.0, 1.0, 0.0])).item() == pytest.approx(0.5)


def test_smaller_and_colour_maps_are_accepted(lite0, cat_coffee):
    x = cat_coffee[:1]
    low = grad_cam(lite0, x, 281, upsample=False)  # (1, 7, 7): upsampled inside
    full = grad_cam(lite0, x, 281)
    a = deletion(lite0, x, 281, attribution=low, steps=3, progress=False)
    b = deletion(lite0, x, 281, attribution=full, steps=3, progress=False)
    torch.testing.assert_close(a, b, atol=0.05, rtol=0)
    colour = saliency(lite0, x, 281)
    assert deletion(lite0, x, 281, attribution=colour, steps=2, progress=False).shape == (1, 3)
    with pytest.raises(ValueError, match="maps for"):
        deletion(lite0, x, 281, attribution=full.repeat(2, 1, 1), progress=False)


# ----- ROAD's noisy linear imputation -----------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_imputation_equals_the_road_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(3, 40, 52, generator=generator)
    scattered = torch.rand(40, 52, generator=generator) > 0.6
    hole = torch.ones(40, 52, dtype=torch.bool)
    hole[5:35, 8 + seed:47] = False
    for known in (scattered, hole):
        expected = NoisyLinearImputer(noise=0.0)(image, known.float())
        ours = noisy_linear_imputation(image[None], known[None], noise=0.0, tol=1e-7,
                                       max_iter=3000)[0]
        torch.testing.assert_close(ours, expected, atol=1e-3, rtol=0)


def test_imputation_noise_only_on_missing_pixels():
    x = torch.randn(2, 3, 24, 24)
    known = torch.rand(2, 24, 24) > 0.5
    g = torch.Generator().manual_seed(0)
    noisy = noisy_linear_imputation(x, known, noise=0.01, generator=g)
    clean = noisy_linear_imputation(x, known, noise=0.0)
    assert torch.equal(noisy.permute(1, 0, 2, 3)[:, known], x.permute(1, 0, 2, 3)[:, known])
    spread = (noisy - clean).permute(1, 0, 2, 3)[:, ~known].std().item()
    assert 0.007 < spread < 0.013
    nothing = noisy_linear_imputation(x, torch.zeros(2, 24, 24, dtype=torch.bool), noise=0)
    torch.testing.assert_close(nothing, x.mean(dim=(2, 3), keepdim=True).expand_as(x))


# ----- map comparisons and baselines ------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_correlation_equals_scipy_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 6, (2, 20, 20), generator=g).float()  # many ties, like ReLU'd maps
    b = a + torch.randn(2, 20, 20, generator=g) * 2
    ours = rank_correlation(a, b)
    for i in range(2):
        expected = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(expected, abs=1e-9)
    assert rank_correlation(torch.zeros(1, 5, 5), a[:1, :5, :5]).item() == 0.0


def test_ssim_known_answers():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 32, 32, generator=g)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))
    noisy = (a + 0.3 * torch.randn(2, 32, 32, generator=g)).clamp(0, 1)
    assert torch.allclose(ssim(a, noisy), ssim(noisy, a))
    assert (ssim(a, noisy) < 0.9).all()
    assert (ssim(a, torch.rand(2, 32, 32, generator=g)) < 0.2).all()


def test_edge_and_random_maps():
    x = torch.zeros(1, 3, 16, 16)
    x[..., 8:] = 1.0  # a vertical step between columns 7 and 8
    edges = edge_map(x)
    assert edges.shape == (1, 16, 16)
    assert (edges[0, :, 7:9] == 1).all() and (edges[0, :, :6] == 0).all()
    assert torch.equal(random_map(x, seed=3), random_map(x, seed=3))
    assert not torch.equal(random_map(x, seed=3), random_map(x, seed=4))


def test_model_free_baselines_have_known_answers():
    x = torch.full((2, 3, 40, 60), 0.2)
    x[0, :, 5:12, 40:50] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # a red patch
    x[1, :, 20:30, 3:9] = 0.8
    blob = salient_blob_map(x)
    for i, (rows, cols) in enumerate([((5, 12), (40, 50)), ((20, 30), (3, 9))]):
        r, c = divmod(int(blob[i].argmax()), 60)
        assert rows[0] <= r < rows[1] and cols[0] <= c < cols[1], (i, r, c)
    assert blob.amin() == 0 and blob.amax() == 1
    centre = centre_map(x)
    assert torch.equal(centre[0], centre[1]) and centre[0, 19:21, 29:31].min() == centre.max()
    assert centre[0, 0, 0] < 0.03 * centre.max()  # two standard deviations out on each axis


# ----- sanity checks: cascading randomisation ---------------------------------------------------

METHODS = {"saliency": saliency, "Grad-CAM": lambda m, x, t: grad_cam(m, x, t)}


@pytest.fixture(scope="module")
def full_cascade(lite0, cat_coffee):
    before = snapshot(lite0.model)
    result = cascading_randomization(lite0, cat_coffee[:1], methods=METHODS, progress=False)
    assert_unchanged(before, lite0.model)
    return result


def test_the_full_cascade_stays_finite(full_cascade):
    layers = full_cascade.layers
    assert layers[:3] == ["classifier", "bn2", "conv_head"] and layers[-1] == "conv_stem"
    assert layers[3:10] == [f"blocks.{i}" for i in range(6, -1, -1)]
    for name in METHODS:
        assert full_cascade.randomized[name].shape == (len(layers), 1, 224, 224)
        assert torch.isfinite(full_cascade.randomized[name]).all(), name
        for values in (full_cascade.rank_correlation[name], full_cascade.ssim[name]):
            assert len(values) == len(layers)
            assert all(-1 <= v <= 1 for v in values)


def test_randomising_everything_destroys_the_saliency_map(full_cascade):
    # Generous: trained vs fully random weights share (almost) no pixel ranking.
    assert abs(full_cascade.rank_correlation["saliency"][-1]) < 0.3
    assert full_cascade.ssim["saliency"][-1] < 0.3


def test_shuffle_keeps_values_and_independent_mode_restores(lite0, cat_coffee):
    x = cat_coffee[:1]
    net = small_cnn(0)
    layers = randomization_layers(net)
    assert layers == ["8", "4", "1", "0"]  # Linear, conv, BatchNorm, conv: from the output down
    small = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cascade = cascading_randomization(net, small, 2, methods=[saliency], layers=layers,
                                      progress=False)
    alone = cascading_randomization(net, small, 2, methods=[saliency], layers=layers,
                                    cascading=False, progress=False)
    assert list(cascade.rank_correlation) == ["saliency"] and not alone.cascading
    # The first step is the same in both modes (same seed, same layer).
    torch.testing.assert_close(cascade.randomized["saliency"][0],
                               alone.randomized["saliency"][0])
    conv = small_cnn(0)[4]
    values = conv.weight.detach().flatten().sort().values
    _randomize(conv, "shuffle", torch.Generator().manual_seed(0))
    assert torch.equal(conv.weight.detach().flatten().sort().values, values)
    gaussian = cascading_randomization(lite0, x, methods={"saliency": saliency},
                                       layers=["classifier"], randomize="gaussian",
                                       progress=False)
    assert torch.isfinite(gaussian.randomized["saliency"]).all()


def test_model_untouched_when_a_method_raises(lite0, cat_coffee):
    calls = []

    def fails_on_third_call(model, x, target):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return saliency(model, x, target)

    before = snapshot(lite0.model)
    with pytest.raises(RuntimeError, match="boom"):
        cascading_randomization(lite0, cat_coffee[:1], methods=[fails_on_third_call],
                                progress=False)
    with pytest.raises(ValueError, match="unknown layers"):
        cascading_randomization(lite0, cat_coffee[:1], methods=[saliency], layers=["nope"])
    assert_unchanged(before, lite0.model)


def test_cascade_explorer_moves(full_cascade, lite0, cat_coffee):
    from helpers.widgets import CascadeExplorer

    explorer = CascadeExplorer(full_cascade, lite0.deprocess(cat_coffee[:1]))
    first = explorer.render()
    assert explorer.step_slider.description == "randomised"
    explorer.step_slider.value = explorer.steps[4]  # randomised down to blocks.6
    assert explorer.step == 4 and explorer.render() != first
    assert "rank correlation" in explorer.status.value
    explorer.method_menu.value = "Grad-CAM"
    assert explorer.method_menu.description == "method"
    assert torch.isfinite(explorer.current()).all() and explorer.render() != first
