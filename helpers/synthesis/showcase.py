"""Class pictures made once, with more steps and views than a lesson can wait for, and stored with
the course as PNG files (``helpers/data/pictures``). Lesson 07 shows them and scores them live.

``store_class_pictures`` makes them (``benchmarks/transfer.py --store``: minutes), and writes
the recipe into each file; ``stored_class_pictures`` reads them back in the model's input space.
A stored picture is 8-bit: it is what the lesson scores, not the float image the optimiser
ended with (the two differ by at most half a grey level).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from .param import from_rgb
from .render import class_visualization

__all__ = ["SHOWCASE", "SHOWCASE_CLASSES", "PICTURES_DIR", "store_class_pictures",
           "stored_class_pictures"]

# The showcase recipe: class_visualization's robust default with more views per step and more
# steps (benchmarks/transfer.py measures what each buys on classes lesson 07 does not show).
SHOWCASE = {"views": 2, "steps": 384, "size": 224, "seed": 0}
SHOWCASE_CLASSES = ("goldfish", "tarantula", "monarch", "espresso")
PICTURES_DIR = Path(__file__).resolve().parents[1] / "data" / "pictures"


def _path(folder: Path, model_name: str, label: str) -> Path:
    return Path(folder) / f"{model_name}_{label.replace(' ', '_')}.png"


def _labels(model, target: int | str | Sequence[int | str]) -> list[str]:
    """Class names (a picture's file is named by its class), checked against the model's."""
    labels = [target] if isinstance(target, (int, str)) else list(target)
    return [model.labels[model.class_index(label)] for label in labels]


def store_class_pictures(model, target: int | str | Sequence[int | str] = SHOWCASE_CLASSES, *,
                         recipe: dict | None = None, folder: str | Path = PICTURES_DIR,
                         progress: bool = False) -> list[Path]:
    """Make one picture per class of ``target`` (names or indices) with ``recipe`` (keyword
    arguments of ``class_visualization``; default ``SHOWCASE``) and write each as an RGB PNG into
    ``folder``, named ``<model name>_<class>.png``, with the recipe in its ``recipe`` text chunk.
    Returns the paths."""
    recipe = dict(SHOWCASE if recipe is None else recipe)
    classes = _labels(model, target)
    images = class_visualization(model, classes, progress=progress, **recipe)
    pixels = model.deprocess(images)
    pixels = pixels.reshape(-1, *pixels.shape[-3:])  # (N, H, W, 3) uint8, also for one class
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for label, picture in zip(classes, pixels):
        info = PngImagePlugin.PngInfo()
        info.add_text("recipe", json.dumps(recipe, sort_keys=True))
        info.add_text("class", label)
        paths.append(_path(folder, model.name, label))
        Image.fromarray(picture, mode="RGB").save(paths[-1], pnginfo=info)
    return paths


def stored_class_pictures(model, target: int | str | Sequence[int | str] = SHOWCASE_CLASSES, *,
                          folder: str | Path = PICTURES_DIR) -> tuple[torch.Tensor, dict]:
    """The stored pictures of the classes of ``target`` (names or indices) for ``model``:
    ``(N, 3, H, W)`` in its input space, and the recipe they were made with (the same for all,
    or a ``ValueError``). A missing file raises a ``FileNotFoundError`` that says how to make
    it."""
    pictures, recipes = [], set()
    for label in _labels(model, target):
        path = _path(folder, model.name, label)
        if not path.is_file():
            raise FileNotFoundError(
                f"no stored picture of {label!r} for {model.name} ({path}); make the pictures "
                "with helpers.synthesis.store_class_pictures (benchmarks/transfer.py --store)")
        with Image.open(path) as image:
            recipes.add(image.text.get("recipe", "{}"))
            pictures.append(np.asarray(image.convert("RGB"), dtype=np.float32) / 255)
    if len(recipes) > 1:
        raise ValueError(f"the stored pictures were made with different recipes: {recipes}")
    rgb = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).to(model.device)
    return from_rgb(model, rgb), json.loads(recipes.pop())
