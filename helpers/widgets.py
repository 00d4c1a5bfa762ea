"""Slider explorers for the lessons. Heavy work (forward passes) runs once per image and is
cached; a slider move only slices a cached tensor and encodes a small PNG for an
``ipywidgets.Image`` (tens of milliseconds, against hundreds for a matplotlib redraw).

Every explorer has ``.widget`` (what the notebook displays), ``.render()`` (the current picture as
PNG bytes, also used by tests and benchmarks) and displays itself when it is a cell's last value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import ipywidgets as W
import numpy as np
import torch

from .attribution import as_grey
from .cam import cam_from_weights, grad_cam_weights
from .hooks import evaluating, get_layer, layer_roles, record, split_forward
from .models import LessonModel
from .plotting import (
    ACTIVATION_CMAP,
    array_to_png,
    blend,
    colorize,
    kernel_mosaic,
)

__all__ = ["FeatureMapExplorer", "FilterExplorer", "ClassExplorer", "RunExplorer"]

PANEL = 256  # pixels per picture in the explorers


class _Explorer:
    widget: W.Widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _show(self, change=None) -> None:
        try:
            self.picture.value = self.render()
            self.status.value = self.describe()
        except Exception as error:  # noqa: BLE001 - a failed redraw must not kill the widget
            self.status.value = f"<b style='color:#b00'>could not draw: {error}</b>"


class FeatureMapExplorer(_Explorer):
    """Pick an image, a layer and a channel; see that channel's feature map beside the input.

    One forward pass per image records every layer in ``layers`` (default: the model's conv
    stages); the channel slider only slices the cached ``(C, H, W)`` activation.
    """

    def __init__(self, model: LessonModel, images: Sequence[str] | dict,
                 layers: Sequence[str] | None = None) -> None:
        self.model = model
        self.images = dict(images) if isinstance(images, dict) else {i: i for i in images}
        self.layers = list(layers or layer_roles(model).stages)
        for layer in self.layers:
            get_layer(model, layer)  # fail now, with the valid names, not inside a callback
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self._inputs: dict[str, bytes] = {}
        names = list(self.images)
        self.image_menu = W.Dropdown(options=names, value=names[0], description="image")
        self.layer_slider = W.SelectionSlider(options=self.layers, value=self.layers[0],
                                              description="layer", continuous_update=False,
                                              layout=W.Layout(width="420px"))
        self.channel_slider = W.IntSlider(0, 0, 0, description="channel",
                                          layout=W.Layout(width="420px"))
        self.input_picture = W.Image(format="png", width=PANEL, height=PANEL)
        self.picture = W.Image(format="png", width=PANEL, height=PANEL)
        self.status = W.HTML()
        self.image_menu.observe(self._image_changed, names="value")
        self.layer_slider.observe(self._layer_changed, names="value")
        self.channel_slider.observe(self._show, names="value")
        self.widget = W.VBox([
            W.HBox([self.image_menu]), self.layer_slider, self.channel_slider,
            W.HBox([self.input_picture, self.picture]), self.status,
        ])
        self._image_changed()

    def activations(self, image: str) -> dict[str, torch.Tensor]:
        """All layers' activations ``{layer: (C, H, W)}`` for one image (cached)."""
        if image not in self._cache:
            x = self.model.preprocess(self.images[image])
            with record(self.model, self.layers) as rec, torch.no_grad():
                self.model.model(x)
            self._cache[image] = {name: rec[name][0].cpu() for name in self.layers}
            self._inputs[image] = array_to_png(self.model.deprocess(x), size=PANEL)
        return self._cache[image]

    @property
    def current(self) -> torch.Tensor:
        """The selected channel's map ``(H, W)``."""
        acts = self.activations(self.image_menu.value)[self.layer_slider.value]
        return acts[self.channel_slider.value]

    def render(self) -> bytes:
        return array_to_png(colorize(self.current.numpy(), ACTIVATION_CMAP), size=PANEL)

    def describe(self) -> str:
        fmap = self.current
        acts = self.activations(self.image_menu.value)[self.layer_slider.value]
        return (f"{self.layer_slider.value}: {acts.shape[0]} channels of "
                f"{acts.shape[1]}x{acts.shape[2]} &middot; channel {self.channel_slider.value}: "
                f"min {fmap.min():.2f}, max {fmap.max():.2f}, mean {fmap.mean():.2f} "
                f"(colour: dark = its lowest, yellow = its highest)")

    def _image_changed(self, change=None) -> None:
        self.activations(self.image_menu.value)
        self.input_picture.value = self._inputs[self.image_menu.value]
        self._layer_changed()

    def _layer_changed(self, change=None) -> None:
        channels = self.activations(self.image_menu.value)[self.layer_slider.value].shape[0]
        with self.channel_slider.hold_trait_notifications():
            self.channel_slider.max = channels - 1
            self.channel_slider.value = min(self.channel_slider.value, channels - 1)
        self._show()


class FilterExplorer(_Explorer):
    """Pick a conv layer and an output channel; see its kernel for every input channel
    (RGB tiles for a first layer). Weights are read once per layer; no forward pass at all."""

    def __init__(self, model: LessonModel, layers: Sequence[str] | None = None) -> None:
        self.model = model
        modules = dict(model.model.named_modules())
        self.layers = list(layers or [n for n, m in modules.items()
                                      if isinstance(m, torch.nn.Conv2d)])
        self.layer_slider = W.SelectionSlider(options=self.layers, value=self.layers[0],
                                              description="layer", continuous_update=False,
                                              layout=W.Layout(width="520px"))
        self.channel_slider = W.IntSlider(0, 0, 0, description="filter",
                                          layout=W.Layout(width="520px"))
        self.picture = W.Image(format="png", width=PANEL * 2, height=PANEL)
        self.status = W.HTML()
        self.layer_slider.observe(self._layer_changed, names="value")
        self.channel_slider.observe(self._show, names="value")
        self.widget = W.VBox([self.layer_slider, self.channel_slider, self.picture, self.status])
        self._layer_changed()

    def _weights(self, name: str) -> torch.Tensor:
        """A convolution's weight ``(C_out, C_in, k, k)`` on the CPU (a view, no copy)."""
        return get_layer(self.model, name)[1].weight.detach().cpu()

    @property
    def current(self) -> torch.Tensor:
        """The selected filter ``(1, C_in, k, k)``."""
        weight = self._weights(self.layer_slider.value)
        return weight[self.channel_slider.value: self.channel_slider.value + 1]

    def render(self) -> bytes:
        weight = self.current
        if weight.shape[1] == 3:  # a first layer: all filters as RGB tiles, the chosen one framed
            everything = self._weights(self.layer_slider.value)
            mosaic = kernel_mosaic(everything, columns=16, gap=1)
            return array_to_png(_frame(mosaic, everything.shape[-1], self.channel_slider.value),
                                size=PANEL * 2)
        columns = int(np.ceil(np.sqrt(weight.shape[1])))
        return array_to_png(kernel_mosaic(weight, columns=columns, gap=1), size=PANEL)

    def describe(self) -> str:
        weight = self._weights(self.layer_slider.value)
        w = self.current
        kind = "RGB tiles of every filter (selected one framed)" if weight.shape[1] == 3 else (
            f"its {w.shape[1]} kernels, one per input channel (red +, blue -, white 0)")
        return (f"{self.layer_slider.value}: weight {tuple(weight.shape)} &middot; filter "
                f"{self.channel_slider.value}: {kind}; |w| max {w.abs().max():.3f}")

    def _layer_changed(self, change=None) -> None:
        out_channels = self._weights(self.layer_slider.value).shape[0]
        with self.channel_slider.hold_trait_notifications():
            self.channel_slider.max = out_channels - 1
            self.channel_slider.value = min(self.channel_slider.value, out_channels - 1)
        self._show()


def _frame(mosaic: np.ndarray, tile: int, index: int, columns: int = 16) -> np.ndarray:
    """Draw a black frame around tile ``index`` of a mosaic made with ``gap=1``."""
    framed = np.pad(mosaic, ((1, 1), (1, 1), (0, 0)), constant_values=255)
    row, col = divmod(index, columns)
    top, left = row * (tile + 1), col * (tile + 1)
    framed[top: top + tile + 2, [left, left + tile + 1]] = 0
    framed[[top, top + tile + 2 - 1], left: left + tile + 2] = 0
    return framed


class ClassExplorer(_Explorer):
    """Pick an image and one of its top classes; see why the model would say that class.

    ``method="grad_cam"`` (at ``layer``, default the last conv layer) or ``"saliency"``. One
    forward pass per image is cached with its autograd graph; a class switch runs only a backward
    pass (to the layer for Grad-CAM, to the input for saliency) and reuses the ``helpers`` core,
    so each picture equals ``grad_cam(model, x, class)`` / ``as_grey(saliency(...))``.
    """

    def __init__(self, model: LessonModel, images: Sequence[str] | dict, method: str = "grad_cam",
                 layer: str | None = None, top: int = 10) -> None:
        if method not in ("grad_cam", "saliency"):
            raise ValueError("method must be 'grad_cam' or 'saliency'")
        self.model, self.method, self.top = model, method, top
        self.layer = layer or layer_roles(model).last_conv
        self.images = dict(images) if isinstance(images, dict) else {i: i for i in images}
        self._forward: dict[str, tuple] = {}
        names = list(self.images)
        self.image_menu = W.Dropdown(options=names, value=names[0], description="image")
        options = self._class_options(names[0])
        self.class_menu = W.Dropdown(options=options, value=options[0][1], description="class",
                                     layout=W.Layout(width="420px"))
        self.picture = W.Image(format="png", width=PANEL, height=PANEL)
        self.status = W.HTML()
        self.image_menu.observe(self._image_changed, names="value")
        self.class_menu.observe(self._show, names="value")
        self.widget = W.VBox([W.HBox([self.image_menu, self.class_menu]), self.picture,
                              self.status])
        self._show()

    def forward(self, image: str) -> tuple:
        """Cached ``(x, source, logits, photo)``: ``source`` is the layer's activation (Grad-CAM)
        or the input leaf (saliency) that ``logits`` depends on, graph retained."""
        if image not in self._forward:
            x = self.model.preprocess(self.images[image])
            with evaluating(self.model.model), torch.enable_grad():
                if self.method == "grad_cam":
                    source, logits = split_forward(self.model, x, self.layer)
                else:
                    source = x.detach().requires_grad_(True)
                    logits = self.model.model(source.clone())
            self._forward[image] = (x, source, logits, self.model.deprocess(x))
        return self._forward[image]

    def heatmap(self, image: str, target: int) -> torch.Tensor:
        """The map ``(H, W)`` in [0, 1] for one image and class (one backward pass)."""
        x, source, logits, _ = self.forward(image)
        index = torch.tensor([target], device=logits.device)
        if self.method == "grad_cam":
            weights = grad_cam_weights(source, logits, index, retain_graph=True)
            return cam_from_weights(source.detach(), weights, tuple(x.shape[-2:]))[0]
        (grad,) = torch.autograd.grad(logits[0, target], source, retain_graph=True)
        return as_grey(grad)[0]

    def render(self) -> bytes:
        _, _, _, photo = self.forward(self.image_menu.value)
        heat = self.heatmap(self.image_menu.value, self.class_menu.value).cpu()
        if self.method == "saliency":  # pixel-fine: a grey map reads better than an overlay
            return array_to_png(colorize(heat.numpy(), "gray", 0.0, 1.0), size=PANEL)
        return array_to_png(blend(photo, heat), size=PANEL)

    def describe(self) -> str:
        if self.method == "grad_cam":
            return (f"Grad-CAM at {self.layer} for class {self.class_menu.label!r} "
                    "(red = most evidence, blue = none)")
        return (f"|gradient| (max over RGB) for class {self.class_menu.label!r} "
                "(white = pixels that change the score most)")

    def _class_options(self, image: str) -> list[tuple[str, int]]:
        """The image's top classes as dropdown options ``(label (probability), index)``."""
        _, _, logits, _ = self.forward(image)
        top = logits.detach().softmax(dim=1)[0].topk(self.top)
        return [(f"{self.model.labels[i]} ({p:.0%})", i)
                for p, i in zip(top.values.tolist(), top.indices.tolist())]

    def _show(self, change=None) -> None:
        if self.class_menu.value is not None:  # None only while the options are replaced
            super()._show()

    def _image_changed(self, change=None) -> None:
        options = self._class_options(self.image_menu.value)
        self.class_menu.unobserve(self._show, names="value")
        try:
            with self.class_menu.hold_sync():  # options and value reach the browser together
                self.class_menu.options = options
                self.class_menu.value = options[0][1]
        finally:
            self.class_menu.observe(self._show, names="value")
        self._show()



class RunExplorer(_Explorer):
    """Controls, a Run button and a picture, for computations too slow to follow a slider
    (gradient ascent, deep dream). ``compute(**values)`` returns ``uint8 (H, W, 3)``; results
    are cached per combination of control values, so going back to one is instant."""

    def __init__(self, controls: dict[str, W.ValueWidget],
                 compute: Callable[..., np.ndarray], size: int = PANEL) -> None:
        self.controls, self.compute, self.size = controls, compute, size
        self._cache: dict[tuple, bytes] = {}
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.picture = W.Image(format="png", width=size, height=size)
        self.status = W.HTML("Choose, then press <b>Run</b>.")
        self.button.on_click(self._run)
        self.widget = W.VBox([*controls.values(), self.button, self.picture, self.status])

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
