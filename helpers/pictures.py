"""Arrays to pictures, without figures: colour maps, PNG and GIF bytes, kernel mosaics and
heatmap blends, fast enough for a slider (a few ms at 640 px; ``plotting`` draws figures).

Conventions across the series: heatmaps in [0, 1] use ``HEATMAP_CMAP``; signed maps (gradients,
kernels) use ``SIGNED_CMAP`` scaled symmetrically around zero; activations ``ACTIVATION_CMAP``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = [
    "HEATMAP_CMAP",
    "SIGNED_CMAP",
    "ACTIVATION_CMAP",
    "to_numpy_image",
    "colorize",
    "array_to_png",
    "kernel_mosaic",
    "blend",
    "gif_bytes",
    "save_gif",
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


def blend(image: np.ndarray, heatmap, alpha: float = 0.5, cmap: str = HEATMAP_CMAP) -> np.ndarray:
    """``uint8 (H, W, 3)`` photo + heatmap ``(H, W)`` in [0, 1] -> ``uint8 (H, W, 3)``, the
    same picture ``overlay`` draws, without matplotlib (fast enough for a slider)."""
    heat = colorize(to_numpy_image(heatmap), cmap, 0.0, 1.0).astype(np.float32)
    mixed = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * heat
    return mixed.round().clip(0, 255).astype(np.uint8)


CAPTION = 26  # px: the strip above each animation frame, for a caption readable when projected


def _caption_font():
    """A 16 px font for captions (Pillow's bundled one; its bitmap fallback is about 11 px)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=16)
    except TypeError:  # Pillow < 10.1: the bitmap font
        return ImageFont.load_default()


def gif_bytes(frames: Sequence[np.ndarray], *, titles: Sequence[str] | None = None,
              seconds_per_frame: float = 0.15, scale: int = 1) -> bytes:
    """Frames ``uint8 (H, W, 3)`` -> the bytes of an animated GIF that loops (PIL only).

    ``titles``: one caption per frame, written on a white strip above it; ``scale``: enlarge
    each frame by that integer factor (nearest neighbour)."""
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
            captioned = Image.new("RGB", (image.width, image.height + CAPTION), "white")
            captioned.paste(image, (0, CAPTION))
            ImageDraw.Draw(captioned).text((4, 3), titles[i], fill="black", font=_caption_font())
            image = captioned
        images.append(image)
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=int(seconds_per_frame * 1000))
    return buffer.getvalue()


def save_gif(frames: Sequence[np.ndarray], path, *, titles: Sequence[str] | None = None,
             seconds_per_frame: float = 0.15, scale: int = 1) -> None:
    """Write ``gif_bytes(frames, ...)`` to ``path``."""
    Path(path).write_bytes(gif_bytes(frames, titles=titles, seconds_per_frame=seconds_per_frame,
                                     scale=scale))
