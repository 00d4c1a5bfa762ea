"""``ClassExplorer``: why would the model say this class? Pick an image, any class and a method.

The maps come from the methods themselves on cached passes (``capture_layer`` + ``class_map``
for Grad-CAM, ``input_pass`` for the gradients): a class switch is one backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch

from ..attribution import input_pass
from ..cam import capture_layer, class_map, grad_cam_weights, score_cam
from ..common import evaluating
from ..hooks import get_layer, layer_roles
from ..maps import as_grey
from ..models import LessonModel
from ..pictures import array_to_png, blend
from ._base import PANEL, _Explorer, _grey, _named_images

__all__ = ["ClassExplorer", "CLASS_METHODS"]


CLASS_METHODS = {  # method -> (what the picture shows, whether it explains a layer)
    "grad_cam": ("Grad-CAM", True),
    "score_cam": ("Score-CAM, fast mode", True),
    "saliency": ("|gradient| (max over RGB)", False),
    "guided_backprop": ("guided backprop, |gradient| (max over RGB)", False),
}


class ClassExplorer(_Explorer):
    """Pick an image, a class (any of the model's classes; the image's top classes come first)
    and, for the CAM methods, a layer; see why the model would say that class.

    ``methods``: any of ``grad_cam``, ``score_cam`` (fast mode, ``top_k`` channels), ``saliency``,
    ``guided_backprop``; with more than one a method menu appears. Type in the ``search`` box to
    find a class by name. Grad-CAM and saliency cache one forward pass per image (and layer) with
    its graph: a class switch runs only a backward pass and reuses the ``helpers`` core, so each
    picture equals ``grad_cam(model, x, class, layer=...)`` / ``as_grey(saliency(...))``. The
    slower methods cache each picture once drawn.
    """

    def __init__(self, model: LessonModel, images: Sequence[str] | dict, *,
                 methods: Sequence[str] = ("grad_cam",), layers: Sequence[str] | None = None,
                 top: int = 10, top_k: int = 32) -> None:
        unknown = [m for m in methods if m not in CLASS_METHODS]
        if unknown or not methods:
            raise ValueError(f"methods must be among {', '.join(CLASS_METHODS)}; got {unknown}")
        self.model, self.top, self.top_k = model, top, top_k
        self.images = _named_images(images)
        roles = layer_roles(model)
        layers = list(layers or dict.fromkeys([*roles.stages[-3:], roles.cam_layer]))
        for layer in layers:
            get_layer(model, layer)
        self._passes: dict[tuple, object] = {}
        self._maps: dict[tuple, torch.Tensor] = {}
        names = list(self.images)
        self.image_menu = widgets.Dropdown(options=names, value=names[0], description="image")
        self.method_menu = widgets.Dropdown(options=list(methods), value=methods[0],
                                            description="method")
        self.layer_menu = widgets.Dropdown(options=layers, value=layers[-1], description="layer")
        options = self._class_options(names[0])
        self.class_menu = widgets.Dropdown(options=options, value=options[0][1],
                                           description="class",
                                           layout=widgets.Layout(width="480px"))
        self.search = widgets.Combobox(options=sorted(model.labels), ensure_option=True,
                                       placeholder="type a class name", description="search")
        self._make_outputs()
        self.image_menu.observe(self._image_changed, names="value")
        for control in (self.class_menu, self.method_menu, self.layer_menu):
            control.observe(self._show, names="value")
        self.search.observe(self._searched, names="value")
        controls = [self.image_menu, self.class_menu, self.search]
        if len(methods) > 1:
            controls.append(self.method_menu)
        if any(CLASS_METHODS[m][1] for m in methods):
            controls.append(self.layer_menu)
        self.widget = widgets.VBox([widgets.HBox(controls[:2]), widgets.HBox(controls[2:]),
                                    self.picture, self.status])
        self._show()

    def photo(self, image: str) -> tuple[torch.Tensor, np.ndarray]:
        """``(x, photo)``: the preprocessed batch ``(1, 3, H, W)`` and the picture it shows."""
        key = ("photo", image)
        if key not in self._passes:
            x = self.model.preprocess(self.images[image])
            self._passes[key] = (x, self.model.deprocess(x))
        return self._passes[key]

    def forward(self, image: str, layer: str | None = None, rule: str | None = None):
        """Cached forward pass with its graph: a ``LayerPass`` at ``layer`` (the CAM methods), or
        an ``InputPass`` with the ReLU backward ``rule`` (``layer=None``: input gradients)."""
        key = ("pass", image, layer, rule)
        if key not in self._passes:
            x, _ = self.photo(image)
            self._passes[key] = (capture_layer(self.model, x, layer=layer) if layer is not None
                                 else input_pass(self.model, x, rule=rule))
        return self._passes[key]

    def heatmap(self, image: str, target: int, *, method: str | None = None,
                layer: str | None = None) -> torch.Tensor:
        """The map ``(H, W)`` in [0, 1] for one image and class (default: the menus' method and
        layer): ``grad_cam`` / ``as_grey(saliency)`` / ``as_grey(guided_backprop)`` on a cached
        pass (one backward per class), ``score_cam`` cached per picture."""
        method = method or self.method_menu.value
        layer = layer or self.layer_menu.value
        index = torch.tensor([target], device=self.model.device)
        if method == "grad_cam":
            layer_pass = self.forward(image, layer).for_target(index)
            return class_map(layer_pass, functools.partial(grad_cam_weights, keep_graph=True))[0]
        if method in ("saliency", "guided_backprop"):
            rule = "guided" if method == "guided_backprop" else None
            return as_grey(self.forward(image, rule=rule).gradient(index, keep_graph=True))[0]
        key = (method, image, layer, target)
        if key not in self._maps:
            x, _ = self.photo(image)
            self._maps[key] = score_cam(self.model, x, index, layer=layer, top_k=self.top_k,
                                        progress=False)[0]
        return self._maps[key]

    def render(self) -> bytes:
        _, photo = self.photo(self.image_menu.value)
        heat = self.heatmap(self.image_menu.value, self.class_menu.value).cpu()
        if not CLASS_METHODS[self.method_menu.value][1]:  # pixel-fine: grey reads better
            return array_to_png(_grey(heat.numpy()), size=PANEL)
        return array_to_png(blend(photo, heat), size=PANEL)

    def describe(self) -> str:
        method = self.method_menu.value
        what, at_layer = CLASS_METHODS[method]
        where = f" at {self.layer_menu.value}" if at_layer else ""
        colours = "red = most evidence, dark blue = none" if at_layer else \
            "white = pixels that change the score most"
        return f"{what}{where} for class {self.class_menu.label!r} ({colours})"

    def _class_options(self, image: str) -> list[tuple[str, int]]:
        """Every class as a dropdown option ``(label (probability), index)``: the image's
        ``top`` classes first, then the others alphabetically."""
        x, _ = self.photo(image)
        with torch.no_grad(), evaluating(self.model):
            probs = self.model(x).softmax(dim=1)[0]
        order = probs.argsort(descending=True).tolist()
        first = order[:self.top]
        rest = sorted(order[self.top:], key=lambda i: self.model.labels[i].lower())
        return [(f"{self.model.labels[i]} ({probs[i]:.0%})", i) for i in first + rest]

    def _searched(self, change=None) -> None:
        if self.search.value in self.model.labels:
            self.class_menu.value = self.model.labels.index(self.search.value)

    def _show(self, change=None) -> None:
        if self.class_menu.value is not None:  # None only while the options are replaced
            super()._show()

    def _image_changed(self, change=None) -> None:
        self.status.value = "<i>working...</i>"
        self.search.value = ""  # the old search belonged to the old image's class list
        options = self._class_options(self.image_menu.value)
        self.class_menu.unobserve(self._show, names="value")
        try:
            with self.class_menu.hold_sync():  # options and value reach the browser together
                self.class_menu.options = options
                self.class_menu.value = options[0][1]
        finally:
            self.class_menu.observe(self._show, names="value")
        self._show()
