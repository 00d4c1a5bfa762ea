"""load_image: every colour mode becomes RGB, bad input gets an error that names the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helpers import ImageLoadError, load_image, sample_names


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("name", sample_names())
def test_samples_load_as_rgb(name):
    image = load_image(name)
    assert image.mode == "RGB" and min(image.size) >= 300


def test_grayscale_becomes_rgb(tmp_path):
    path = save(Image.new("L", (20, 10), 77), tmp_path / "gray.png")
    array = np.asarray(load_image(path))
    assert array.shape == (10, 20, 3) and (array == 77).all()


def test_rgba_and_la_composite_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))  # fully transparent blue
    array = np.asarray(load_image(save(rgba, tmp_path / "a.png")))
    assert tuple(array[0, 0]) == (255, 255, 255) and tuple(array[1, 1]) == (255, 0, 0)
    la = Image.new("LA", (2, 2), (0, 0))
    assert (np.asarray(load_image(save(la, tmp_path / "la.png"))) == 255).all()


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (3, 3), 1)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.info["transparency"] = 1
    path = tmp_path / "p.png"
    image.save(path, transparency=1)
    assert (np.asarray(load_image(path)) == 255).all()


def test_cmyk_jpeg(tmp_path):
    path = save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    red = np.asarray(load_image(path))[4, 4]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    array16 = np.full((6, 6), 65535 // 2, dtype=np.uint16)
    path = save(Image.fromarray(array16), tmp_path / "deep.png")
    assert abs(int(np.asarray(load_image(path))[0, 0, 0]) - 128) <= 1
    assert abs(int(np.asarray(load_image(array16))[0, 0, 0]) - 127) <= 1


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "white")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_numpy_arrays(tmp_path):
    assert load_image(np.zeros((5, 6), np.uint8)).size == (6, 5)
    assert load_image(np.ones((5, 6, 1), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((5, 6, 4), np.uint8)).mode == "RGB"
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        load_image(np.full((5, 5, 3), 3.0))
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(np.full((5, 5), np.nan))


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file.*nothere.jpg"):
        load_image(tmp_path / "nothere.jpg")


def test_folder_empty_file_and_text_file(tmp_path):
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.png is empty"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("these are not pixels")
    with pytest.raises(ImageLoadError, match="notes.jpg is not an image"):
        load_image(text)


def test_truncated_file_names_it(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="cut.png"):
        load_image(path)


def test_huge_image_refused_before_decoding(tmp_path):
    path = save(Image.new("1", (12_000, 12_000)), tmp_path / "bomb.png")  # 144 MP, 20 kB
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ImageLoadError, match="bomb.png is 12000x12000.*megapixels"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="megapixels"):
        load_image(Image.new("L", (100, 100)), max_pixels=5_000)


def test_unknown_sample_and_wrong_type():
    with pytest.raises(ImageLoadError, match="cat"):
        load_image(3.5)


def test_url_from_local_server_and_unreachable_url(tmp_path, serve_dir):
    save(Image.new("RGB", (7, 9), "red"), tmp_path / "red.png")
    base = serve_dir(tmp_path)
    assert load_image(base + "red.png").size == (7, 9)
    with pytest.raises(ImageLoadError, match="could not download.*missing.png"):
        load_image(base + "missing.png")
