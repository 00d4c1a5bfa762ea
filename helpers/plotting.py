"""Figures for the lessons: image grids, prediction bars, channel grids, heatmap overlays
(matplotlib); ``pictures`` turns arrays into PNG and GIF bytes without a figure.

Conventions across the series: heatmaps in [0, 1] use ``HEATMAP_CMAP`` with a colour bar;
signed maps (gradients, kernels) use ``SIGNED_CMAP`` scaled symmetrically around zero; every
panel has a title.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from .common import check_int
from .maps import as_color, as_grey, split_signs  # the lessons find them here too
from .pictures import (  # the lessons find them here too
    ACTIVATION_CMAP,
    HEATMAP_CMAP,
    SIGNED_CMAP,
    array_to_png,
    blend,
    colorize,
    gif_bytes,
    kernel_mosaic,
    save_gif,
    to_numpy_image,
)

__all__ = [
    "HEATMAP_CMAP",
    "SIGNED_CMAP",
    "show_images",
    "plot_predictions",
    "channel_grid",
    "overlay",
    "show_heatmaps",
    "as_color",
    "as_grey",
    "split_signs",
    "figure_to_png",
    "show_png",
    "to_numpy_image",
    "use_inline_format",
    "kernel_tiles",
    "kernel_mosaic",
    "colorize",
    "array_to_png",
    "blend",
    "gif_bytes",
    "save_gif",
    "animation",
]


def _grid(n: int, columns: int | None, panel: float) -> tuple[Figure, np.ndarray]:
    columns = columns or min(n, 6)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel * columns, panel * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def show_images(images: Sequence, titles: Sequence[str] | None = None, *,
                columns: int | None = None, panel: float = 3.0, cmap: str | None = None) -> Figure:
    """A grid of images with a title on each panel."""
    fig, axes = _grid(len(images), columns, panel)
    for i, image in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(to_numpy_image(image), cmap=cmap)
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    fig.tight_layout()
    return fig


def plot_predictions(image, predictions: Sequence[tuple[str, float]], *, title: str = "",
                     ax_pair=None) -> Figure:
    """The image beside a horizontal bar chart of its top-k ``(label, probability)``."""
    if ax_pair is None:
        fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(8, 3),
                                             gridspec_kw={"width_ratios": [1, 1.3]})
    else:
        ax_img, ax_bar = ax_pair
        fig = ax_img.figure
    ax_img.imshow(to_numpy_image(image))
    ax_img.axis("off")
    label, prob = predictions[0][:2]  # (label, probability) or a Prediction(label, p, index)
    ax_img.set_title(title or f"{label} ({prob:.0%})", fontsize=10)
    labels = [p[0] for p in predictions][::-1]
    probs = [p[1] for p in predictions][::-1]
    bars = ax_bar.barh(labels, probs, color="tab:blue")
    bars[-1].set_color("tab:orange")
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability")
    ax_bar.set_title(f"top-{len(predictions)}", fontsize=10)
    for bar, p in zip(bars, probs):
        ax_bar.text(min(p + 0.02, 0.8), bar.get_y() + bar.get_height() / 2, f"{p:.1%}",
                    va="center", fontsize=9)
    if ax_pair is None:
        fig.tight_layout()
    return fig


def channel_grid(activation: torch.Tensor, channels: Sequence[int] | None = None, *,
                 columns: int = 8, scale: str = "channel", title: str = "",
                 panel: float = 1.4, cmap: str = ACTIVATION_CMAP) -> Figure:
    """Show channels of one feature map ``(C, H, W)`` (or ``(1, C, H, W)``) as a grid.

    ``scale="channel"`` stretches each channel to its own min-max (shows patterns in weak
    channels); ``scale="shared"`` uses one range for all (shows which channels are strong);
    the shared scale gets a colour bar.
    """
    activation = activation.detach().float().cpu()
    if activation.ndim == 4:
        activation = activation[0]
    channels = list(range(min(activation.shape[0], columns * 4))) if channels is None \
        else list(channels)
    if scale not in ("channel", "shared"):
        raise ValueError("scale must be 'channel' or 'shared'")
    maps = activation[channels]
    vmin, vmax = float(maps.min()), float(maps.max())
    fig, axes = _grid(len(channels), min(columns, len(channels)), panel)
    image = None
    for ax, index, fmap in zip(axes.flat, channels, maps):
        if scale == "shared":
            image = ax.imshow(fmap.numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
        else:
            ax.imshow(fmap.numpy(), cmap=cmap)
        ax.set_title(f"ch {index}", fontsize=9)
    return _finish_grid(fig, axes, title, image, "activation")


def _finish_grid(fig: Figure, axes: np.ndarray, title: str, mappable, label: str) -> Figure:
    """Title, tight layout and (when something was drawn on a shared scale) one colour bar."""
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.6, label=label)
    return fig


def overlay(image, heatmap, *, ax=None, alpha: float = 0.5, title: str = "",
            colorbar: bool = True, cmap: str = HEATMAP_CMAP):
    """Draw a heatmap ``(H, W)`` in [0, 1] over an image ``(H, W, 3)`` of the same size."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(to_numpy_image(image))
    shown = ax.imshow(to_numpy_image(heatmap), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    return ax


def show_heatmaps(image, heatmaps: Sequence, titles: Sequence[str], *, panel: float = 3.2,
                  alpha: float = 0.5) -> Figure:
    """The image followed by one overlay per heatmap, one shared colour bar."""
    fig, axes = plt.subplots(1, len(heatmaps) + 1, figsize=(panel * (len(heatmaps) + 1), panel))
    axes[0].imshow(to_numpy_image(image))
    axes[0].set_title("input", fontsize=10)
    axes[0].axis("off")
    for ax, heatmap, title in zip(axes[1:], heatmaps, titles):
        overlay(image, heatmap, ax=ax, alpha=alpha, title=title, colorbar=False)
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1),
                                            cmap=HEATMAP_CMAP)
    fig.colorbar(mappable, ax=list(axes), fraction=0.02, pad=0.02, label="relevance")
    return fig


def figure_to_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a figure to PNG bytes and close it (for ``ipywidgets.Image``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def show_png(fig: Figure, *, colours: int = 128, dpi: int = 100) -> None:
    """Show a figure inline as a PNG of at most ``colours`` colours, and close it: charts and
    line plots stay sharp (JPEG blurs thin lines and small text) and small, unlike photos."""
    from IPython.display import Image as ShownImage
    from IPython.display import display

    check_int("colours", colours, low=2, high=256)
    picture = Image.open(io.BytesIO(figure_to_png(fig, dpi=dpi))).convert("RGB")
    buffer = io.BytesIO()
    picture.quantize(colours).save(buffer, format="PNG", optimize=True)
    display(ShownImage(buffer.getvalue()))


def use_inline_format(*, jpeg_quality: int = 88) -> None:
    """Show inline figures as JPEG of ``jpeg_quality`` (photos and heatmaps as PNG would make each
    notebook several MB); outside IPython, nothing to configure."""
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    set_matplotlib_formats("jpeg", pil_kwargs={"quality": jpeg_quality})


def kernel_tiles(weight: torch.Tensor, title: str = "", columns: int = 8,
                 panel: float = 0.9) -> Figure:
    """Show conv kernels ``(C_out, C_in, k, k)``: RGB tiles for a first layer (C_in = 3),
    else every kernel as a signed map. One symmetric scale for all tiles, with its colour bar."""
    weight = weight.detach().float().cpu()
    limit = float(weight.abs().max()) or 1.0
    rgb = weight.shape[1] == 3
    kernels = weight if rgb else weight.reshape(-1, 1, *weight.shape[-2:])
    fig, axes = _grid(len(kernels), min(columns, len(kernels)), panel)
    shown = None
    for i, (ax, kernel) in enumerate(zip(axes.flat, kernels)):
        if rgb:
            ax.imshow((kernel.permute(1, 2, 0) / (2 * limit) + 0.5).clamp(0, 1).numpy(),
                      interpolation="nearest")
        else:
            shown = ax.imshow(kernel[0].numpy(), cmap=SIGNED_CMAP, vmin=-limit, vmax=limit,
                              interpolation="nearest")
        ax.set_title(str(i), fontsize=9)
    return _finish_grid(fig, axes, title, shown, "weight")


def animation(frames: Sequence[np.ndarray], *, titles: Sequence[str] | None = None,
              seconds_per_frame: float = 0.15, scale: int = 1):
    """An animation a notebook stores as an embedded ``image/gif`` output: nothing is loaded from
    the network and it plays on GitHub, nbviewer and in JupyterLab. Make it a cell's last value
    (or ``display`` it)."""
    from IPython.display import Image

    return Image(data=gif_bytes(frames, titles=titles, seconds_per_frame=seconds_per_frame,
                                scale=scale), format="gif")
