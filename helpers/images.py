"""Load images for the lessons: from a sample name, a path, a URL, a numpy array or a PIL image.

Every loader returns an RGB ``PIL.Image.Image`` (8 bits per channel, EXIF orientation applied),
or raises :class:`ImageLoadError` with a message that names the source and says what to do.
"""

from __future__ import annotations

import io
import urllib.request
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageLoadError", "load_image", "collage", "sample_names", "sample_path",
    "DATA_DIR", "MAX_PIXELS",
]

DATA_DIR = Path(__file__).resolve().parent / "data" / "images"

# Sample name -> file in helpers/data/images (sources and licences: helpers/data/SOURCES.md).
SAMPLES = {
    "cat": "chelsea.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "astronaut": "astronaut.png",
    "rocket": "rocket.jpg",
    "grace_hopper": "grace_hopper.jpg",
}

# 40 megapixels: larger than any phone photo, small enough that decoding cannot eat a Binder
# session's 2 GB (a decompression bomb declares a huge size in a tiny file).
MAX_PIXELS = 40_000_000

ImageSource = Union[str, Path, np.ndarray, Image.Image]


class ImageLoadError(ValueError):
    """An image could not be loaded; the message names the source and the reason."""


def sample_names() -> list[str]:
    """Names accepted by ``load_image`` as samples, e.g. ``"cat"``, ``"coffee"``."""
    return sorted(SAMPLES)


def sample_path(name: str) -> Path:
    """Path of a bundled sample image (see ``sample_names()``)."""
    try:
        return DATA_DIR / SAMPLES[name]
    except KeyError:
        raise ImageLoadError(
            f"unknown sample image {name!r}; samples are: {', '.join(sample_names())}"
        ) from None


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Load ``source`` as an RGB PIL image.

    ``source`` may be a sample name (``"cat"``), a file path, an ``http(s)://`` URL, a numpy
    array ``(H, W)``, ``(H, W, 1|3|4)`` (uint8, uint16 or float in [0, 1]) or a PIL image.
    Grayscale, palette, CMYK and 16-bit images become RGB; transparent pixels (RGBA, LA, palette
    with transparency) are composited on white; the EXIF orientation is applied. Images larger
    than ``max_pixels`` are refused before they are decoded.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(source, "the PIL image", max_pixels)
    if isinstance(source, np.ndarray):
        return _to_rgb(_array_to_pil(source), "the numpy array", max_pixels)
    if isinstance(source, (str, Path)):
        text = str(source)
        if text in SAMPLES:
            return _open_file(sample_path(text), max_pixels)
        if text.startswith(("http://", "https://")):
            return _open_url(text, max_pixels)
        return _open_file(Path(text).expanduser(), max_pixels)
    raise ImageLoadError(
        f"cannot load an image from a {type(source).__name__}; give a sample name "
        f"({', '.join(sample_names())}), a path, a URL, a numpy array or a PIL image"
    )


def collage(*sources: ImageSource, size: int = 256) -> Image.Image:
    """Put images side by side as vertical strips of one ``size`` x ``size`` RGB image.

    Each image is centre-cropped to the strip's aspect ratio, then resized (bicubic): no
    distortion. A cat|espresso collage asks "where is the cat?" with a known answer.
    """
    if not sources:
        raise ValueError("collage() needs at least one image")
    strip = size // len(sources)
    canvas = Image.new("RGB", (strip * len(sources), size), "white")
    for i, source in enumerate(sources):
        image = load_image(source)
        canvas.paste(ImageOps.fit(image, (strip, size), Image.BICUBIC), (i * strip, 0))
    return canvas


def _open_file(path: Path, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise ImageLoadError(
            f"no such file: {path} (working directory: {Path.cwd()}); "
            f"or use a sample name: {', '.join(sample_names())}"
        )
    if path.is_dir():
        raise ImageLoadError(f"{path} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path} is empty (0 bytes)")
    return _decode(path.read_bytes(), str(path), max_pixels)


def _open_url(url: str, max_pixels: int, timeout: float = 15.0) -> Image.Image:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(200_000_000)
    except Exception as error:  # noqa: BLE001 - any network failure becomes one clear message
        raise ImageLoadError(
            f"could not download {url}: {error}. Offline? Save the image and give its path, "
            f"or use a sample name: {', '.join(sample_names())}"
        ) from error
    if not data:
        raise ImageLoadError(f"{url} returned no data")
    return _decode(data, url, max_pixels)


def _decode(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image, name, max_pixels)
            image.load()
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        if isinstance(error, Image.DecompressionBombError):
            raise ImageLoadError(f"{name}: too many pixels to decode safely ({error})") from error
        raise ImageLoadError(f"{name} is not an image file Pillow can read") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{name} is damaged or truncated: {error}") from error
    return _to_rgb(image, name, max_pixels)


def _check_size(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{name} is {width}x{height} = {width * height / 1e6:.0f} megapixels, over the "
            f"limit of {max_pixels / 1e6:.0f} MP; resize it first or pass max_pixels=..."
        )
    if width == 0 or height == 0:
        raise ImageLoadError(f"{name} has no pixels ({width}x{height})")


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(
            f"the numpy array has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
    if array.size == 0:
        raise ImageLoadError(f"the numpy array is empty (shape {array.shape})")
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.uint16:
        data = (array // 257).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError("the numpy array contains NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise ImageLoadError(
                f"a float array must hold values in [0, 1]; this one spans "
                f"[{array.min():.3g}, {array.max():.3g}]"
            )
        data = np.round(array * 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    else:
        raise ImageLoadError(f"unsupported array dtype {array.dtype}; use uint8, uint16 or float")
    return Image.fromarray(np.ascontiguousarray(data))


def _to_rgb(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    _check_size(image, name, max_pixels)
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        if mode == "F":
            top = max(float(values.max()), 1e-12)
        image = Image.fromarray(np.clip(values / top * 255 + 0.5, 0, 255).astype(np.uint8))
        mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("PA", "La"):
        image = image.convert("RGBA" if mode == "PA" else "LA")
    if image.mode in ("RGBA", "LA", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")
