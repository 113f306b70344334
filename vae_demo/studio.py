"""Everything the app does with the model, as plain functions of images, seeds and sliders.

The Gradio app (app.py) only wires widgets to a `Studio`; tests and notebooks can call the
same methods directly:

    >>> from vae_demo.hub import load_model
    >>> studio = Studio(load_model("assets/model"))  # doctest: +SKIP
    >>> faces = studio.samples(seed=0, temperature=0.8, n=4)  # doctest: +SKIP
    >>> crop, recon, psnr_db, how = studio.reconstruct("Paul_Krueger_0001.jpg")  # doctest: +SKIP

Photos are cropped to the training framing once and their codes cached (keyed by the file's
bytes), so a slider step is one decode.
"""

from __future__ import annotations

import csv
import hashlib
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from vae_demo.evaluate import psnr
from vae_demo.guide import KEPT, Guide, held_edit, own_strengths
from vae_demo.images import FaceCrop, ImageError, face_crop, open_image, pil_to_tensor, tensor_to_pil
from vae_demo.latent_stats import LatentStats
from vae_demo.latents import arithmetic, edit, interpolate, lerp, slerp
from vae_demo.model import HubVAE

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
MAX_SAMPLES = 64
GIF_FRAMES = 32
# Slider ranges for attribute edits, in multiples of the directions' unit (below).
EDIT_RANGE = (-3.0, 3.0)  # glasses show on most faces from 1 to 1.5 (README, "Results")
# An edit of strength 1 draws the whole difference between the two groups' pictures (a
# little more than the gap between their mean codes: `decoded_unit` in latent_stats.py): the
# strength the evaluation measures edits at, and the sliders' unit.
DEFAULT_EDIT_STRENGTH = 1.0
# The showcase's direction mode: glasses added at this strength before recolouring, and the
# dark and light levels spread apart this much, for a model whose latent statistics hold no
# settings of their own (`python -m vae_demo.latent_stats --showcase`). Chosen on the val split with
# benchmarks/edit_strengths.py (README, "Results"), with the frame-colour direction kept to the
# cells over the eyes: at glasses 1.5 gaps between mean codes and spread 3 the classifier sees
# glasses on 99% of the path's frames, a dark start on 95% and a light end on 93%; at spread 2.5
# on 99%, 92% and 92%; at 4 on 98%, 98% and 96%, but the darkest frames smudge around the eyes.
# In decoded units (the glasses direction's is 1.23 gaps for the bundled model) that is 1.25.
SHOWCASE_GLASSES = 1.25
# The same edit for statistics computed before the decoded unit (a model published earlier),
# whose directions are the plain gap between the groups' mean codes.
SHOWCASE_GLASSES_IN_GAPS = 1.5
SHOWCASE_SPREAD = 3.0
DIRECTION_LABELS = {
    "Eyeglasses": "Glasses",
    "frame_light": "Frame colour (dark → light)",
    "Smiling": "Smile",
    "Male": "Male",
    "Young": "Young",
}


@dataclass
class Example:
    """A bundled example photo and what is known about it (assets/examples/examples.csv)."""

    name: str
    path: Path
    glasses: bool
    frame: str  # "dark", "light", "sunglasses" or ""
    male: bool
    smiling: bool

    @property
    def label(self) -> str:
        who = "man" if self.male else "woman"
        if not self.glasses:
            return f"{self.name.rsplit('_', 1)[0].replace('_', ' ')} ({who}, no glasses)"
        kind = "sunglasses" if self.frame == "sunglasses" else f"{self.frame} frames" if self.frame else "glasses"
        return f"{self.name.rsplit('_', 1)[0].replace('_', ' ')} ({who}, {kind})"


def load_examples(folder: Path = EXAMPLES_DIR) -> list[Example]:
    with open(folder / "examples.csv", newline="") as f:
        return [
            Example(
                name=row["file"],
                path=folder / row["file"],
                glasses=row["glasses"] == "1",
                frame=row["frame"],
                male=row["male"] == "1",
                smiling=row["smiling"] == "1",
            )
            for row in csv.DictReader(f)
        ]


@dataclass
class Face:
    """A photo cropped to the training framing, and its posterior mean code."""

    crop: FaceCrop
    z: torch.Tensor  # (D,)


class Studio:
    """The model plus its latent statistics, examples and caches."""

    def __init__(
        self,
        model: HubVAE,
        examples: list[Example] | None = None,
        cache_size: int = 256,
        guide: Guide | None = None,
    ):
        self.model = model.eval()
        self.guide = guide  # steers held edits (vae_demo/guide.py); None: plain edits only
        if model.latent_stats is None:  # a model without statistics still samples from the prior
            dim = model.latent_dim
            model.latent_stats = LatentStats(mean=torch.zeros(dim), cov=torch.eye(dim))
        self.stats: LatentStats = model.latent_stats
        self.size = model.image_size
        self.examples = load_examples() if examples is None else examples
        self._by_name = {e.name: e for e in self.examples}
        self._faces: OrderedDict[str, Face] = OrderedDict()
        self._cache_size = cache_size
        self._tmp = Path(tempfile.mkdtemp(prefix="vae_demo_"))

    # Faces -----------------------------------------------------------------------------------
    def example_names(self, glasses: bool | None = None, frame: str | None = None) -> list[str]:
        return [
            e.name
            for e in self.examples
            if (glasses is None or e.glasses == glasses) and (frame is None or e.frame == frame)
        ]

    def face(self, source: str | Path) -> Face:
        """Crop and encode an example (by name) or an image file (by path); cached by content.

        Raises:
            ImageError: the file is not a usable image (the message is meant for the user).
        """
        path = self._by_name[source].path if str(source) in self._by_name else Path(source)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ImageError(f"could not read the file {path.name}") from error
        key = hashlib.sha1(data).hexdigest()
        if key in self._faces:
            self._faces.move_to_end(key)
            return self._faces[key]
        image = open_image(data)
        if min(image.size) < 16:
            raise ImageError(f"the image is only {image.width} x {image.height} pixels; a face needs at least 16")
        crop = face_crop(image, self.size)
        with torch.inference_mode():
            z = self.model.encode(pil_to_tensor(crop.image, self.size).to(self.model.device))[0][0].cpu()
        face = self._faces[key] = Face(crop, z)
        if len(self._faces) > self._cache_size:
            self._faces.popitem(last=False)
        return face

    @torch.inference_mode()
    def decode(self, z: torch.Tensor) -> list[Image.Image]:
        """Codes (N, D) or (D,) -> PIL images."""
        images = self.model.decode(z.reshape(-1, z.shape[-1]).to(self.model.device)).cpu()
        return tensor_to_pil(images)

    # Tabs ------------------------------------------------------------------------------------
    def samples(self, seed: int, temperature: float = 1.0, n: int = 16, sampler: str = "fitted") -> list[Image.Image]:
        """n random faces: codes from the fitted Gaussian of training codes or the N(0, I) prior."""
        return self.decode(self.random_codes(seed, temperature, int(min(max(n, 1), MAX_SAMPLES)), sampler))

    def random_codes(self, seed: int, temperature: float = 0.8, n: int = 1, sampler: str = "fitted") -> torch.Tensor:
        """n codes (n, D) drawn with a seed, so the same seed gives the same faces."""
        return self.stats.sample(n, sampler, temperature, torch.Generator().manual_seed(int(seed or 0)))

    def reconstruct(self, source: str | Path) -> tuple[Image.Image, Image.Image, float, str]:
        """The training-framed crop, its reconstruction from the mean code, PSNR, and how it was cropped."""
        face = self.face(source)
        recon = self.decode(face.z)[0]
        value = psnr(pil_to_tensor(recon, self.size), pil_to_tensor(face.crop.image, self.size)).item()
        return face.crop.image, recon, value, face.crop.method

    def path(self, a: torch.Tensor, b: torch.Tensor, t: float, method: str = "slerp") -> Image.Image:
        """The face a fraction t of the way from code a to code b."""
        z = slerp(a, b, t) if method == "slerp" else lerp(a, b, t)
        return self.decode(z)[0]

    def strip(self, a: torch.Tensor, b: torch.Tensor, steps: int, method: str = "slerp") -> list[Image.Image]:
        return self.decode(interpolate(a, b, max(2, int(steps)), method))

    def gif(self, a: torch.Tensor, b: torch.Tensor, method: str = "slerp", frames: int = GIF_FRAMES) -> Path:
        """A looping GIF from a to b and back; returns its path in this studio's temp folder."""
        # Octree quantisation: 20 times faster than Pillow's default median cut, and as good here.
        images = [im.quantize(256, Image.Quantize.FASTOCTREE) for im in self.strip(a, b, frames, method)]
        images = images + images[-2:0:-1]  # there and back again, so the loop has no jump
        path = self._tmp / f"morph_{hashlib.sha1(torch.cat([a, b]).numpy().tobytes()).hexdigest()[:10]}.gif"
        images[0].save(path, save_all=True, append_images=images[1:], duration=70, loop=0)
        return path

    @property
    def edits_in_decoded_units(self) -> bool:
        """Whether strength 1 along each direction draws its groups' whole difference (`decoded_unit`),
        rather than the gap between their mean codes, as in statistics computed before that unit."""
        return all("decoded_unit" in self.stats.info.get(name, {}) for name in self.stats.directions)

    def showcase_settings(self, glasses: float | None = None, spread: float | None = None) -> tuple[float, float]:
        """The showcase's glasses strength and spread: those given, else the model's own if chosen
        for it, else the defaults (in the unit of the model's directions)."""
        own = self.stats.showcase or {}
        default = SHOWCASE_GLASSES if self.edits_in_decoded_units else SHOWCASE_GLASSES_IN_GAPS
        return (
            own.get("glasses", default) if glasses is None else glasses,
            own.get("spread", SHOWCASE_SPREAD) if spread is None else spread,
        )

    def frame_colour_endpoints(
        self, z: torch.Tensor, spread: float | None = None, glasses: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same face with dark and with light frames, moved along the frame-colour direction.

        First the glasses direction is added at strength `glasses`, so that the decoder draws
        frames at all (it draws them faintly for most wearers' own codes). Then the face keeps
        everything but its coordinate along the frame-colour direction, which is set to the
        mean level of dark-framed (t = 0) and of light-framed (t = 1) training faces, spread
        apart by `spread` around their midpoint. Either left None: `showcase_settings()`.
        """
        glasses, spread = self.showcase_settings(glasses, spread)
        if glasses and "Eyeglasses" in self.stats.directions:
            z = edit(z, self._direction("Eyeglasses"), glasses)
        direction = self._direction("frame_light")
        unit = direction / direction.norm()
        info = self.stats.info.get("frame_light", {})
        here = float(z @ unit)
        dark = info.get("negative_level", here - 0.5 * float(direction.norm()))
        light = info.get("positive_level", here + 0.5 * float(direction.norm()))
        middle, half = (dark + light) / 2, spread * (light - dark) / 2
        return z + (middle - half - here) * unit, z + (middle + half - here) * unit

    @property
    def can_hold(self) -> bool:
        """Whether edits can keep the sex call: a guide and a direction to hold it along."""
        return self.guide is not None and KEPT in self.stats.directions

    def attribute_edit(self, z: torch.Tensor, strengths: dict[str, float], keep_sex: bool = False) -> Image.Image:
        """The face with each named direction added at its strength; with `keep_sex`, a held
        edit: the guide reads the same sex in it as in the face moved along Male alone."""
        strengths = {name: float(strength) for name, strength in strengths.items() if strength}
        for name in strengths:
            self._direction(name)  # a clear message for a direction this model lacks
        if keep_sex and self.can_hold:
            return self.decode(held_edit(self.model, self.guide, z[None], strengths))[0]
        for name, strength in strengths.items():
            z = edit(z, self._direction(name), strength)
        return self.decode(z)[0]

    def own_strength(self, z: torch.Tensor, attribute: str = "Eyeglasses") -> float:
        """The least slider strength at which the guide sees `attribute` in this face's held edit."""
        self._direction(attribute)
        if not self.can_hold:
            raise ImageError("finding a face's own strength needs the guide classifier (assets/guide)")
        return float(own_strengths(self.model, self.guide, z[None], attribute)[0])

    def arithmetic(self, a: list, b: list, c: list) -> tuple[Image.Image, list[Image.Image]]:
        """mean(A) - mean(B) + mean(C) from groups of examples or files; also the three group means."""
        groups = [[self.face(s).z for s in group] for group in (a, b, c)]
        for name, group in zip("ABC", groups, strict=True):
            if not group:
                raise ImageError(f"group {name} is empty: pick at least one face")
        means = [torch.stack(g).mean(0) for g in groups]
        return self.decode(arithmetic(*groups))[0], self.decode(torch.stack(means))

    @property
    def directions(self) -> list[str]:
        return [name for name in DIRECTION_LABELS if name in self.stats.directions]

    def _direction(self, name: str) -> torch.Tensor:
        if name not in self.stats.directions:
            raise ImageError(f"this model has no '{name}' direction")
        return self.stats.directions[name]
