"""Cases with known answers and the measures on them: the pointing game and the energy on
hand-made maps with known answers; bootstrap intervals against closed forms (normal-theory and
binomial widths, a cluster bootstrap against duplicated cases); the cases hold the declared
classes at the declared places; the scoreboard ranks a known-true map above a wrong one on every
measure, never touches the model, and the stored scores of lesson 09 are what the code computes."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_unchanged, snapshot
from PIL import Image
from torch import nn

from helpers.evaluation import (
    CROPS,
    LAYOUTS,
    PHOTOS,
    Cases,
    _crop,
    _tensor,
    bootstrap_interval,
    check_photos,
    energy,
    folder_photos,
    make_cases,
    pointing_game,
)
from helpers.images import DATA_DIR, load_image
from helpers.scoreboard import (
    BASELINES,
    MEASURES,
    Scores,
    course_methods,
    load_scores,
    measure_maps,
    method_maps,
    randomised_similarity,
    randomize_layer,
    save_scores,
    summarise,
)

# ----- pointing game and energy on hand-made maps -----------------------------------------------


def test_pointing_game_known_answers():
    maps = torch.zeros(4, 10, 12)
    maps[0, 2, 3] = 1.0  # inside the box
    maps[1, 8, 11] = 1.0  # outside
    maps[2, 6, 6] = 1.0  # one pixel below the box: a hit only with tolerance 1
    maps[3] = 0.5  # flat: the first pixel (0, 0) counts
    boxes = torch.tensor([[1, 2, 5, 6]] * 3 + [[0, 0, 0, 0]])
    assert pointing_game(maps, boxes).tolist() == [True, False, False, True]
    assert pointing_game(maps, boxes, tolerance=1).tolist() == [True, False, True, True]


def test_energy_known_answers():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True  # a quarter of the image
    maps = torch.ones(3, 4, 4)
    maps[0, :2, :2] = 3.0  # 12 inside, 12 outside
    maps[1] = 0.0
    maps[1, 0, 0] = 2.0  # all of it inside
    maps[2] = 0.0  # nothing to place: the area, 1/4
    assert energy(maps, masks).tolist() == pytest.approx([0.5, 1.0, 0.25])
    with pytest.raises(ValueError, match="non-negative"):
        energy(-maps, masks)
    with pytest.raises(ValueError, match="differ"):
        energy(maps[:, :3], masks)


# ----- bootstrap intervals against closed forms -------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_bootstrap_interval_of_a_normal_mean(seed):
    n = 400
    sample = 3.0 + 2.0 * torch.randn(n, generator=torch.Generator().manual_seed(seed),
                                     dtype=torch.float64)
    mean, low, high = bootstrap_interval(sample, seed=seed)
    assert mean.item() == pytest.approx(sample.mean().item(), abs=1e-12)
    se = sample.std().item() / math.sqrt(n)
    normal = 2 * 1.959964 * se  # the normal-theory width
    assert (high - low).item() == pytest.approx(normal, rel=0.12)
    assert low.item() < mean.item() < high.item()
    # centred on the mean up to resampling noise (the mean of a normal sample is symmetric)
    assert abs((high + low).item() / 2 - mean.item()) < 0.15 * se


@pytest.mark.parametrize("p", [0.2, 0.5, 0.85])
def test_bootstrap_interval_of_a_proportion(p):
    n = 300
    hits = (torch.rand(n, generator=torch.Generator().manual_seed(7)) < p).double()
    mean, low, high = bootstrap_interval(hits, resamples=4000)
    q = hits.mean().item()
    wald = 2 * 1.959964 * math.sqrt(q * (1 - q) / n)
    assert (high - low).item() == pytest.approx(wald, rel=0.12)


def test_bootstrap_resamples_rows_together_and_groups_whole():
    values = torch.randn(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, low, high = bootstrap_interval(torch.stack([values, 2 * values + 1]))
    # the same draws for both rows: an affine map of one row moves its interval exactly
    assert (2 * low[0] + 1).item() == pytest.approx(low[1].item(), abs=1e-12)
    assert (2 * high[0] + 1).item() == pytest.approx(high[1].item(), abs=1e-12)
    # each case twice: resampling cases pretends to twice the information (narrower by ~sqrt 2);
    # resampling the pairs whole gives back the width of the 200 distinct values
    twice = values.repeat_interleave(2)
    pairs = torch.arange(200).repeat_interleave(2)
    width = (high[0] - low[0]).item()
    _, lo, hi = bootstrap_interval(twice, seed=1)
    assert (hi - lo).item() == pytest.approx(width / math.sqrt(2), rel=0.12)
    _, lo, hi = bootstrap_interval(twice, groups=pairs, seed=1)
    assert (hi - lo).item() == pytest.approx(width, rel=0.12)


def test_bootstrap_refuses_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(torch.ones(5), level=1.5)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_interval(torch.ones(5), groups=torch.zeros(4))
    with pytest.raises(ValueError, match="at least one case"):
        bootstrap_interval(torch.ones(0))


# ----- the cases: declared classes at declared places -------------------------------------------

@pytest.fixture(scope="module")
def small_cases(lite0):
    return make_cases(lite0, collages=9, seed=3)


def test_cases_hold_the_declared_class_at_the_declared_place(lite0, small_cases):
    cases = small_cases
    assert len(cases) >= 9 and set(cases.layout) <= set(LAYOUTS)
    by_name = {photo.name: photo for photo in PHOTOS}
    pictures = {}
    for i in range(len(cases)):
        photo = by_name[cases.photo[i]]
        label = lite0.labels[int(cases.target[i])]
        assert label in photo.labels, (i, label)
        top, left, bottom, right = cases.boxes[i].tolist()
        rows, cols = LAYOUTS[cases.layout[i]]
        size = cases.size[0]
        assert (bottom - top + 1, right - left + 1) == (size // rows, size // cols)
        crop, _, mirrored = cases.crop[i].partition(", ")
        assert crop in CROPS
        if photo.name not in pictures:
            pictures[photo.name] = load_image(photo.source)
        tile = _crop(pictures[photo.name], crop, mirrored == "mirrored", right - left + 1,
                     bottom - top + 1)
        # the collage holds exactly that photo's crop in that box
        region = cases.x([i])[0, :, top:bottom + 1, left:right + 1]
        torch.testing.assert_close(region, _tensor(lite0, tile), atol=0, rtol=0)
        # and the model, shown the tile alone, gives that class first with the margin
        with torch.no_grad():
            probs = lite0(region[None]).softmax(dim=1)[0]
        best = probs.topk(2)
        assert int(best.indices[0]) == int(cases.target[i])
        assert float(best.values[0] - best.values[1]) >= 0.25
    # on the whole collage the class is among the model's top 5, as recorded
    with torch.no_grad():
        probs = lite0(cases.x()).softmax(dim=1)
    ranks = (probs > probs.gather(1, cases.target[:, None])).sum(dim=1)
    assert torch.equal(ranks, cases.rank) and (ranks < 5).all()
    torch.testing.assert_close(probs.gather(1, cases.target[:, None])[:, 0], cases.probability)
    # tiles of one collage are photos of different classes
    for k in cases.image.unique():
        members = (cases.image == k).nonzero()[:, 0].tolist()
        assert len({cases.photo[i] for i in members}) == len(members)
    masks = cases.masks
    assert masks.shape == (len(cases), size, size)
    assert masks.double().mean(dim=(1, 2)).tolist() == pytest.approx(cases.area.tolist())


def test_collages_normalise_as_the_model_does(lite0, small_cases):
    picture = small_cases.pixels[0].permute(1, 2, 0).numpy()
    expected = _tensor(lite0, Image.fromarray(picture))
    torch.testing.assert_close(small_cases.collages([0])[0], expected, atol=0, rtol=0)
    assert small_cases.images.dtype == torch.float32 and small_cases.pixels.dtype == torch.uint8


def test_cases_are_repeatable(lite0, small_cases):
    again = make_cases(lite0, collages=9, seed=3)
    assert torch.equal(again.pixels, small_cases.pixels)
    assert torch.equal(again.target, small_cases.target)
    other = make_cases(lite0, collages=9, seed=4)
    assert not torch.equal(other.pixels, small_cases.pixels)
    part = small_cases.subset([2, 0])
    assert part.photo == [small_cases.photo[2], small_cases.photo[0]]
    assert torch.equal(part.x(), small_cases.x([2, 0]))


def test_check_photos_reports_the_models_view(lite0):
    rows = {row["photo"]: row for row in check_photos(lite0)}
    assert rows["camera"]["top"] == "tripod" and rows["camera"]["p top"] > 0.9
    assert rows["coffee"]["top"] == "espresso"
    assert rows["astronaut"]["accepted"] == "-" and rows["astronaut"]["crops right, 2x2"] == 0
    assert all(0 <= row[f"crops right, {layout}"] <= 2 * len(CROPS)
               for row in rows.values() for layout in LAYOUTS)


def test_a_teachers_folder(lite0, tmp_path):
    for label, file in [("tripod", "evaluation/camera.png"), ("espresso", "coffee.png"),
                        ("Egyptian_cat", "chelsea.png")]:
        (tmp_path / label).mkdir()
        shutil.copy(DATA_DIR / file, tmp_path / label / Path(file).name)
    (tmp_path / "notes.txt").write_text("not a photo")
    photos = folder_photos(tmp_path)
    assert [p.labels for p in photos] == [("Egyptian cat",), ("espresso",), ("tripod",)]
    cases = make_cases(lite0, photos, collages=3, layouts=["1x2"])
    assert {lite0.labels[int(t)] for t in cases.target} <= {"Egyptian cat", "espresso", "tripod"}
    with pytest.raises(ValueError, match="2x2 collage needs photos of 4 different classes"):
        make_cases(lite0, photos, collages=2, layouts=["2x2"])
    (tmp_path / "not_a_class").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "not_a_class" / "x.png")
    with pytest.raises(ValueError, match="unknown class 'not a class'"):
        make_cases(lite0, folder_photos(tmp_path), collages=2, layouts=["1x2"])
    with pytest.raises(ValueError, match="is not a folder"):
        folder_photos(tmp_path / "missing")
    (tmp_path / "empty" / "tabby").mkdir(parents=True)
    with pytest.raises(ValueError, match="no photos"):
        folder_photos(tmp_path / "empty")


# ----- the scoreboard on a known answer ---------------------------------------------------------

class TileNet(nn.Module):
    """Class 0's logit is the texture energy of the top-left tile of a 2 x 2 collage (32 x 32
    images): the true answer of class 0 is that tile, and every measure knows it."""

    def forward(self, x):
        score = 6 * x[:, :, :16, :16].square().mean(dim=(1, 2, 3)) - 3
        return torch.stack([score, torch.zeros_like(score), -torch.ones_like(score)], dim=1)


def tile_cases(n: int = 3) -> Cases:
    pixels = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))  # noise in [-2, 2]
    return Cases(pixels, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), image=torch.arange(n),
                 target=torch.zeros(n, dtype=torch.long),
                 boxes=torch.tensor([[0, 0, 15, 15]] * n), probability=torch.ones(n),
                 rank=torch.zeros(n, dtype=torch.long), photo=["noise"] * n,
                 crop=["whole"] * n, layout=["2x2"] * n)


def test_the_true_map_wins_every_measure():
    cases = tile_cases()
    truth = cases.masks.float() * (1 + torch.rand(3, 32, 32, generator=torch.Generator()
                                                  .manual_seed(1)))
    wrong = truth.flip(-1)  # the top-right tile
    scores = measure_maps(TileNet(), cases, [0, 1, 2], {"truth": truth, "wrong": wrong},
                          steps=8, road_steps=4)
    good, bad = scores.values["truth"], scores.values["wrong"]
    assert good["pointing game"].tolist() == [1, 1, 1] and bad["pointing game"].sum() == 0
    assert good["energy"].tolist() == pytest.approx([1, 1, 1])
    assert bad["energy"].tolist() == pytest.approx([0, 0, 0])
    for measure in MEASURES[2:]:
        better = good[measure.name].mean() - bad[measure.name].mean()
        assert (better > 0.1) if measure.better == "higher" else (better < -0.1), measure.name


def test_summarise_claims_only_separated_intervals():
    g = torch.Generator().manual_seed(0)
    values = {"strong": 0.8 + 0.05 * torch.randn(200, generator=g, dtype=torch.float64),
              "weak": 0.501 + 0.05 * torch.randn(200, generator=g, dtype=torch.float64),
              **{b: 0.5 + 0.05 * torch.randn(200, generator=g, dtype=torch.float64)
                 for b in BASELINES}}
    scores = Scores({m: {"energy": v, "deletion": v} for m, v in values.items()},
                    list(range(200)), {"energy": "higher", "deletion": "lower"})
    rows = {(r.method, r.measure): r for r in summarise(scores)}
    assert rows["strong", "energy"].beats_all and rows["strong", "energy"].beats == list(BASELINES)
    assert not rows["strong", "deletion"].beats_all  # higher is worse there
    assert rows["weak", "energy"].beats_all is False  # overlaps at least one baseline
    assert rows["random", "energy"].beats_all is None
    row = rows["strong", "energy"]
    assert row.low < row.mean < row.high and row.n == 200


def test_scores_round_trip(tmp_path):
    scores = Scores({"a": {"energy": torch.tensor([0.25, 0.5], dtype=torch.float64)}}, [3, 7],
                    {"energy": "higher"}, {"steps": 8})
    save_scores(tmp_path / "s.json", measures=scores)
    back = load_scores(tmp_path / "s.json")["measures"]
    assert back.which == [3, 7] and back.settings == {"steps": 8}
    assert torch.equal(back.values["a"]["energy"], scores.values["a"]["energy"])


# ----- randomisation -----------------------------------------------------------------------------

def small_cnn() -> nn.Module:
    torch.manual_seed(123)  # not the randomisation's seed: a "trained" net unlike a fresh one
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(6, 3)).eval()


def test_randomize_layer_shuffles_or_reinitialises_and_keeps_running_statistics():
    net, fresh = small_cnn(), small_cnn()
    with torch.no_grad():
        for p in fresh.parameters():
            p.normal_()
    bn = net[1]
    bn.running_mean.fill_(0.3)
    values = net[3].weight.detach().flatten().sort().values
    randomize_layer(net[3], "shuffle", generator=torch.Generator().manual_seed(0))
    assert torch.equal(net[3].weight.detach().flatten().sort().values, values)
    randomize_layer(bn, "reinit", initial=fresh[1])
    assert torch.equal(bn.weight, fresh[1].weight) and (bn.running_mean == 0.3).all()
    with pytest.raises(ValueError, match="initial"):
        randomize_layer(bn, "reinit")
    with pytest.raises(ValueError, match="shuffle"):
        randomize_layer(bn, "zero")


@pytest.mark.parametrize("how", ["shuffle", "reinit"])
def test_randomised_similarity_on_every_case(how):
    net = small_cnn()
    cases = tile_cases(4)
    methods = {k: v for k, v in course_methods().items()
               if k in ("saliency", "guided backprop", "Sobel edges")}
    before = snapshot(net)
    scores = randomised_similarity(net, cases, methods, layers=["7", "0"], randomize=how,
                                   batch_size=3, progress=False)
    assert_unchanged(before, net)
    assert scores.measures == [f"{how}: down to 7", f"{how}: down to 0"]
    assert scores.better[f"{how}: down to 0"] == "lower"
    # a map that ignores the model does not change at all: 1.00, the failed check
    assert torch.allclose(scores.values["Sobel edges"][f"{how}: down to 0"],
                          torch.ones(4, dtype=torch.float64))
    everything = scores.values["saliency"][f"{how}: down to 0"]
    assert everything.abs().max() < 0.9
    again = randomised_similarity(net, cases, methods, layers=["7", "0"], randomize=how,
                                  batch_size=4, progress=False)  # other chunks, same answer
    torch.testing.assert_close(again.values["saliency"][f"{how}: down to 0"], everything,
                               atol=1e-5, rtol=0)  # batches of another size: rounding only
    with pytest.raises(ValueError, match="unknown layers"):
        randomised_similarity(net, cases, methods, layers=["nope"], progress=False)


# ----- the course's methods, and the stored scores of lesson 09 ---------------------------------

def test_course_methods_give_one_non_negative_map_per_case(lite0, small_cases):
    before = snapshot(lite0.model)
    methods = course_methods(samples=2, channels=4, window=96, stride=96)
    maps = method_maps(lite0, small_cases, [0, 1], methods)
    alone = method_maps(lite0, small_cases, [1], methods)
    assert_unchanged(before, lite0.model)
    size = small_cases.size[0]
    for name, m in maps.items():
        assert m.shape == (2, size, size) and torch.isfinite(m).all() and (m >= 0).all(), name
        # a case gets the same map in any batch (random draws are seeded per image)
        torch.testing.assert_close(m[1], alone[name][0], atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="unknown measures"):
        measure_maps(lite0, small_cases, [0], maps, measures=["accuracy"])


STORED = DATA_DIR.parent / "scores" / "efficientnet_lite0.json"


@pytest.mark.skipif(not STORED.exists(), reason="benchmarks/faithfulness.py --store makes it")
def test_stored_scores_are_what_the_code_computes(lite0):
    from helpers.scoreboard import fingerprint

    stored = load_scores(STORED)
    cases = make_cases(lite0)
    assert stored["measures"].settings["cases"] == fingerprint(cases)
    which = stored["measures"].which
    methods = course_methods()
    last = len(which) - 1
    for k, name in [(0, "Grad-CAM"), (last // 2, "saliency"), (last, "random")]:
        case = which[k]
        maps = method_maps(lite0, cases, [case], {name: methods[name]})
        fresh = measure_maps(lite0, cases, [case], maps,
                             measures=["pointing game", "energy", "deletion", "insertion"])
        for measure, values in fresh.values[name].items():
            assert values[0].item() == pytest.approx(
                stored["measures"].values[name][measure][k].item(), abs=2e-4), (name, measure)
