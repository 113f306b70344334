"""The bundled model keeps the product's promises on the bundled example photos.

Judged by the bundled attribute classifier, as in the README's results, but on the 20
examples the app offers, so it runs in seconds. The thresholds are the measured values
less a little room; a retrained model that loses the glasses fails here.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

from vae_demo.classifier import AttributeClassifier
from vae_demo.evaluate import end_to_end_change
from vae_demo.hub import load_model
from vae_demo.images import pil_to_tensor
from vae_demo.studio import DEFAULT_EDIT_STRENGTH, Studio

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@pytest.fixture(scope="module")
def studio() -> Studio:
    return Studio(load_model(ASSETS / "model"))


@pytest.fixture(scope="module")
def classifier() -> AttributeClassifier:
    with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub's loading message
        return AttributeClassifier.from_pretrained(ASSETS / "classifier")


def probability(classifier: AttributeClassifier, images: list, attribute: str) -> torch.Tensor:
    """The classifier's P(attribute) for each PIL image, (N,)."""
    probabilities = classifier.predict(torch.stack([pil_to_tensor(im, classifier.image_size)[0] for im in images]))
    return probabilities[:, classifier.attributes.index(attribute)]


def test_reconstructions_keep_the_glasses(studio, classifier):
    # Measured: mean P(glasses) 0.58 on the wearers' reconstructions, 0.07 on the others'; the
    # grid with 8 numbers per cell gave the wearers 0.39 (190 minutes) and 0.35 (90 minutes),
    # the first model (one global code) 0.19.
    wearers = [e.name for e in studio.examples if e.glasses and e.frame != "sunglasses"]
    others = [e.name for e in studio.examples if not e.glasses]
    kept = probability(classifier, [studio.reconstruct(name)[1] for name in wearers], "Eyeglasses").mean()
    added = probability(classifier, [studio.reconstruct(name)[1] for name in others], "Eyeglasses").mean()
    assert kept > 0.3 and kept > 5 * added, f"mean P(glasses): wearers {kept:.2f}, others {added:.2f}"


def test_the_glasses_edit_adds_glasses_without_changing_sex(studio, classifier):
    faces = [studio.face(e.name).z for e in studio.examples if not e.glasses]
    plain = studio.decode(torch.stack(faces))
    edited = [studio.attribute_edit(z, {"Eyeglasses": DEFAULT_EDIT_STRENGTH}) for z in faces]
    before, after = probability(classifier, plain, "Eyeglasses"), probability(classifier, edited, "Eyeglasses")
    # Measured: P(glasses) up by 0.62 on average at strength 1 (5 of the 8 past 0.5; 0.46 and
    # 4 in the unit before the decoded one), and 7 of the 8 called glasses at the showcase's 1.25.
    assert (after > before).all() and (after - before).mean() > 0.4
    strong = [studio.attribute_edit(z, {"Eyeglasses": studio.showcase_settings()[0]}) for z in faces]
    assert (probability(classifier, strong, "Eyeglasses") > 0.5).sum() >= len(faces) - 2
    male = [probability(classifier, images, "Male") > 0.5 for images in (plain, edited)]
    assert (male[0] != male[1]).sum() <= 1


def test_the_showcase_lightens_the_frames(studio, classifier):
    z = studio.face(studio.example_names(frame="dark")[0]).z
    strip = studio.strip(*studio.frame_colour_endpoints(z), 8)
    lightness = probability(classifier, strip, "frame_light")
    assert lightness[0] < 0.5 < lightness[-1], f"P(light frames) along the strip: {lightness.tolist()}"
    assert (lightness.diff() > 0).all(), "the frames should lighten at every step"
    assert (probability(classifier, strip, "Eyeglasses") > 0.5).sum() >= len(strip) // 2, "glasses should show"


def test_the_showcase_leaves_the_rest_of_the_face_alone(studio):
    # Measured on the 6 dark-framed examples: mean pixel change from start to end 0.17-0.20
    # across the eye band and 0.028-0.032 elsewhere (ratio about 0.17); the whole-face direction
    # of before changed the rest almost as much as the band (0.12-0.14 against 0.14-0.17).
    ends = [studio.frame_colour_endpoints(studio.face(name).z) for name in studio.example_names(frame="dark")]
    change = end_to_end_change(studio.model, ends)
    assert change["change_elsewhere"] < 0.3 * change["change_in_eye_band"], change
