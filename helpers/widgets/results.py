"""Explorers of results computed before or on demand: ``RunExplorer`` (a Run button for slow
computations), ``CascadeExplorer`` (a sanity check) and ``TokenExplorer`` (a ViT's blocks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import ipywidgets as widgets
import numpy as np
import torch

from ..cam import grad_cam
from ..models import LessonModel
from ..pictures import array_to_png, blend
from ..rollout import attention_rollout
from ._base import PANEL, _Explorer, _grey

__all__ = ["RunExplorer", "CascadeExplorer", "TokenExplorer"]


class RunExplorer(_Explorer):
    """Controls, a Run button and a picture, for computations too slow to follow a slider
    (gradient ascent, deep dream). ``compute(**values)`` returns ``uint8 (H, W, 3)``; results
    are cached per combination of control values, so going back to one is instant."""

    def __init__(self, controls: dict[str, widgets.ValueWidget],
                 compute: Callable[..., np.ndarray], *, size: int = PANEL) -> None:
        self.controls, self.compute, self.size = controls, compute, size
        self._cache: dict[tuple, bytes] = {}
        self.button = widgets.Button(description="Run", button_style="primary", icon="play")
        self._make_outputs(size, size)
        self.status.value = "Choose, then press <b>Run</b>."
        self.button.on_click(self._run)
        self.widget = widgets.VBox([*controls.values(), self.button, self.picture, self.status])

    @property
    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def render(self) -> bytes:
        key = tuple(sorted(self.values.items()))
        if key not in self._cache:
            self._cache[key] = array_to_png(self.compute(**self.values), size=self.size)
        return self._cache[key]

    def describe(self) -> str:
        return ", ".join(f"{name} = {value}" for name, value in self.values.items())

    def _run(self, button=None) -> None:
        self.button.disabled = True
        self.status.value = "running..."
        try:
            self._show()
        finally:
            self.button.disabled = False


class CascadeExplorer(_Explorer):
    """Browse a sanity check (``helpers.sanity.cascading_randomization``): pick a method
    and how far down the model is randomised; see that method's map beside the trained one.
    Everything is computed before; a move only encodes a PNG of a cached map."""

    def __init__(self, cascade, image: np.ndarray, *, index: int = 0) -> None:
        self.cascade, self.image, self.index = cascade, np.asarray(image), index
        methods = list(cascade.trained)
        word = "down to" if cascade.cascading else "only"
        self.steps = ["nothing (trained)", *(f"{word} {layer}" for layer in cascade.layers)]
        self.method_menu = widgets.Dropdown(options=methods, value=methods[0],
                                            description="method")
        self.step_slider = widgets.SelectionSlider(
            options=self.steps, value=self.steps[0], description="randomised",
            continuous_update=False, layout=widgets.Layout(width="460px"))
        self._make_outputs(PANEL * 2, PANEL)
        self.method_menu.observe(self._show, names="value")
        self.step_slider.observe(self._show, names="value")
        self.widget = widgets.VBox([self.method_menu, self.step_slider, self.picture,
                                    self.status])
        self._show()

    @property
    def step(self) -> int:
        """0 = trained, k = after randomising ``cascade.layers[k - 1]``."""
        return self.steps.index(self.step_slider.value)

    def current(self) -> torch.Tensor:
        """The selected map ``(H, W)`` in [0, 1]."""
        method = self.method_menu.value
        if self.step == 0:
            return self.cascade.trained[method][self.index]
        return self.cascade.randomized[method][self.step - 1, self.index]

    def render(self) -> bytes:
        trained = self.cascade.trained[self.method_menu.value][self.index].cpu().numpy()
        pictures = [_grey(m) for m in (trained, self.current().cpu().numpy())]
        gap = np.full((trained.shape[0], 4, 3), 255, dtype=np.uint8)
        return array_to_png(np.concatenate([pictures[0], gap, pictures[1]], axis=1),
                            size=PANEL * 2)

    def describe(self) -> str:
        method = self.method_menu.value
        if self.step == 0:
            return f"{method}: left and right are the trained model's map"
        k = self.step - 1
        return (f"left: trained; right: randomised {self.step_slider.value} &middot; {method}: "
                f"rank correlation {self.cascade.rank_correlation[method][k]:.2f}, "
                f"SSIM {self.cascade.ssim[method][k]:.2f} (white = largest |map|)")


class TokenExplorer(_Explorer):
    """Pick an image, a transformer block and a method; see the map over the image, with the
    object's box drawn when ``boxes`` gives one ``(top, left, bottom, right)``.

    ``block`` counts from 0 like the layer names (``blocks.0`` ... ``blocks.{depth - 1}``).
    ``"Grad-CAM"``: ``grad_cam`` at the block's ``norm1`` (its tokens laid on the patch grid);
    ``"rollout"``: ``attention_rollout`` through blocks 0 to this one. ``images`` maps
    names to preprocessed ``(1, 3, H, W)`` tensors; the class is each image's top class. A map is
    computed once per (image, block, method) and kept.
    """

    METHODS = ("Grad-CAM", "rollout")

    def __init__(self, model: LessonModel, images: dict[str, torch.Tensor],
                 boxes: dict[str, Sequence[int]] | None = None, *,
                 discard_ratio: float = 0.9) -> None:
        self.model, self.images = model, dict(images)
        self.boxes = {name: [int(v) for v in box] for name, box in (boxes or {}).items()}
        self.discard_ratio = discard_ratio
        self.depth = len(model.model.blocks)
        self._cache: dict[tuple, bytes] = {}
        names = list(self.images)
        self.image_menu = widgets.Dropdown(options=names, value=names[0], description="image")
        self.block_slider = widgets.IntSlider(self.depth - 1, 0, self.depth - 1,
                                              description="block", continuous_update=False)
        self.method_buttons = widgets.ToggleButtons(options=list(self.METHODS),
                                                    value=self.METHODS[0], description="method")
        self._make_outputs()
        for control in (self.image_menu, self.block_slider, self.method_buttons):
            control.observe(self._show, names="value")
        self.widget = widgets.VBox([self.image_menu, self.block_slider, self.method_buttons,
                                    self.picture, self.status])
        self._show()

    def heatmap(self, image: str, block: int, method: str) -> torch.Tensor:
        """The map ``(H, W)`` in [0, 1] for one image, block (0 = first) and method."""
        x = self.images[image]
        if method == "Grad-CAM":
            return grad_cam(self.model, x, layer=f"blocks.{block}.norm1")[0]
        return attention_rollout(self.model, x, blocks=block + 1,
                                 discard_ratio=self.discard_ratio)[0]

    def render(self) -> bytes:
        key = (self.image_menu.value, self.block_slider.value, self.method_buttons.value)
        if key not in self._cache:
            x = self.images[key[0]]
            picture = blend(self.model.deprocess(x), self.heatmap(*key).cpu())
            if key[0] in self.boxes:
                top, left, bottom, right = self.boxes[key[0]]
                picture[[top, bottom], left:right + 1] = 255
                picture[top:bottom + 1, [left, right]] = 255
            self._cache[key] = array_to_png(picture, size=PANEL)
        return self._cache[key]

    def describe(self) -> str:
        best = self.model.predict(self.images[self.image_menu.value], k=1)[0][0]
        where = (f"Grad-CAM at blocks.{self.block_slider.value}.norm1"
                 if self.method_buttons.value == "Grad-CAM" else
                 f"attention rollout through blocks 0-{self.block_slider.value}")
        box = " &middot; white: the object's box" if self.image_menu.value in self.boxes else ""
        return (f"{where} for {best.label!r} ({best.probability:.0%}); red = most, "
                f"dark blue = least{box}")
