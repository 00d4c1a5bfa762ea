"""Slider explorers for the lessons. Heavy work (forward passes) runs once per image and is
cached; a slider move only slices a cached tensor and encodes a small PNG for an
``ipywidgets.Image`` (tens of milliseconds, against hundreds for a matplotlib redraw).

Every explorer has ``.widget`` (what the notebook displays), ``.render()`` (the current picture as
PNG bytes, also used by tests and benchmarks) and displays itself when it is a cell's last value.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import re
import textwrap
from collections.abc import Sequence
from typing import Callable

import ipywidgets as widgets
import numpy as np
import torch

from .attribution import guided_backprop
from .cam import cam_from_weights, capture_layer, grad_cam_weights, score_cam
from .common import evaluating
from .hooks import conv_layers, get_layer, layer_roles, record
from .models import LessonModel
from .plotting import (
    ACTIVATION_CMAP,
    array_to_png,
    as_grey,
    blend,
    colorize,
    kernel_mosaic,
)

__all__ = ["FeatureMapExplorer", "FilterExplorer", "ClassExplorer", "RunExplorer"]

PANEL = 256  # pixels per picture in the explorers


class _Explorer:
    """The base of every explorer: ``picture`` and ``status`` below the controls, a redraw that
    reports errors in the status line instead of killing the widget, and a display that also
    stores the first picture as a plain PNG, so a saved notebook shows it on GitHub or nbviewer.
    Subclasses set ``self.widget`` and implement ``render()`` (PNG bytes) and ``describe()``."""

    widget: widgets.Widget

    def _make_outputs(self, width: int = PANEL, height: int = PANEL) -> None:
        self.picture = widgets.Image(format="png", width=width, height=height)
        self.status = widgets.HTML()

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle = dict(bundle[0] if isinstance(bundle, tuple) else bundle)
        caption = f"{type(self).__name__}: {_plain(self.status.value)}"
        if self.picture.value:  # the live widget wins in Jupyter; static viewers show the PNG
            snapshot = captioned_png(bytes(self.picture.value), caption + "  (a snapshot: run "
                                     "the notebook for the controls)")
            bundle["image/png"] = base64.b64encode(snapshot).decode("ascii")
        bundle["text/plain"] = caption
        return bundle

    def _show(self, change=None) -> None:
        try:
            self.picture.value = self.render()
            self.status.value = self.describe()
        except Exception as error:  # noqa: BLE001 - a failed redraw must not kill the widget
            self.status.value = f"<b style='color:#b00'>could not draw: {error}</b>"


class _LayerChannelExplorer(_Explorer):
    """An explorer with a layer slider and a channel slider whose range follows the layer.
    Subclasses implement ``channel_count(layer)``."""

    def _make_layer_controls(self, layers: Sequence[str], channel_label: str,
                             width: str = "420px") -> None:
        self.layers = list(layers)
        self.layer_slider = widgets.SelectionSlider(
            options=self.layers, value=self.layers[0], description="layer",
            continuous_update=False, layout=widgets.Layout(width=width))
        self.channel_slider = widgets.IntSlider(0, 0, 0, description=channel_label,
                                                layout=widgets.Layout(width=width))
        self.layer_slider.observe(self._layer_changed, names="value")
        self.channel_slider.observe(self._show, names="value")

    def channel_count(self, layer: str) -> int:
        raise NotImplementedError

    def _layer_changed(self, change=None) -> None:
        channels = self.channel_count(self.layer_slider.value)
        with self.channel_slider.hold_trait_notifications():
            self.channel_slider.max = channels - 1
            self.channel_slider.value = min(self.channel_slider.value, channels - 1)
        self._show()


def _plain(html_text: str) -> str:
    """The status line's HTML as plain text."""
    return html.unescape(re.sub(r"<[^>]+>", "", html_text))


def captioned_png(png: bytes, caption: str, *, width_chars: int = 60) -> bytes:
    """The picture ``png`` with ``caption`` written below it (wrapped), as PNG bytes: what a
    saved notebook shows of an explorer on GitHub or nbviewer, where no widget runs."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.open(io.BytesIO(png)).convert("RGB")
    font = ImageFont.load_default()
    lines = textwrap.wrap(caption, width=max(20, width_chars * picture.width // 512))
    line_height = 14
    canvas = Image.new("RGB", (picture.width, picture.height + line_height * len(lines) + 8),
                       "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, picture.height + 4 + i * line_height), line, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _named_images(images: Sequence[str] | dict) -> dict:
    return dict(images) if isinstance(images, dict) else {name: name for name in images}


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


class FilterExplorer(_LayerChannelExplorer):
    """Pick a conv layer and an output channel; see its kernel for every input channel
    (RGB tiles for a first layer). Weights are read once per layer; no forward pass at all."""

    def __init__(self, model: LessonModel, *, layers: Sequence[str] | None = None) -> None:
        self.model = model
        self._make_layer_controls(layers or conv_layers(model), "filter", width="520px")
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
                f"{self.channel_slider.value}: {kind}; |w| max {w.abs().max():.3f}")


def _frame(mosaic: np.ndarray, tile: int, index: int, columns: int = 16) -> np.ndarray:
    """Draw a black frame around tile ``index`` of a mosaic made with ``gap=1``."""
    framed = np.pad(mosaic, ((1, 1), (1, 1), (0, 0)), constant_values=255)
    row, col = divmod(index, columns)
    top, left = row * (tile + 1), col * (tile + 1)
    framed[top: top + tile + 2, [left, left + tile + 1]] = 0
    framed[[top, top + tile + 2 - 1], left: left + tile + 2] = 0
    return framed


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
                                           layout=widgets.Layout(width="420px"))
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

    def forward(self, image: str, layer: str | None = None):
        """Cached forward pass with its graph: a ``LayerPass`` at ``layer`` (Grad-CAM), or
        ``(x_leaf, logits)`` for input gradients (``layer=None``)."""
        key = ("pass", image, layer)
        if key not in self._passes:
            x, _ = self.photo(image)
            if layer is not None:
                self._passes[key] = capture_layer(self.model, x, layer=layer)
            else:
                with evaluating(self.model), torch.enable_grad():
                    leaf = x.detach().requires_grad_(True)
                    self._passes[key] = (leaf, self.model(leaf.clone()))
        return self._passes[key]

    def heatmap(self, image: str, target: int, *, method: str | None = None,
                layer: str | None = None) -> torch.Tensor:
        """The map ``(H, W)`` in [0, 1] for one image and class (default: the menus' method and
        layer)."""
        method = method or self.method_menu.value
        layer = layer or self.layer_menu.value
        index = torch.tensor([target], device=self.model.device)
        if method == "grad_cam":
            layer_pass = self.forward(image, layer)
            weights = grad_cam_weights(dataclasses.replace(layer_pass, index=index),
                                       keep_graph=True)
            size = tuple(layer_pass.x.shape[-2:])
            return cam_from_weights(layer_pass.activations, weights, size)[0]
        if method == "saliency":
            leaf, logits = self.forward(image)
            (grad,) = torch.autograd.grad(logits[0, target], leaf, retain_graph=True)
            return as_grey(grad)[0]
        key = (method, image, layer if CLASS_METHODS[method][1] else None, target)
        if key not in self._maps:
            x, _ = self.photo(image)
            self._maps[key] = score_cam(self.model, x, index, layer=layer, top_k=self.top_k,
                                        progress=False)[0] if method == "score_cam" else \
                as_grey(guided_backprop(self.model, x, index))[0]
        return self._maps[key]

    def render(self) -> bytes:
        _, photo = self.photo(self.image_menu.value)
        heat = self.heatmap(self.image_menu.value, self.class_menu.value).cpu()
        if not CLASS_METHODS[self.method_menu.value][1]:  # pixel-fine: grey reads better
            return array_to_png(colorize(heat.numpy(), "gray", 0.0, 1.0), size=PANEL)
        return array_to_png(blend(photo, heat), size=PANEL)

    def describe(self) -> str:
        method = self.method_menu.value
        what, at_layer = CLASS_METHODS[method]
        where = f" at {self.layer_menu.value}" if at_layer else ""
        colours = "red = most evidence, blue = none" if at_layer else \
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
    """Browse a sanity check (``helpers.faithfulness.cascading_randomization``): pick a method
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
        pictures = [colorize(m, "gray", 0.0, 1.0) for m in (trained, self.current().cpu().numpy())]
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
        from .cam import grad_cam
        from .rollout import attention_rollout

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
                f"blue = least{box}")
