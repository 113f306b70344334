"""Image handling: every PIL mode, EXIF rotation, bad files, and the face crop."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vae_demo.images import (
    EYE_Y,
    ImageError,
    eye_band,
    face_crop,
    lfw_crop,
    open_image,
    pil_to_tensor,
    tensor_to_pil,
    to_rgb,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


def _gradient(mode: str, size=(40, 30)) -> Image.Image:
    array = np.tile(np.linspace(0, 255, size[0], dtype=np.uint8), (size[1], 1))
    return Image.fromarray(np.stack([array] * 3, -1)).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1", "I", "F"])
def test_every_mode_becomes_an_rgb_tensor_in_unit_range(mode):
    image = _gradient("RGB").convert("RGBA").convert(mode) if mode == "PA" else _gradient(mode)
    x = pil_to_tensor(image, size=16)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.std() > 0.05  # the gradient survived the conversion


def test_sixteen_bit_grey_is_scaled_not_clipped():
    array = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    rgb = to_rgb(Image.fromarray(array))  # uint16 -> mode "I;16"
    values = np.asarray(rgb)[0, :, 0]
    assert values[0] == 0 and values[-1] == 255 and 100 < values[32] < 160


def test_transparency_is_composited_onto_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert np.asarray(to_rgb(image)).min() == 255


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 40, 10))  # red on top as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    upright = np.asarray(to_rgb(open_image(buffer.getvalue())))
    assert upright.shape[:2] == (40, 20)  # now portrait
    assert upright[:, -3:, 0].mean() > 200 and upright[:, :3, 2].mean() > 200  # red at the right


def test_round_trip_between_pil_and_tensor():
    image = _gradient("RGB", (16, 16))
    assert np.array_equal(np.asarray(tensor_to_pil(pil_to_tensor(image, 16)[0])), np.asarray(image))
    assert len(tensor_to_pil(torch.rand(3, 3, 8, 8))) == 3


def test_text_file_is_refused_with_a_message():
    with pytest.raises(ImageError, match="could not be read as an image"):
        open_image(b"this is not a picture\n" * 10)


def test_truncated_jpeg_is_refused():
    buffer = io.BytesIO()
    _gradient("RGB", (200, 200)).save(buffer, "JPEG")
    with pytest.raises(ImageError):
        open_image(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def test_gigapixel_png_is_refused_before_decoding():
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 1_000_000  # small file, huge image
    with pytest.raises(ImageError, match="pixels"):
        open_image(buffer.getvalue())


def test_face_crop_finds_a_face_and_matches_the_training_framing():
    photo = open_image(str(EXAMPLES / "Paul_Krueger_0001.jpg"))
    canvas = Image.new("RGB", (600, 450), (90, 120, 150))
    canvas.paste(photo, (230, 100))  # the same face, elsewhere in a bigger picture
    crop = face_crop(canvas, 128)
    assert crop.found_face and crop.image.size == (128, 128)
    reference = np.asarray(lfw_crop(photo).resize((128, 128)), dtype=float)
    assert np.abs(np.asarray(crop.image, dtype=float) - reference).mean() / 255 < 0.06


def test_face_crop_without_a_face_falls_back_to_the_centre():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8))
    crop = face_crop(noise, 64)
    assert crop.method == "centre" and not crop.found_face and crop.image.size == (64, 64)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_eye_band_is_a_quarter_of_the_rows_around_the_eyes(size):
    band = eye_band(size)
    assert band.start < EYE_Y * size < band.stop
    assert band.stop - band.start == pytest.approx(0.24 * size, abs=1)
