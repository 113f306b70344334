"""Image handling in one place: any PIL image to the model's tensor and back, and the face crop.

The training framing: a square around the face with the eyes at `EYE_Y` of the height and
`EYE_X` of the width (measured on LFW, see below). LFW's deep-funneled photos are already aligned, so their crop is the
fixed box `LFW_BOX`; other photos are aligned by detected eyes (OpenCV's Haar cascades, which
ship inside the opencv package, so nothing is downloaded), falling back to a centre crop.

Usage:
    >>> from PIL import Image
    >>> x = pil_to_tensor(Image.new("RGBA", (40, 30)), size=16)
    >>> x.shape, float(x.max()) <= 1.0
    (torch.Size([1, 3, 16, 16]), True)
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageOps

LFW_BOX = (45, 40, 205, 200)  # left, upper, right, lower in the 250 x 250 photos
# Where the eyes sit in a training crop, as fractions of its side: the median of the eye
# centres OpenCV finds in LFW training photos, (103.5, 113.5) and (146, 112.5), in LFW_BOX.
EYE_X = (0.366, 0.631)
EYE_Y = 0.455
# The rows that hold the eyes and any glasses frames, brows to cheekbones, as fractions of the side.
EYE_BAND = (EYE_Y - 0.12, EYE_Y + 0.12)

# When only the face box is found: the crop's centre and side relative to OpenCV's face box
# (x, y, w, h), medians over LFW training photos.
FACE_BOX_CENTRE = (0.5, 0.46)
FACE_BOX_SIDE = 1.39

# Refuse images whose decoding alone would take gigabytes (decompression bombs).
MAX_PIXELS = 40_000_000
BACKGROUND = (255, 255, 255)


def eye_band(size: int) -> slice:
    """The rows of a size x size crop inside EYE_BAND, for metrics of the region glasses sit in."""
    return slice(round(EYE_BAND[0] * size), round(EYE_BAND[1] * size))


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, for the user."""


def open_image(source: str | bytes | io.BytesIO) -> Image.Image:
    """Open and fully decode an image file, with a clear error for anything that is not one."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"the image is {image.width} x {image.height} pixels; the limit is {MAX_PIXELS:,}")
            image.load()
            return image.copy()
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise unreadable(error) from error


def unreadable(error: Exception) -> ImageError:
    """The user-facing ImageError for an exception raised while decoding a file."""
    if isinstance(error, Image.DecompressionBombError):
        reason = "it has far too many pixels (a decompression bomb?)"
    elif isinstance(error, Image.UnidentifiedImageError):
        reason = "it is not in an image format we know"
    elif "truncated" in str(error):
        reason = "it is truncated"
    else:
        reason = f"{type(error).__name__}: {str(error)[:120]}"
    return ImageError(f"this file could not be read as an image: {reason}; try a JPEG or PNG photo")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as upright 8-bit RGB.

    Applies the EXIF orientation, composites transparency onto white, scales 16- and 32-bit
    grey to 8 bits, and converts palette, CMYK, LAB and grey to RGB.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low or 1.0) * 255.0
        image = Image.fromarray(array.round().astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def pil_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """A square-or-not PIL image to a (1, 3, size, size) float tensor in [0, 1] (centre crop)."""
    image = center_square(to_rgb(image)).resize((size, size), Image.Resampling.LANCZOS)
    return uint8_to_float(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None])


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


def tensor_to_pil(x: torch.Tensor) -> Image.Image | list[Image.Image]:
    """(3, H, W) -> one PIL image; (B, 3, H, W) -> a list of them. Values are clamped to [0, 1]."""
    if x.dim() == 4:
        return [tensor_to_pil(one) for one in x]
    array = (x.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def center_square(image: Image.Image) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def lfw_crop(image: Image.Image) -> Image.Image:
    """The training framing of an LFW deep-funneled photo (scaled if it is not 250 px)."""
    scale = image.width / 250.0
    return image.crop(tuple(round(v * scale) for v in LFW_BOX))


@dataclass
class FaceCrop:
    """A crop in the training framing and how it was found ("eyes", "face" or "centre")."""

    image: Image.Image
    method: str

    @property
    def found_face(self) -> bool:
        return self.method != "centre"


# OpenCV's cascade classifiers are not safe to call from two threads at once (a web app
# serves several requests in parallel), so detection holds this lock.
_DETECTION_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _cascades():
    import cv2

    face = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    eyes = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye_tree_eyeglasses.xml")
    return face, eyes


def face_crop(image: Image.Image, size: int) -> FaceCrop:
    """Find the largest face and crop it to the training framing, aligned by the eyes if found.

    Args:
        image: Any PIL image (see `to_rgb`).
        size: Output side in pixels.

    Returns:
        A FaceCrop; its method is "eyes" (rotated and scaled so the eyes land where they do in
        training crops), "face" (scaled from the face box), or "centre" (no face found).
    """
    rgb = to_rgb(image)
    # Detect on a copy at most 640 px wide: fast, and Haar cascades need no more.
    scale = min(1.0, 640.0 / max(rgb.size))
    small = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))))
    grey = np.asarray(small.convert("L"))
    min_side = max(24, min(grey.shape) // 8)
    with _DETECTION_LOCK:  # also guards the first, lazy import of cv2
        face_cascade, eye_cascade = _cascades()
        faces = face_cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        eyes = _find_eyes(grey, faces, eye_cascade) if len(faces) else None
    if len(faces) == 0:
        return FaceCrop(center_square(rgb).resize((size, size), Image.Resampling.LANCZOS), "centre")
    x, y, w, h = (v / scale for v in _largest(faces))
    cx, cy, side = x + FACE_BOX_CENTRE[0] * w, y + FACE_BOX_CENTRE[1] * h, FACE_BOX_SIDE * w
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    if eyes is not None:
        (lx, ly), (rx, ry) = ((ex / scale, ey / scale) for ex, ey in eyes)
        # Trust the eyes only where the face box expects them: the eye cascade also fires on
        # eyebrows and frame corners.
        expected_x, expected_y = box[0] + sum(EYE_X) / 2 * side, box[1] + EYE_Y * side
        expected_distance = (EYE_X[1] - EYE_X[0]) * side
        if (
            abs((lx + rx) / 2 - expected_x) < 0.08 * side
            and abs((ly + ry) / 2 - expected_y) < 0.08 * side
            and 0.8 < math.dist((lx, ly), (rx, ry)) / expected_distance < 1.25
        ):
            return FaceCrop(_align_by_eyes(rgb, (lx, ly), (rx, ry), size), "eyes")
    return FaceCrop(_crop_padded(rgb, box, size), "face")


def _largest(boxes) -> tuple:
    return tuple(max(boxes, key=lambda b: b[2] * b[3]))


def _find_eyes(grey: np.ndarray, faces, cascade) -> tuple | None:
    """Centres of two plausible eyes in the upper part of the largest face box, left first."""
    x, y, w, h = (int(v) for v in _largest(faces))
    upper = grey[y : y + h // 2 + h // 8, x : x + w]
    found = cascade.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=4, minSize=(max(8, w // 10),) * 2)
    if len(found) < 2:
        return None
    two = sorted(found, key=lambda e: e[2] * e[3], reverse=True)[:2]
    centres = sorted(((x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in two))
    (lx, ly), (rx, ry) = centres
    distance = rx - lx
    if not (0.2 * w < distance < 0.7 * w) or abs(ry - ly) > 0.5 * distance:
        return None
    return centres


def _align_by_eyes(image: Image.Image, left: tuple, right: tuple, size: int) -> Image.Image:
    """Similarity transform putting the eyes at (EYE_X, EYE_Y) of a size x size crop."""
    target_left = np.array([EYE_X[0] * size, EYE_Y * size])
    target_right = np.array([EYE_X[1] * size, EYE_Y * size])
    src = np.array(right) - np.array(left)
    dst = target_right - target_left
    scale = np.linalg.norm(src) / np.linalg.norm(dst)  # source pixels per output pixel
    angle = np.arctan2(src[1], src[0]) - np.arctan2(dst[1], dst[0])
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    a = np.array([[cos, -sin], [sin, cos]])
    t = np.array(left) - a @ target_left
    return _affine(image, (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1]), size)


def _crop_padded(image: Image.Image, box: tuple, size: int) -> Image.Image:
    """Crop box (which may reach past the edges, filled with white) and scale to size."""
    scale = (box[2] - box[0]) / size
    return _affine(image, (scale, 0, box[0], 0, scale, box[1]), size)


def _affine(image: Image.Image, coefficients: tuple, size: int) -> Image.Image:
    """A size x size output whose pixel (u, v) comes from source (a u + b v + c, d u + e v + f)."""
    return image.transform(
        (size, size), Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC, fillcolor=BACKGROUND
    )
