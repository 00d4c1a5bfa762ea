"""Explorers: pictures equal the helpers' methods, slider moves are cached, bad layers fail."""

from __future__ import annotations

import base64
import io
import re

import pytest
import torch
from conftest import assert_unchanged, snapshot
from PIL import Image

from helpers.attribution import saliency
from helpers.cam import grad_cam
from helpers.images import collage
from helpers.plotting import as_grey
from helpers.widgets import SNAPSHOT_WIDTH, ClassExplorer, FeatureMapExplorer, FilterExplorer


def test_feature_map_explorer_slices_the_cached_forward(lite0):
    before = snapshot(lite0.model)
    explorer = FeatureMapExplorer(lite0, ["cat", "coffee"])
    explorer.layer_slider.value = "blocks.3"
    explorer.channel_slider.value = 5
    cached = explorer.activations("cat")
    assert explorer.current.shape == (14, 14)
    assert torch.equal(explorer.current, cached["blocks.3"][5])
    picture = explorer.picture.value
    explorer.channel_slider.value = 6
    assert explorer.picture.value != picture and explorer.activations("cat") is cached
    explorer.layer_slider.value = "bn1"  # 32 channels: the slider's range follows the layer
    assert explorer.channel_slider.max == 31
    assert_unchanged(before, lite0.model)


def test_explorers_reject_unknown_layers_at_once(lite0):
    with pytest.raises(ValueError, match="blocks.3"):
        FeatureMapExplorer(lite0, ["cat"], layers=["block.3"])


def test_filter_explorer_shows_the_selected_filter(lite0):
    explorer = FilterExplorer(lite0)
    explorer.layer_slider.value = "blocks.1.0.conv_pw"
    explorer.channel_slider.value = 7
    weight = lite0.model.blocks[1][0].conv_pw.weight
    assert torch.equal(explorer.current, weight[7:8].detach())
    assert bytes(explorer.picture.value).startswith(b"\x89PNG")


@pytest.mark.parametrize("method", ["grad_cam", "saliency"])
def test_class_explorer_equals_the_reference_methods(lite0, method):
    before = snapshot(lite0.model)
    explorer = ClassExplorer(lite0, {"pair": collage("cat", "coffee")}, methods=[method])
    x = lite0.preprocess(collage("cat", "coffee"))
    for target in (281, 967):
        explorer.class_menu.value = target
        expected = grad_cam(lite0, x, target)[0] if method == "grad_cam" else \
            as_grey(saliency(lite0, x, target))[0]
        torch.testing.assert_close(explorer.heatmap("pair", target), expected, atol=1e-5, rtol=0)
    assert_unchanged(before, lite0.model)


def test_class_explorer_slow_methods_equal_helpers_and_any_class_is_offered(lite0):
    from helpers.attribution import guided_backprop
    from helpers.cam import score_cam

    explorer = ClassExplorer(lite0, ["cat"], methods=["score_cam", "guided_backprop"], top_k=8)
    assert len(explorer.class_menu.options) == 1000  # every class, the image's top ones first
    first = explorer.class_menu.options[0][1]
    assert first == int(lite0(lite0.preprocess("cat")).argmax())
    explorer.search.value = "espresso"
    assert explorer.class_menu.value == 967
    x = lite0.preprocess("cat")
    expected = score_cam(lite0, x, 967, layer=explorer.layer_menu.value, top_k=8,
                         progress=False)[0]
    torch.testing.assert_close(explorer.heatmap("cat", 967), expected)
    explorer.method_menu.value = "guided_backprop"
    torch.testing.assert_close(explorer.heatmap("cat", 967),
                               as_grey(guided_backprop(lite0, x, 967))[0])


def test_explorers_store_their_first_picture_for_static_viewers(lite0):
    explorer = FilterExplorer(lite0)
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    found = re.search(r'<img src="data:image/(png|jpeg);base64,([^"]+)" width="(\d+)"',
                      bundle["text/html"])
    snapshot = Image.open(io.BytesIO(base64.b64decode(found.group(2))))
    picture = Image.open(io.BytesIO(bytes(explorer.picture.value)))
    assert snapshot.width >= SNAPSHOT_WIDTH and snapshot.width == int(found.group(3))
    # the same picture, no caption burned into it: same aspect ratio
    assert abs(snapshot.height / snapshot.width - picture.height / picture.width) < 0.01
    assert bundle["text/plain"].startswith("FilterExplorer: conv_stem")
    caption = re.search(r"<figcaption[^>]*>(.*)</figcaption>", bundle["text/html"]).group(1)
    assert caption.startswith("FilterExplorer: conv_stem")
    assert "&" not in bundle["text/plain"] and "<" not in bundle["text/plain"]
