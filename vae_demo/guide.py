"""Edits that keep the sex call: a second classifier steers them, so the judge never does.

Glasses drawn by the decoder change the sex a classifier reads in a face: about 8% of the
male/female calls flip where 90% of the faces are called "glasses", whatever the direction
(EXPERIMENTS.md, "What the flips are"). A held edit adds its directions, then moves the face
along the Male direction until a *guide* reads the same Male logit in the decoded picture as
before (`latents.hold`). The guide, `assets/guide`, is an attribute classifier trained like
the judge, `assets/classifier`, with another seed; the judge, which the evaluation reports,
never steers an edit, so its calls stay a measurement.

    >>> from vae_demo.classifier import load_local
    >>> from vae_demo.hub import load_model
    >>> model, guide = load_model("assets/model"), load_local(GUIDE_DIR, "no held edits")  # doctest: +SKIP
    >>> z = held_edit(model, guide, codes, {"Eyeglasses": 1.75})  # doctest: +SKIP

Train another guide (10 minutes on one core): `python -m vae_demo.classifier --seed 1 --out assets/guide`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from vae_demo.classifier import AttributeClassifier
from vae_demo.latents import edit, hold
from vae_demo.model import HubVAE

GUIDE_DIR = Path(__file__).resolve().parent.parent / "assets" / "guide"
KEPT = "Male"  # the call a held edit keeps
# The glasses strength at which the held edit first puts glasses on 90% of the 400 val faces
# without them (92.5%, 4.5% male flips by the judge): `python benchmarks/edit_strengths.py --split val`.
HELD_GLASSES_STRENGTH = 1.75


def reader(model: HubVAE, guide: AttributeClassifier, attribute: str = KEPT) -> Callable[[torch.Tensor], torch.Tensor]:
    """Codes (N, D) -> the guide's logit of `attribute` (N,) in the pictures decoded from them."""
    column = guide.attributes.index(attribute)

    @torch.no_grad()
    def read(z: torch.Tensor) -> torch.Tensor:
        model.eval()
        pictures = torch.cat([model.decode(z[i : i + 128].to(model.device)).float() for i in range(0, len(z), 128)])
        return guide.logits(pictures)[:, column]

    return read


def held_edit(
    model: HubVAE, guide: AttributeClassifier, z: torch.Tensor, strengths: dict[str, float], kept: str = KEPT
) -> torch.Tensor:
    """Codes (N, D) moved along the named directions, with the guide's reading of `kept` held.

    The held reading is that of the codes moved along `kept`'s own direction only, so a
    slider for `kept` itself still works: the other edits keep whatever it asks for.
    """
    directions = model.latent_stats.directions
    start = edit(z, directions[kept], strengths.get(kept, 0.0))
    edited = start
    for name, strength in strengths.items():
        if name != kept and strength:
            edited = edit(edited, directions[name], strength)
    if edited is start:
        return start
    read = reader(model, guide, kept)
    return hold(read, edited, read(start), directions[kept])
