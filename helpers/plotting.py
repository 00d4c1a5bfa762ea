"""Figures for the lessons: image grids, prediction bars, channel grids, heatmap overlays.

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

from .maps import as_color, as_grey, split_signs  # the lessons find them here too

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

HEATMAP_CMAP = "turbo"  # jet's order (blue = low, red = high, as in the CAM papers) without
# jet's false bands: lightness rises smoothly (Mikhailov 2019)
SIGNED_CMAP = "RdBu_r"  # red positive, blue negative, white zero
ACTIVATION_CMAP = "viridis"


def to_numpy_image(image) -> np.ndarray:
    """PIL image, ``uint8 (H, W, 3)``, float ``(H, W)`` or a tensor ``(3, H, W)``/``(H, W)``
    -> a numpy array matplotlib can show."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu()
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image
        return image.numpy()
    return np.asarray(image)


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
                    va="center", fontsize=8)
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
        ax.set_title(f"ch {index}", fontsize=8)
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


def use_inline_format(*, jpeg_quality: int = 88) -> None:
    """Show inline figures as JPEG of ``jpeg_quality`` (photos and heatmaps as PNG would make each
    notebook several MB); outside IPython, nothing to configure."""
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    set_matplotlib_formats("jpeg", pil_kwargs={"quality": jpeg_quality})


def colorize(values, cmap: str = ACTIVATION_CMAP, vmin: float | None = None,
             vmax: float | None = None) -> np.ndarray:
    """A 2-D array ``(H, W)`` -> ``uint8 (H, W, 3)`` through a colour map (min-max by default)."""
    values = np.asarray(values, dtype=np.float32)
    lo = float(values.min()) if vmin is None else vmin
    hi = float(values.max()) if vmax is None else vmax
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    rgba = matplotlib.colormaps[cmap](np.clip(scaled, 0, 1), bytes=True)
    return rgba[..., :3]


def array_to_png(rgb: np.ndarray, size: int | None = None) -> bytes:
    """``uint8 (H, W, 3)`` -> PNG bytes, upscaled with nearest neighbours so that the longer side
    is ``size`` pixels (each activation stays a visible square)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb))
    if size:
        factor = size / max(image.size)
        image = image.resize((max(1, round(image.width * factor)),
                              max(1, round(image.height * factor))), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def kernel_mosaic(weight: torch.Tensor, columns: int = 8, gap: int = 1) -> np.ndarray:
    """Kernels ``(C_out, C_in, k, k)`` -> one ``uint8`` mosaic image.

    Three input channels: each output channel is an RGB tile. Otherwise: the kernels of output
    channel 0.. per input channel, in a grid. Scaling is symmetric around zero, shared by all
    tiles, so grey (or white) is 0 and equal colours mean equal weights.
    """
    weight = weight.detach().float().cpu()
    limit = float(weight.abs().max()) or 1.0
    if weight.shape[1] == 3:
        tiles = ((weight / (2 * limit) + 0.5).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1)
        tiles = tiles.numpy()
    else:
        tiles = np.stack([colorize(k, SIGNED_CMAP, -limit, limit) for k in weight.reshape(
            -1, *weight.shape[-2:]).numpy()])
    n, k_h, k_w = tiles.shape[:3]
    rows = math.ceil(n / columns)
    mosaic = np.full((rows * (k_h + gap) - gap, columns * (k_w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        top, left = (i // columns) * (k_h + gap), (i % columns) * (k_w + gap)
        mosaic[top: top + k_h, left: left + k_w] = tile
    return mosaic


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
        ax.set_title(str(i), fontsize=7)
    return _finish_grid(fig, axes, title, shown, "weight")


def blend(image: np.ndarray, heatmap, alpha: float = 0.5, cmap: str = HEATMAP_CMAP) -> np.ndarray:
    """``uint8 (H, W, 3)`` photo + heatmap ``(H, W)`` in [0, 1] -> ``uint8 (H, W, 3)``, the
    same picture ``overlay`` draws, without matplotlib (fast enough for a slider)."""
    heat = colorize(to_numpy_image(heatmap), cmap, 0.0, 1.0).astype(np.float32)
    mixed = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * heat
    return mixed.round().clip(0, 255).astype(np.uint8)


def gif_bytes(frames: Sequence[np.ndarray], *, titles: Sequence[str] | None = None,
              seconds_per_frame: float = 0.15, scale: int = 1) -> bytes:
    """Frames ``uint8 (H, W, 3)`` -> the bytes of an animated GIF that loops (PIL only).

    ``titles``: one caption per frame, written on a white strip above it; ``scale``: enlarge
    each frame by that integer factor (nearest neighbour)."""
    from PIL import Image, ImageDraw

    if not len(frames):
        raise ValueError("an animation needs at least one frame")
    if titles is not None and len(titles) != len(frames):
        raise ValueError(f"got {len(titles)} titles for {len(frames)} frames")
    images = []
    for i, frame in enumerate(frames):
        image = Image.fromarray(np.ascontiguousarray(frame))
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        if titles is not None:
            captioned = Image.new("RGB", (image.width, image.height + 16), "white")
            captioned.paste(image, (0, 16))
            ImageDraw.Draw(captioned).text((4, 2), titles[i], fill="black")
            image = captioned
        images.append(image)
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=int(seconds_per_frame * 1000))
    return buffer.getvalue()


def save_gif(frames: Sequence[np.ndarray], path, *, titles: Sequence[str] | None = None,
             seconds_per_frame: float = 0.15, scale: int = 1) -> None:
    """Write ``gif_bytes(frames, ...)`` to ``path``."""
    from pathlib import Path

    Path(path).write_bytes(gif_bytes(frames, titles=titles, seconds_per_frame=seconds_per_frame,
                                     scale=scale))


def animation(frames: Sequence[np.ndarray], *, titles: Sequence[str] | None = None,
              seconds_per_frame: float = 0.15, scale: int = 1):
    """An animation a notebook stores as an embedded ``image/gif`` output: nothing is loaded from
    the network and it plays on GitHub, nbviewer and in JupyterLab. Make it a cell's last value
    (or ``display`` it)."""
    from IPython.display import Image

    return Image(data=gif_bytes(frames, titles=titles, seconds_per_frame=seconds_per_frame,
                                scale=scale), format="gif")
