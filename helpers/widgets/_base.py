"""What every explorer shares: the picture and status line, a redraw that shows its errors and a
busy state, and the snapshot a saved notebook shows where no widget runs."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np

from ..pictures import colorize

__all__ = ["PANEL", "SNAPSHOT_WIDTH", "snapshot_bundle"]

PANEL = 320  # pixels per picture in the live explorers
SNAPSHOT_WIDTH = 640  # the stored picture is at least this wide: readable on a projector


def _plain(html_text: str) -> str:
    """The status line's HTML as plain text."""
    return html.unescape(re.sub(r"<[^>]+>", "", html_text))


def _encoded(picture) -> tuple[str, bytes]:
    """``(mime, bytes)`` of a PIL picture: PNG when it is small (maps, upscaled activations keep
    their sharp squares), else JPEG of quality 85 (photos and overlays, several times lighter)."""
    png, jpeg = io.BytesIO(), io.BytesIO()
    picture.save(png, format="PNG", optimize=True)
    picture.save(jpeg, format="JPEG", quality=85)
    if png.tell() <= 1.2 * jpeg.tell():
        return "image/png", png.getvalue()
    return "image/jpeg", jpeg.getvalue()


def snapshot_bundle(pngs: Sequence[bytes], caption: str) -> dict[str, str]:
    """What a static viewer (GitHub, nbviewer, the course site) shows of an explorer: an HTML
    figure of the pictures ``pngs`` side by side, scaled to at least ``SNAPSHOT_WIDTH`` pixels
    wide (embedded, PNG or JPEG), with the ``caption`` as text beneath it. One copy of the
    picture only: a notebook stays under 1.5 MB."""
    from PIL import Image

    pictures = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    height = max(p.height for p in pictures)
    gap = 8
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    left = 0
    for p in pictures:
        canvas.paste(p, (left, 0))
        left += p.width + gap
    if canvas.width < SNAPSHOT_WIDTH:
        factor = SNAPSHOT_WIDTH / canvas.width  # small maps stay crisp squares; others smooth
        resample = Image.Resampling.NEAREST if factor >= 2 else Image.Resampling.LANCZOS
        canvas = canvas.resize((SNAPSHOT_WIDTH, round(canvas.height * factor)), resample)
    mime, data = _encoded(canvas)
    encoded = base64.b64encode(data).decode("ascii")
    figure = (f'<figure style="margin:0"><img src="data:{mime};base64,{encoded}" '
              f'width="{canvas.width}" alt="{html.escape(caption)}"/>'
              f'<figcaption style="font-size:14px;max-width:{canvas.width}px">'
              f'{html.escape(caption)}</figcaption></figure>')
    return {"text/html": figure}


class _Explorer:
    """The base of every explorer: ``picture`` and ``status`` below the controls, a redraw that
    says it is working and reports errors in the status line instead of killing the widget, and
    a display that also stores the first picture (``snapshot_bundle``), so a saved notebook shows
    it on GitHub or nbviewer. Subclasses set ``self.widget`` and implement ``render()`` (PNG
    bytes) and ``describe()``; ``snapshot_pictures()`` may add pictures to the snapshot."""

    widget: widgets.Widget

    def _make_outputs(self, width: int = PANEL, height: int = PANEL) -> None:
        self.picture = widgets.Image(format="png", width=width, height=height)
        self.status = widgets.HTML()

    def snapshot_pictures(self) -> list[bytes]:
        return [bytes(self.picture.value)]

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle = dict(bundle[0] if isinstance(bundle, tuple) else bundle)
        caption = f"{type(self).__name__}: {_plain(self.status.value)}"
        if self.picture.value:  # the live widget wins in Jupyter; static viewers show this
            bundle.update(snapshot_bundle(self.snapshot_pictures(), caption + " (a snapshot: "
                                          "run the notebook for the controls)"))
        bundle["text/plain"] = caption
        return bundle

    def _show(self, change=None) -> None:
        self.status.value = "<i>working...</i>"  # sent at once: the old picture is not current
        try:
            self.picture.value = self.render()
            self.status.value = self.describe()
        except Exception as error:  # noqa: BLE001 - a failed redraw must not kill the widget
            self.status.value = (f"<b style='color:#b00'>could not draw: "
                                 f"{html.escape(str(error))}</b>")


class _LayerChannelExplorer(_Explorer):
    """An explorer with a layer slider and a channel slider whose range follows the layer.
    Subclasses implement ``channel_count(layer)``."""

    def _make_layer_controls(self, layers: Sequence[str], channel_label: str,
                             width: str = "480px") -> None:
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
        self.status.value = "<i>working...</i>"
        channels = self.channel_count(self.layer_slider.value)
        with self.channel_slider.hold_trait_notifications():
            self.channel_slider.max = channels - 1
            self.channel_slider.value = min(self.channel_slider.value, channels - 1)
        self._show()


def _named_images(images: Sequence[str] | dict) -> dict:
    return dict(images) if isinstance(images, dict) else {name: name for name in images}


def _grey(values: np.ndarray) -> np.ndarray:
    """A map in [0, 1] ``(H, W)`` as a grey ``uint8 (H, W, 3)`` picture."""
    return colorize(values, "gray", 0.0, 1.0)
