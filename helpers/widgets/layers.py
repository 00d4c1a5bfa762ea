"""Explorers of one layer: its feature maps (``FeatureMapExplorer``) and its filters
(``FilterExplorer``). A forward pass per image is cached; a slider move slices a cached tensor
and encodes a small PNG (tens of milliseconds, against hundreds for a matplotlib redraw)."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch

from ..hooks import conv_layers, get_layer, layer_roles, record
from ..models import LessonModel
from ..pictures import ACTIVATION_CMAP, SIGNED_CMAP, array_to_png, colorize, kernel_mosaic
from ._base import PANEL, _LayerChannelExplorer, _named_images

__all__ = ["FeatureMapExplorer", "FilterExplorer"]


class FeatureMapExplorer(_LayerChannelExplorer):
    """Pick an image, a layer and a channel; see that channel's feature map beside the input.

    One forward pass per image records every layer in ``layers`` (default: the model's conv
    stages); the channel slider only slices the cached ``(C, H, W)`` activation.
    """

    def __init__(self, model: LessonModel, images: Sequence[str] | dict, *,
                 layers: Sequence[str] | None = None) -> None:
        self.model = model
        self.images = _named_images(images)
        layers = list(layers or layer_roles(model).stages)
        for layer in layers:
            get_layer(model, layer)  # fail now, with the valid names, not inside a callback
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self._inputs: dict[str, bytes] = {}
        names = list(self.images)
        self.image_menu = widgets.Dropdown(options=names, value=names[0], description="image")
        self._make_layer_controls(layers, "channel")
        self.input_picture = widgets.Image(format="png", width=PANEL, height=PANEL)
        self._make_outputs()
        self.image_menu.observe(self._image_changed, names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.image_menu]), self.layer_slider, self.channel_slider,
            widgets.HBox([self.input_picture, self.picture]), self.status,
        ])
        self._image_changed()

    def activations(self, image: str) -> dict[str, torch.Tensor]:
        """All layers' activations ``{layer: (C, H, W)}`` for one image (cached)."""
        if image not in self._cache:
            x = self.model.preprocess(self.images[image])
            with record(self.model, self.layers) as rec, torch.no_grad():
                self.model(x)
            self._cache[image] = {name: rec[name][0].cpu() for name in self.layers}
            self._inputs[image] = array_to_png(self.model.deprocess(x), size=PANEL)
        return self._cache[image]

    def channel_count(self, layer: str) -> int:
        return self.activations(self.image_menu.value)[layer].shape[0]

    @property
    def current(self) -> torch.Tensor:
        """The selected channel's map ``(H, W)``."""
        acts = self.activations(self.image_menu.value)[self.layer_slider.value]
        return acts[self.channel_slider.value]

    def signed(self) -> bool:
        """Whether the current layer's outputs take both signs (a projection without ReLU6):
        those are drawn on a diverging scale symmetric around 0, never from min to max."""
        return bool(self.activations(self.image_menu.value)[self.layer_slider.value].min() < 0)

    def render(self) -> bytes:
        fmap = self.current.numpy()
        if self.signed():
            bound = max(float(np.abs(fmap).max()), 1e-8)
            return array_to_png(colorize(fmap, SIGNED_CMAP, -bound, bound), size=PANEL)
        return array_to_png(colorize(fmap, ACTIVATION_CMAP), size=PANEL)

    def snapshot_pictures(self) -> list[bytes]:
        return [bytes(self.input_picture.value), bytes(self.picture.value)]

    def describe(self) -> str:
        fmap = self.current
        acts = self.activations(self.image_menu.value)[self.layer_slider.value]
        colours = ("signed layer: red > 0, blue < 0, white 0, scaled to its largest |value|"
                   if self.signed() else "dark = its lowest, yellow = its highest")
        return (f"{self.layer_slider.value}: {acts.shape[0]} channels of "
                f"{acts.shape[1]}x{acts.shape[2]} &middot; channel {self.channel_slider.value}: "
                f"min {fmap.min():.2f}, max {fmap.max():.2f}, mean {fmap.mean():.2f} "
                f"(colour: {colours})")

    def _image_changed(self, change=None) -> None:
        self.activations(self.image_menu.value)
        self.input_picture.value = self._inputs[self.image_menu.value]
        self._layer_changed()


class FilterExplorer(_LayerChannelExplorer):
    """Pick a conv layer and an output channel; see its kernel for every input channel
    (RGB tiles for a first layer). Weights are read once per layer; no forward pass at all."""

    def __init__(self, model: LessonModel, *, layers: Sequence[str] | None = None) -> None:
        self.model = model
        self._make_layer_controls(layers or conv_layers(model), "filter", width="560px")
        self._make_outputs(width=PANEL * 2, height=PANEL)
        self.widget = widgets.VBox([self.layer_slider, self.channel_slider, self.picture,
                                    self.status])
        self._layer_changed()

    def weights(self, layer: str) -> torch.Tensor:
        """A convolution's weight ``(C_out, C_in, k, k)`` on the CPU (a view, no copy)."""
        return get_layer(self.model, layer)[1].weight.detach().cpu()

    def channel_count(self, layer: str) -> int:
        return self.weights(layer).shape[0]

    @property
    def current(self) -> torch.Tensor:
        """The selected filter ``(1, C_in, k, k)``."""
        weight = self.weights(self.layer_slider.value)
        return weight[self.channel_slider.value: self.channel_slider.value + 1]

    def render(self) -> bytes:
        weight = self.current
        if weight.shape[1] == 3:  # a first layer: all filters as RGB tiles, the chosen one framed
            everything = self.weights(self.layer_slider.value)
            mosaic = kernel_mosaic(everything, columns=16, gap=1)
            return array_to_png(_frame(mosaic, everything.shape[-1], self.channel_slider.value),
                                size=PANEL * 2)
        columns = int(np.ceil(np.sqrt(weight.shape[1])))
        return array_to_png(kernel_mosaic(weight, columns=columns, gap=1), size=PANEL)

    def describe(self) -> str:
        weight = self.weights(self.layer_slider.value)
        w = self.current
        kind = "RGB tiles of every filter (selected one framed)" if weight.shape[1] == 3 else (
            f"its {w.shape[1]} kernels, one per input channel (red +, blue -, white 0)")
        return (f"{self.layer_slider.value}: weight {tuple(weight.shape)} &middot; filter "
                f"{self.channel_slider.value}: {kind}; this filter's largest |w| "
                f"{w.abs().max():.3f}")


def _frame(mosaic: np.ndarray, tile: int, index: int, columns: int = 16) -> np.ndarray:
    """Draw a black frame around tile ``index`` of a mosaic made with ``gap=1``."""
    framed = np.pad(mosaic, ((1, 1), (1, 1), (0, 0)), constant_values=255)
    row, col = divmod(index, columns)
    top, left = row * (tile + 1), col * (tile + 1)
    framed[top: top + tile + 2, [left, left + tile + 1]] = 0
    framed[[top, top + tile + 2 - 1], left: left + tile + 2] = 0
    return framed
